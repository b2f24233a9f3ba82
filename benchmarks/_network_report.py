"""The tables and the plot of `benchmarks.network`: one row per (scenario, mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from benchmarks._report import save_figure


def _n(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _video(row: dict[str, Any], prefix: str, details: bool) -> str:
    """`fps median/min, size, kbit/s` (+ loss, freezes, first frame) of one direction."""
    g = {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
    if not g.get("streams_expected"):
        return "no samples (the viewers' pages stalled)"
    if not g.get("streams"):
        return "nothing decoded"
    text = (
        f"{_n(g.get('fps_median'))}/{_n(g.get('fps_min'))} fps, {g.get('size', '-')}, "
        f"{_n(g.get('kbps'), 0)} kbit/s"
    )
    if details:
        text += (
            f", loss {_n(g.get('loss_percent'))} %, {_n(g.get('freezes'), 0)} freezes "
            f"({_n(g.get('freeze_s'))} s), first frame {_n(g.get('first_frame_s'))} s"
        )
    return text


def _sender(row: dict[str, Any], prefix: str) -> str:
    g = {k.removeprefix(prefix): v for k, v in row.items() if k.startswith(prefix)}
    if g.get("video_kbps") is None:
        return "-"
    text = f"{_n(g['video_kbps'], 0)} kbit/s"
    if g.get("target_kbps") is not None:
        text += f" (target {_n(g['target_kbps'], 0)})"
    keyframes = (g.get("plis_received") or 0) + (g.get("firs_received") or 0)
    text += f", {_n(keyframes, 0)} PLI/FIR, {_n(g.get('retransmitted_packets'), 0)} rtx"
    limits = [r for r in g.get("quality_limitation") or [] if r != "none"]
    if limits:
        text += f", limited: {'/'.join(limits)}"
    return text


def _audio(row: dict[str, Any]) -> str:
    return " / ".join(
        _n(row.get(k), 2)
        for k in (
            "host_concealed_percent",
            "host_hears_ns_concealed_percent",
            "ns_concealed_percent",
        )
    )


def _labels(names: list[str]) -> tuple[str, str]:
    host = names[:-1]
    return (host[0] if len(host) == 1 else f"{host[0]}-{host[-1]}"), names[-1]


def _cells(row: dict[str, Any], names: list[str]) -> list[str]:
    if not row.get("rounds"):
        return ["error: " + "; ".join(row.get("errors", []))[:120]] + [""] * 7
    rounds = f"{row['rounds']}" + ("" if row["complete_rounds"] == row["rounds"] else
                                   f" ({row['complete_rounds']} complete)")  # fmt: skip
    if row.get("stalled_pages"):
        rounds += f", {'/'.join(row['stalled_pages'])} stalled"
    return [
        _video(row, "host_", details=False),
        _video(row, "host_sees_ns_", details=True),
        _video(row, "ns_sees_host_", details=True),
        _sender(row, "ns_sent_"),
        _sender(row, "host_sent_"),
        _audio(row),
        f"{_n(row.get('server_cpu_s_per_s'), 3)} / {_n(row.get('load_avg_1m'), 1)}",
        rounds,
    ]


def _headers(names: list[str]) -> list[str]:
    h, d = _labels(names)
    return [
        f"{h} see each other",
        f"{h} see {d}",
        f"{d} sees {h}",
        f"{d} sends (video)",
        f"{h} send (median, PLI summed)",
        f"audio concealed %: {h} / {h} hear {d} / {d}",
        "server CPU s/s / load avg",
        "rounds",
    ]


def table(rows: list[dict[str, Any]], names: list[str]) -> Table:
    """The rich console table."""
    t = Table(title="Real networks: page D in a shaped namespace (medians of rounds)")
    for col in ("scenario", "mode", *_headers(names)):
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(row["scenario"], row["mode"], *_cells(row, names))
    return t


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], names: list[str]) -> str:
    """The README table: one line per (scenario, mode)."""
    m = meta["machine"]
    head = ["scenario", "mode", *_headers(names)]
    lines = [
        f"Measured {meta['date']} on {m['nproc']} x {m['cpu_model']} (Python {m['python']}), "
        f"load average at start {m['load_avg_at_start']}:",
        "",
        f"    {meta['command']}",
        "",
        "fps: median/min over the window of the per-second decode rate; kbit/s: received "
        "(median stream); loss: packets lost before repair (worst stream); freezes summed.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        lines.append("| " + " | ".join([row["scenario"], row["mode"], *_cells(row, names)]) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Median fps of each direction per scenario, one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.2), squeeze=False)
    series = (
        ("host_fps_median", "host pages see each other"),
        ("host_sees_ns_fps_median", "host pages see the namespace's"),
        ("ns_sees_host_fps_median", "the namespace's page sees the host's"),
    )
    for ax, mode in zip(axes[0], modes, strict=True):
        mine = [r for r in rows if r["mode"] == mode]
        xs = range(len(mine))
        for i, (key, label) in enumerate(series):
            ax.bar(
                [x + (i - 1) * 0.27 for x in xs],
                [r.get(key) or 0.0 for r in mine],
                width=0.27,
                label=label,
            )
        ax.set_xticks(list(xs), [r["scenario"] for r in mine])
        ax.set_title(f"{mode}: received fps (median)")
    save_figure(fig, list(axes[0]), "benchmarks.network", path)
