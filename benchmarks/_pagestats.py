"""What a call page sees, from `RTCPeerConnection.getStats()`, per person.

`SAMPLE` runs in a page of our web client: it reads every live connection
(`window.__call.connections()`) and attributes each `inbound-rtp` to the person who sends
it (`window.__call.remoteTracks()`, by `trackIdentifier`; names from the call's state).
Counters of one person's streams are summed, so a stream that moved to a new SSRC after
a renegotiation keeps counting. `Sampler` samples every page in the background;
`window_stats` turns the samples of a window into rates, `first_frames` finds when each
person's video first decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from playwright.async_api import Page

SAMPLE = """
async () => {
  const call = window.__call;
  const names = Object.fromEntries(call.state.participants.map((p) => [p.socketId, p.name]));
  const tracks = call.remoteTracks();
  const inbound = [], outbound = [], pairs = [];
  for (const [peer, pc] of Object.entries(call.connections())) {
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        const who = tracks[s.trackIdentifier];
        if (!who || who.slot !== 'camera') return;
        inbound.push({ ...s, owner: names[who.owner] ?? who.owner });
      } else if (s.type === 'outbound-rtp') {
        outbound.push({ ...s, peer: names[peer] ?? peer });
      } else if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = report.get(s.selectedCandidatePairId);
        if (pair) pairs.push({ peer: names[peer] ?? peer,
          availableOutgoingBitrate: pair.availableOutgoingBitrate ?? null,
          currentRoundTripTime: pair.currentRoundTripTime ?? null });
      }
    });
  }
  return { t: performance.now() / 1000, inbound, outbound, pairs };
}
"""

IN_VIDEO = (
    "framesDecoded",
    "freezeCount",
    "totalFreezesDuration",
    "packetsLost",
    "packetsReceived",
    "nackCount",
    "pliCount",
    "firCount",
    "bytesReceived",
    "framesDropped",
)
IN_AUDIO = ("concealedSamples", "totalSamplesReceived", "packetsLost", "packetsReceived")
OUT = (
    "bytesSent",
    "packetsSent",
    "retransmittedPacketsSent",
    "framesEncoded",
    "pliCount",
    "firCount",
    "nackCount",
)

Sample = dict[str, Any]


def _summed(entries: list[dict[str, Any]], fields: tuple[str, ...]) -> dict[str, float]:
    return {f: float(sum(e.get(f) or 0 for e in entries)) for f in fields}


def _by_owner(sample: Sample, kind: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in sample["inbound"]:
        if e.get("kind") == kind:
            out.setdefault(e["owner"], []).append(e)
    return out


def _latest(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The stream of a person that decoded most recently (its resolution is current)."""
    return max(entries, key=lambda e: (e.get("framesDecoded") or 0, e.get("timestamp") or 0))


def first_frames(samples: list[Sample], since: dict[str, float]) -> dict[str, float]:
    """Seconds until each person's video first decoded, from `since[person]` (page times)."""
    out: dict[str, float] = {}
    for s in samples:
        for owner, entries in _by_owner(s, "video").items():
            if owner not in out and any((e.get("framesDecoded") or 0) > 0 for e in entries):
                out[owner] = round(s["t"] - since.get(owner, samples[0]["t"]), 1)
    return out


def window_stats(samples: list[Sample]) -> dict[str, Any]:
    """One page's view over a window (its first to its last sample)."""
    first, last = samples[0], samples[-1]
    elapsed = last["t"] - first["t"]
    video: dict[str, Any] = {}
    for owner, entries in _by_owner(last, "video").items():
        series = [_summed(_by_owner(s, "video").get(owner, []), IN_VIDEO) for s in samples]
        a, b = series[0], series[-1]
        fps = [
            (y["framesDecoded"] - x["framesDecoded"]) / (t1["t"] - t0["t"])
            for x, y, t0, t1 in zip(series, series[1:], samples, samples[1:], strict=False)
        ]
        lost, received = (
            b["packetsLost"] - a["packetsLost"],
            b["packetsReceived"] - a["packetsReceived"],
        )
        now = _latest(entries)
        video[owner] = {
            "fps_min": round(min(fps, default=0.0), 1),
            "fps_median": round(statistics.median(fps) if fps else 0.0, 1),
            "width": now.get("frameWidth"),
            "height": now.get("frameHeight"),
            "kbps": round((b["bytesReceived"] - a["bytesReceived"]) * 8 / elapsed / 1000, 1),
            "freezes": int(b["freezeCount"] - a["freezeCount"]),
            "freeze_s": round(b["totalFreezesDuration"] - a["totalFreezesDuration"], 2),
            # packetsLost falls when late packets fill holes counted before the window
            "loss_percent": (
                round(100 * max(0.0, lost) / (lost + received), 2) if lost + received > 0 else None
            ),
            "packets_lost": int(lost),
            "nacks_sent": int(b["nackCount"] - a["nackCount"]),
            "plis_sent": int(b["pliCount"] - a["pliCount"]),
            "frames_dropped": int(b["framesDropped"] - a["framesDropped"]),
        }
    audio: dict[str, Any] = {}
    for owner in _by_owner(last, "audio"):
        a, b = (_summed(_by_owner(s, "audio").get(owner, []), IN_AUDIO) for s in (first, last))
        total = b["totalSamplesReceived"] - a["totalSamplesReceived"]
        concealed = b["concealedSamples"] - a["concealedSamples"]
        audio[owner] = {
            "concealed_percent": round(100 * concealed / total, 2) if total else None,
            "concealed_samples": int(concealed),
            "samples": int(total),
        }
    return {"video": video, "audio": audio, "sent": _sent(first, last, elapsed)}


