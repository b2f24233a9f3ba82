"""Fan-out benchmark: our forwarding SFU against a plain aiortc MediaRelay room, same run.

One publisher sends pre-encoded VP8 640x480 at 30 fps (replayed, so the load generator
never encodes); K subscribers count the RTP packets and frames they receive without
decoding. The server runs in its own process (``--serve``) so its CPU, read from
``psutil`` over the measurement window, excludes the load generator's:

* ``forward``: :class:`sfu.MediaPlane` (encoded frames forwarded, ``pack()`` only);
* ``relay``: ``aiortc.contrib.media.MediaRelay`` (decode once, re-encode per subscriber).

Latency is publisher send -> subscriber receive of the same frame on one host clock: the
publisher's pts carry a known pseudo-random offset, so each subscriber's frames are
matched to the sent ones by RTP timestamp differences (which both servers preserve).

    python -m benchmarks.fanout --subscribers 1,2,4,8,16 --seconds 10 \\
        --json benchmarks/results/fanout.json --plot benchmarks/results/fanout.png
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from benchmarks._media import Clip, Received, ReplayTrack, encode_vp8_clip, receive_encoded
from sfu import MediaConfig, MediaPlane

ROOM = "bench"


def _config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def _vp8_only() -> list[Any]:
    caps = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in caps if c.mimeType in ("video/VP8", "video/rtx")]


# ---------------------------------------------------------------- server process


async def _write(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
    writer.write(json.dumps(msg).encode() + b"\n")
    await writer.drain()


class _RelayRoom:
    """The baseline: what an aiortc app does with MediaRelay (decode, re-encode each)."""

    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.source: MediaStreamTrack | None = None
        self.ready = asyncio.Event()
        self.pcs: dict[str, RTCPeerConnection] = {}

    async def join(self, pid: str, role: str, writer: asyncio.StreamWriter) -> None:
        pc = self.pcs[pid] = RTCPeerConnection(_config())
        if role == "pub":
            t = pc.addTransceiver("video", direction="recvonly")

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                self.source = track
                self.ready.set()

        else:
            await self.ready.wait()
            assert self.source is not None
            track = self.relay.subscribe(self.source, buffered=False)
            t = pc.addTransceiver(track, direction="sendonly")
        t.setCodecPreferences(_vp8_only())
        await pc.setLocalDescription(await pc.createOffer())
        await _write(writer, {"op": "offer", "sdp": pc.localDescription.sdp})

    async def answer(self, pid: str, sdp: str) -> None:
        await self.pcs[pid].setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def leave(self, pid: str) -> None:
        pc = self.pcs.pop(pid, None)
        if pc is not None:
            await pc.close()


async def _serve(mode: str) -> None:
    plane = MediaPlane(MediaConfig(ice_servers=[])) if mode.startswith("forward") else None
    relay = _RelayRoom() if mode == "relay" else None
    tasks: set[asyncio.Future[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid = ""
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                if msg["op"] == "join":
                    pid = msg["id"]
                    if plane is not None:

                        async def sink(kind: str, payload: dict[str, Any] | None) -> None:
                            if kind == "offer" and payload is not None:
                                await _write(writer, {"op": "offer", "sdp": payload["sdp"]})

                        await plane.join(ROOM, pid, sink)
                    elif relay is not None:
                        tasks.add(asyncio.ensure_future(relay.join(pid, msg["role"], writer)))
                elif msg["op"] == "answer":
                    if plane is not None:
                        await plane.answer(ROOM, pid, {"type": "answer", "sdp": msg["sdp"]})
                    elif relay is not None:
                        await relay.answer(pid, msg["sdp"])
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                if plane is not None:
                    await plane.leave(ROOM, pid)
                elif relay is not None:
                    await relay.leave(pid)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Runs until the parent closes our stdin.
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()
    if plane is not None:
        await plane.close()
    if relay is not None:
        for pid in list(relay.pcs):
            await relay.leave(pid)


# ---------------------------------------------------------------- load generator


class _Peer:
    """A benchmark client: publishes a ReplayTrack or receives without decoding."""

    def __init__(self, port: int, pid: str, role: str, track: ReplayTrack | None) -> None:
        self.port = port
        self.id = pid
        self.role = role
        self.track = track
        self.pc = RTCPeerConnection(_config())
        self.received: list[Received] = []
        self.answered = asyncio.Event()
        self.got_frame = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._installed: set[str] = set()

    async def start(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer = writer
        await _write(writer, {"op": "join", "id": self.id, "role": self.role})
        self._task = asyncio.create_task(self._run(reader))

    async def _run(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            msg = json.loads(line)
            if msg["op"] == "offer":
                await self._on_offer(msg["sdp"])

    async def _on_offer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for t in self.pc.getTransceivers():
            mid = t.mid or ""
            if mid not in self._installed:
                self._installed.add(mid)
                if t.kind == "video":
                    self.received.append(
                        receive_encoded(t.receiver, "video", lambda: "", self.got_frame.set)
                    )
            if (
                self.track is not None
                and t.kind == "video"
                and t._offerDirection == "sendonly"
                and self.track not in [x.sender.track for x in self.pc.getTransceivers()]
            ):
                t.direction = "sendonly"
                t.sender.replaceTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        assert self._writer is not None
        await _write(self._writer, {"op": "answer", "sdp": self.pc.localDescription.sdp})
        self.answered.set()

    def frames(self) -> int:
        return sum(len(r.frames) for r in self.received)

    def packets(self) -> int:
        return sum(r.assembler.packets for r in self.received if r.assembler is not None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
        await self.pc.close()


def _align(
    frames: list[tuple[str, bool, int, float]], sent: dict[int, float]
) -> list[tuple[float, float]]:
    """(arrival, latency in s) of received frames, matched to sent pts by timestamp differences.

    A match tolerates 2 ticks: MediaRelay's re-encode rounds timestamps through another
    time base. The publisher's pts offsets are far apart (~3000 + up to 996 ticks).
    """
    if len(frames) < 8:
        return []
    pts = sorted(sent)

    def near(target: int) -> int | None:
        i = bisect.bisect_left(pts, target - 2)
        if i < len(pts) and abs(pts[i] - target) <= 2:
            return pts[i]
        return None

    ts0 = frames[0][2]
    diffs = [f[2] - ts0 for f in frames[:8]]
    for p0 in pts:
        if all(near(p0 + d) is not None for d in diffs):
            out = []
            for f in frames:
                match = near(p0 + f[2] - ts0)
                if match is not None:
                    out.append((f[3], f[3] - sent[match]))
            return out
    return []


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass
class Row:
    mode: str
    subscribers: int
    server_cpu_s_per_s: float
    packets_per_s: float
    cpu_us_per_packet: float
    fps_min: float
    latency_ms_p50: float
    latency_ms_p99: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "subscribers": self.subscribers,
            "server_cpu_s_per_s": round(self.server_cpu_s_per_s, 4),
            "packets_per_s": round(self.packets_per_s, 1),
            "cpu_us_per_packet": round(self.cpu_us_per_packet, 1),
            "fps_min": round(self.fps_min, 1),
            "latency_ms_p50": round(self.latency_ms_p50, 2),
            "latency_ms_p99": round(self.latency_ms_p99, 2),
        }


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(mode: str, k: int, seconds: float, clip: Clip, warmup: float) -> Row:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.fanout",
        "--serve",
        mode,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    port = int(line.split()[1])
    publisher_track = ReplayTrack(clip, pts_jitter=True)
    publisher = _Peer(port, "pub", "pub", publisher_track)
    subs = [_Peer(port, f"sub-{i}", "sub", None) for i in range(k)]
    try:
        await publisher.start()
        await asyncio.wait_for(publisher.answered.wait(), 30)
        for sub in subs:
            await sub.start()
        await asyncio.wait_for(asyncio.gather(*(s.got_frame.wait() for s in subs)), 60)
        await asyncio.sleep(warmup)
        frames0 = [s.frames() for s in subs]
        packets0 = sum(s.packets() for s in subs)
        cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        frames1 = [s.frames() for s in subs]
        packets1 = sum(s.packets() for s in subs)
        elapsed = t1 - t0
        cpu = (cpu1 - cpu0) / elapsed
        packets = (packets1 - packets0) / elapsed
        fps_min = min((b - a) / elapsed for a, b in zip(frames0, frames1, strict=True))
        latencies: list[float] = []
        for s in subs:
            frames = [f for r in s.received for f in r.frames]
            # only frames received inside the window
            latencies += [lat for at, lat in _align(frames, publisher_track.sent) if t0 <= at <= t1]
        lat_ms = [x * 1000 for x in latencies]
        return Row(
            mode=mode,
            subscribers=k,
            server_cpu_s_per_s=cpu,
            packets_per_s=packets,
            cpu_us_per_packet=(cpu * 1e6 / packets) if packets else float("nan"),
            fps_min=fps_min,
            latency_ms_p50=statistics.median(lat_ms) if lat_ms else float("nan"),
            latency_ms_p99=_percentile(lat_ms, 0.99),
        )
    finally:
        for peer in [publisher, *subs]:
            await peer.close()
        publisher_track.stop()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fan-out of one VP8 640x480 30 fps publisher (server process CPU)")
    for col in ("K", "mode", "CPU s/s", "pkt/s", "µs/pkt", "fps min", "lat p50 ms", "lat p99 ms"):
        table.add_column(col, justify="right")
    for r in sorted(rows, key=lambda r: (r.subscribers, r.mode)):
        table.add_row(
            str(r.subscribers),
            r.mode,
            f"{r.server_cpu_s_per_s:.3f}",
            f"{r.packets_per_s:.0f}",
            f"{r.cpu_us_per_packet:.1f}",
            f"{r.fps_min:.1f}",
            f"{r.latency_ms_p50:.1f}",
            f"{r.latency_ms_p99:.1f}",
        )
    Console(width=120).print(table)


def _plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, style in (("forward", "o-"), ("forward-stock", "^:"), ("relay", "s--")):
        mine = sorted((r for r in rows if r.mode == mode), key=lambda r: r.subscribers)
        if not mine:
            continue
        ks = [r.subscribers for r in mine]
        axes[0].plot(ks, [r.server_cpu_s_per_s for r in mine], style, label=mode)
        axes[1].plot(ks, [r.cpu_us_per_packet for r in mine], style, label=mode)
        axes[2].plot(ks, [r.latency_ms_p99 for r in mine], style, label=mode)
    for ax, title in zip(
        axes,
        ("server CPU-seconds per second", "server CPU µs per forwarded packet", "latency p99 (ms)"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("subscribers")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


async def _main(args: argparse.Namespace) -> list[Row]:
    clip = encode_vp8_clip(width=640, height=480, fps=30, seconds=4.0, bitrate=1_000_000)
    rows: list[Row] = []
    for k in [int(x) for x in args.subscribers.split(",") if x]:
        for mode in args.modes.split(","):
            row = await run_case(mode, k, args.seconds, clip, args.warmup)
            print(json.dumps(row.as_json()), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description="Server CPU and latency of forwarding vs MediaRelay for K subscribers.",
    )
    parser.add_argument("--subscribers", default="1,2,4,8,16", help="comma-separated K values")
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument(
        "--modes",
        default="forward,relay",
        help="forward,relay and/or forward-stock (forwarding through aiortc's own send loop)",
    )
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--plot", help="write a PNG plot to this file")
    parser.add_argument(
        "--serve", choices=["forward", "forward-stock", "relay"], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve:
        profile = os.environ.get("FANOUT_PROFILE")  # cProfile the server into this file
        if profile:
            import cProfile

            cProfile.run(f"asyncio.run(_serve({args.serve!r}))", profile)
        else:
            asyncio.run(_serve(args.serve))
        return
    rows = asyncio.run(_main(args))
    _table(rows)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump([r.as_json() for r in rows], f, indent=2)
    if args.plot:
        _plot(rows, args.plot)


if __name__ == "__main__":
    main()
