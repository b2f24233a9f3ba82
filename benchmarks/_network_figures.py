"""The figures of `benchmarks.network`: a case's pages grouped as the issue reads them
(A-C among themselves, A-C seeing D, D seeing A-C, the senders), and rounds into rows."""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any


def _streams(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> list[dict[str, Any]]:
    """The streams `viewers` decoded from `owners` (pages that stalled are left out)."""
    return [
        pages[v]["video"][o] for v in viewers for o in owners if o != v and o in pages[v]["video"]
    ]


def _expected(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> int:
    """How many streams `viewers` that did not stall should have decoded from `owners`."""
    return sum(1 for v in viewers if "stalled" not in pages[v] for o in owners if o != v)


def _video(streams: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """One direction's streams in a few numbers (a missing stream counts as 0 fps)."""
    if not expected:  # every viewer stalled: unknown, not zero
        return {"streams": 0, "streams_expected": 0}
    if not streams:
        return {"streams": 0, "streams_expected": expected, "fps_median": 0.0, "fps_min": 0.0}
    sizes = Counter(f"{s['width']}x{s['height']}" for s in streams)
    lost = [s["loss_percent"] for s in streams if s["loss_percent"] is not None]
    return {
        "streams": len(streams),
        "streams_expected": expected,
        "fps_median": statistics.median(
            [s["fps_median"] for s in streams] + [0.0] * (expected - len(streams))
        ),
        "fps_min": 0.0 if len(streams) < expected else min(s["fps_min"] for s in streams),
        "size": sizes.most_common(1)[0][0],
        "kbps": statistics.median(s["kbps"] for s in streams),
        "loss_percent": max(lost) if lost else None,
        "freezes": sum(s["freezes"] for s in streams),
        "freeze_s": round(sum(s["freeze_s"] for s in streams), 1),
        "nacks": sum(s["nacks_sent"] for s in streams),
        "plis": sum(s["plis_sent"] for s in streams),
    }


def _concealed(pages: dict[str, Any], viewers: list[str], owners: list[str]) -> float | None:
    """Concealed share of the audio samples `viewers` played from `owners`, pooled."""
    got = [
        pages[v]["audio"][o] for v in viewers for o in owners if o != v and o in pages[v]["audio"]
    ]
    total = sum(a["samples"] for a in got)
    concealed = sum(a["concealed_samples"] for a in got)
    return round(100 * concealed / total, 2) if total else None


def groups(pages: dict[str, Any], host: list[str], inside: str) -> dict[str, Any]:
    """The headline figures: A-C among themselves, A-C seeing D, D seeing A-C, senders."""

    def video(viewers: list[str], owners: list[str]) -> dict[str, Any]:
        return _video(_streams(pages, viewers, owners), _expected(pages, viewers, owners))

    def first_frame(viewers: list[str], owners: list[str]) -> float | None:
        """The slowest first frame of a direction; None while one stream never decoded."""
        got = [pages[v].get("first_frame_s", {}).get(o) for v in viewers for o in owners if o != v]
        return None if None in got or not got else max(got)

    sent_host = [pages[v]["sent"] for v in host if pages[v]["sent"]]

    def summed(key: str) -> int:
        return sum(s[key] for s in sent_host)

    return {
        "host": video(host, host),
        "host_sees_ns": {**video(host, [inside]), "first_frame_s": first_frame(host, [inside])},
        "ns_sees_host": {**video([inside], host), "first_frame_s": first_frame([inside], host)},
        "audio": {
            "host_concealed_percent": _concealed(pages, host, host),
            "host_hears_ns_concealed_percent": _concealed(pages, host, [inside]),
            "ns_concealed_percent": _concealed(pages, [inside], host),
        },
        "host_sent": {
            "video_kbps": (
                statistics.median(s["video_kbps"] for s in sent_host) if sent_host else None
            ),
            "plis_received": summed("plis_received"),
            "firs_received": summed("firs_received"),
            "retransmitted_packets": summed("retransmitted_packets"),
            "quality_limitation": sorted({r for s in sent_host for r in s["quality_limitation"]}),
        },
        "ns_sent": pages[inside]["sent"],
    }


# ---------------------------------------------------------------- rounds -> rows


def flat(case: dict[str, Any]) -> dict[str, Any]:
    """A case's headline figures as one flat dict (`host_fps_median`, `ns_sent_plis_received`)."""
    out: dict[str, Any] = {}
    for group, values in case["groups"].items():
        for key, value in values.items():
            out[key if group == "audio" else f"{group}_{key}"] = value
    for key in ("server_cpu_s_per_s", "other_cpu_s_per_s", "load_avg_1m", "setup_s"):
        out[key] = case[key]
    return out


def summarize(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, scenario): the median over its rounds of every figure (the most
    common value of a text, every value of a list)."""
    rows: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((c["mode"], c["scenario"]) for c in cases))
    for mode, scen in keys:
        mine = [c for c in cases if (c["mode"], c["scenario"]) == (mode, scen)]
        ok = [flat(c) for c in mine if "error" not in c]
        row: dict[str, Any] = {
            "mode": mode,
            "scenario": scen,
            "rounds": len(ok),
            "complete_rounds": sum(1 for c in mine if c.get("complete")),
            "errors": [c["error"] for c in mine if "error" in c],
            "stalled_pages": sorted({p for c in mine for p in c.get("stalled_pages", [])}),
        }
        for key in dict.fromkeys(k for f in ok for k in f):
            values = [f[key] for f in ok if f.get(key) is not None]
            if not values:
                row[key] = None
            elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                row[key] = round(statistics.median(values), 2)
            elif all(isinstance(v, list) for v in values):
                row[key] = sorted({x for v in values for x in v})
            else:
                row[key] = Counter(map(str, values)).most_common(1)[0][0]
        rows.append(row)
    return rows