def _sent(first: Sample, last: Sample, elapsed: float) -> dict[str, Any]:
    """The page's own outbound media: summed over its connections (one per peer in mesh)."""
    out: dict[str, Any] = {}
    for kind in ("video", "audio"):
        a = _summed([e for e in first["outbound"] if e.get("kind") == kind], OUT)
        now = [e for e in last["outbound"] if e.get("kind") == kind]
        b = _summed(now, OUT)
        d = {f: b[f] - a[f] for f in OUT}
        out[f"{kind}_kbps"] = round(d["bytesSent"] * 8 / elapsed / 1000, 1)
        if kind == "audio":
            continue
        reasons = Counter(e.get("qualityLimitationReason") or "none" for e in now)
        sizes = Counter(f"{e['frameWidth']}x{e['frameHeight']}" for e in now if e.get("frameWidth"))
        out |= {
            "copies": len(now),
            "fps": round(d["framesEncoded"] / elapsed / max(1, len(now)), 1),
            "size": sizes.most_common(1)[0][0] if sizes else None,
            "target_kbps": round(sum(e.get("targetBitrate") or 0 for e in now) / 1000, 1),
            "retransmitted_packets": int(d["retransmittedPacketsSent"]),
            "packets": int(d["packetsSent"]),
            "plis_received": int(d["pliCount"]),
            "firs_received": int(d["firCount"]),
            "nacks_received": int(d["nackCount"]),
            "quality_limitation": sorted(reasons),
        }
    rates = [p["availableOutgoingBitrate"] for p in last["pairs"] if p["availableOutgoingBitrate"]]
    rtts = [p["currentRoundTripTime"] for p in last["pairs"] if p["currentRoundTripTime"]]
    out["estimate_kbps"] = round(min(rates) / 1000, 1) if rates else None
    out["rtt_ms"] = round(max(rtts) * 1000, 1) if rtts else None
    return out


class Sampler:
    """Every page's getStats() every `interval` s, in the background, from page open on.

    Each page has its own loop: a page whose renderer is starved (getStats() taking
    seconds on a saturated machine) delays only its own samples.
    """

    def __init__(self, pages: dict[str, Page], interval: float) -> None:
        self.pages = pages
        self.interval = interval
        self.samples: dict[str, list[Sample]] = {n: [] for n in pages}
        self.errors: dict[str, str] = {}  # the last failed sample of each page
        self.changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Sampler:
        self._tasks = [asyncio.create_task(self._run(name)) for name in self.pages]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            try:
                sample = await self.pages[name].evaluate(SAMPLE)
            except Exception as exc:  # a page that crashed or navigated: say so in the row
                self.errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                self.samples[name].append({**sample, "wall": time.monotonic()})
                self.changed.set()
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())

    def count(self) -> dict[str, int]:
        return {n: len(s) for n, s in self.samples.items()}

    def sees(self, viewer: str, owners: list[str]) -> bool:
        """Whether `viewer` has decoded video from every one of `owners`."""
        if not self.samples[viewer]:
            return False
        last = self.samples[viewer][-1]
        decoded = {e["owner"] for e in last["inbound"] if (e.get("framesDecoded") or 0) > 0}
        return set(owners) <= decoded

    async def until(self, holds: Callable[[], bool], timeout: float) -> bool:
        """Waits (bounded) for a condition on the samples; whether it held."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not holds():
                    self.changed.clear()
                    await self.changed.wait()
                return True
        return False
