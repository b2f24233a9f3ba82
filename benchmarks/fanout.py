"""Fan-out benchmark: one publisher to K subscribers, our SFU against its floor and MediaRelay.

One publisher sends pre-packetized VP8 640x480 at 30 fps (~1 Mbit/s) from a timer, so the
load generator never encodes; K subscribers count the packets and frames they receive from
the clear SRTP header (one of them decrypts and reassembles every frame). The server runs
in its own process (``--serve``) and its CPU, read with ``psutil`` over the measurement
window, excludes the load generator's. Modes, each in the same run:

* ``forward``: :class:`sfu.MediaPlane`, the SFU as it runs;
* ``replay``: the same, but a new subscriber starts from the cached last keyframe and the
  packets since (when they are few) instead of asking the publisher for a keyframe;
* ``floor``: the same connections, but each publisher packet is unprotected once and, per
  subscriber, only its header rewritten with ``struct``, protected and sent: what a Python
  packet forwarder cannot go below;
* ``relay``: ``aiortc.contrib.media.MediaRelay`` (decode once, re-encode per subscriber).

Latency is publisher send -> subscriber receive of the same frame on one host clock: the
publisher's timestamps carry a known pseudo-random offset per frame, so each subscriber's
frames are matched to the sent ones by RTP timestamp differences.

    python -m benchmarks.fanout --subscribers 1,2,4,8,16 --seconds 8 --rounds 3 \\
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
from dataclasses import dataclass
from typing import Any

import psutil
import uvloop
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from benchmarks._loadgen import ClipPublisher, Packetized, RtpCounter, packetize
from benchmarks._report import machine
from devtools.media import Received, encode_vp8_clip, receive_encoded
from sfu import MediaConfig, MediaPlane
from sfu.rtp import HEADER
from sfu.source import SourceConfig
from sfu.transport import MediaTransport

ROOM = "bench"
MODES = ("forward", "replay", "floor", "relay")
REPLAY_PACKETS = 300
"""``replay``: the SFU as it runs, but new subscribers start from the cached keyframe."""


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


def install_floor() -> None:
    """Replaces the SFU's per-packet work by the least a Python forwarder must do.

    Unprotect once; per subscriber leg: pack a new header (SSRC, payload type), protect,
    ``sendto`` on the nominated pair. Signaling, negotiation, RTCP and the first packet of
    each stream (to learn its SSRC) still run through the plane.
    """
    stock = MediaTransport.on_datagram

    def on_datagram(self: MediaTransport, data: bytes) -> None:
        rx = self._rx
        if rx is None or 191 < data[1] < 224:
            stock(self, data)
            return
        plain = rx.unprotect(data)
        source = self._ssrcs.get(int.from_bytes(plain[8:12], "big"))
        if source is None:
            stock(self, data)
            return
        b0, b1, seq, ts, _ = HEADER.unpack_from(plain)
        body = plain[12:]
        for leg in source.legs:
            out = leg.output
            if not out.connected():
                continue
            tx = out._tx  # type: ignore[attr-defined]
            pair = out._pairs.get(1)  # type: ignore[attr-defined]
            packet = HEADER.pack(b0, b1, seq, ts, leg.ssrc) + body
            pair.protocol.transport.sendto(tx.protect(packet), pair.remote_addr)
            leg.packets += 1

    MediaTransport.on_datagram = on_datagram  # type: ignore[method-assign]


async def _serve(mode: str) -> None:
    if mode == "floor":
        install_floor()
    config = MediaConfig(
        ice_servers=[], source=SourceConfig(keyframe_replay_packets=REPLAY_PACKETS)
    )
    if mode != "replay":
        config = MediaConfig(ice_servers=[])
    plane = MediaPlane(config) if mode != "relay" else None
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
        except ConnectionResetError:
            pass  # the load generator hung up at the end of a case: that is how cases end
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
    """A benchmark client: the publisher, a counting subscriber, or the sampled one."""

    def __init__(self, port: int, pid: str, role: str, clip: Packetized | None = None) -> None:
        self.port = port
        self.id = pid
        self.role = role
        self.clip = clip
        self.pc = RTCPeerConnection(_config())
        self.publisher: ClipPublisher | None = None
        self.counter: RtpCounter | None = None
        self.received: list[Received] = []
        self.answered = asyncio.Event()
        self.answered_at: float | None = None
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
        transceivers = self.pc.getTransceivers()
        if self.role == "sub" and self.counter is None and transceivers:
            self.counter = RtpCounter(transceivers[0].receiver.transport, record=True)
        for t in transceivers:
            mid = t.mid or ""
            if self.role == "sampled" and mid not in self._installed and t.kind == "video":
                self._installed.add(mid)
                self.received.append(
                    receive_encoded(t.receiver, "video", lambda: "", self.got_frame.set)
                )
            if (
                self.clip is not None
                and self.publisher is None
                and t.kind == "video"
                and t._offerDirection == "sendonly"
            ):
                t.direction = "sendonly"
                self.publisher = ClipPublisher(t, self.clip, record=True)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        assert self._writer is not None
        await _write(self._writer, {"op": "answer", "sdp": self.pc.localDescription.sdp})
        if self.publisher is not None and self.publisher._timer is None:
            self.publisher.start()
        if self.answered_at is None:
            self.answered_at = time.monotonic()
        self.answered.set()

    def frames(self) -> int:
        if self.counter is not None:
            return sum(self.counter.frames().values())
        return sum(len(r.frames) for r in self.received)

    def packets(self) -> int:
        if self.counter is not None:
            return self.counter.packets()
        return sum(r.assembler.packets for r in self.received if r.assembler is not None)

    def arrivals(self) -> list[tuple[int, float]]:
        if self.counter is not None:
            return [a for s in self.counter.streams.values() for a in s.arrivals]
        return [(f[2], f[3]) for r in self.received for f in r.frames]

    def first_frame_ms(self) -> float:
        """From this subscriber's first answer to its first whole frame."""
        if self.counter is not None:
            firsts = [s.first_frame_at for s in self.counter.streams.values() if s.first_frame_at]
        else:
            firsts = [r.frames[0][3] for r in self.received if r.frames]
        if not firsts or self.answered_at is None:
            return float("nan")
        return (min(firsts) - self.answered_at) * 1000

    async def wait_first_frame(self) -> None:
        while self.frames() == 0:
            if self.role == "sampled":
                self.got_frame.clear()
                await self.got_frame.wait()
            else:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()
        await self.pc.close()


def _align(arrivals: list[tuple[int, float]], sent: dict[int, float]) -> list[tuple[float, float]]:
    """(arrival, latency in s) of received frames, matched to sent frames by timestamps.

    A receiver's timestamps are the sender's plus an unknown constant; the per-frame offsets
    make the differences of 8 consecutive frames identify where it starts. A match
    tolerates 2 ticks: MediaRelay's re-encode rounds timestamps through another time base.
    """
    frames = sorted(arrivals, key=lambda a: a[1])
    if len(frames) < 8:
        return []
    pts = sorted(sent)

    def near(target: int) -> int | None:
        i = bisect.bisect_left(pts, target - 2)
        if i < len(pts) and abs(pts[i] - target) <= 2:
            return pts[i]
        return None

    ts0 = frames[0][0]
    diffs = [(f[0] - ts0) & 0xFFFFFFFF for f in frames[:8]]
    for p0 in pts:
        if all(near(p0 + d) is not None for d in diffs):
            out = []
            for ts, at in frames:
                match = near(p0 + ((ts - ts0) & 0xFFFFFFFF))
                if match is not None:
                    out.append((at, at - sent[match]))
            return out
    return []


def _cpu_seconds(pid: int) -> float:
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
    fps_sampled: float
    latency_ms_p50: float
    latency_ms_p99: float
    first_frame_ms: float
    keyframe_requests: int
    loadgen_cpu_s_per_s: float

    def as_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_case(mode: str, k: int, seconds: float, clip: Packetized, warmup: float) -> Row:
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
    publisher = _Peer(port, "pub", "pub", clip)
    subs = [_Peer(port, f"sub-{i}", "sampled" if i == 0 else "sub") for i in range(k)]
    me = psutil.Process()
    try:
        await publisher.start()
        await asyncio.wait_for(publisher.answered.wait(), 30)
        for sub in subs:
            await sub.start()
        try:
            await asyncio.wait_for(asyncio.gather(*(s.wait_first_frame() for s in subs)), 60)
        except TimeoutError:
            got = [(s.role, s.pc.connectionState, s.packets(), s.frames()) for s in subs]
            raise RuntimeError(f"{mode} K={k}: not every subscriber got video: {got}") from None
        await asyncio.sleep(warmup)
        frames0 = [s.frames() for s in subs]
        packets0 = sum(s.packets() for s in subs)
        cpu0, gen0, t0 = _cpu_seconds(proc.pid), _cpu_seconds(me.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, gen1, t1 = _cpu_seconds(proc.pid), _cpu_seconds(me.pid), time.monotonic()
        frames1 = [s.frames() for s in subs]
        packets1 = sum(s.packets() for s in subs)
        elapsed = t1 - t0
        cpu = (cpu1 - cpu0) / elapsed
        packets = (packets1 - packets0) / elapsed
        fps = [(b - a) / elapsed for a, b in zip(frames0, frames1, strict=True)]
        assert publisher.publisher is not None
        sent = publisher.publisher.sent
        latencies = [
            lat * 1000 for s in subs for at, lat in _align(s.arrivals(), sent) if t0 <= at <= t1
        ]
        return Row(
            mode=mode,
            subscribers=k,
            server_cpu_s_per_s=cpu,
            packets_per_s=packets,
            cpu_us_per_packet=(cpu * 1e6 / packets) if packets else float("nan"),
            fps_min=min(fps),
            fps_sampled=fps[0],
            latency_ms_p50=statistics.median(latencies) if latencies else float("nan"),
            latency_ms_p99=_percentile(latencies, 0.99),
            first_frame_ms=statistics.median(s.first_frame_ms() for s in subs),
            keyframe_requests=publisher.publisher.keyframe_requests,
            loadgen_cpu_s_per_s=(gen1 - gen0) / elapsed,
        )
    finally:
        for peer in [publisher, *subs]:
            await peer.close()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def median_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """One row per (K, mode): the median of each figure over the rounds, and the floor ratio."""
    groups: dict[tuple[int, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.subscribers, row.mode), []).append(row)
    out = []
    for (k, mode), runs in sorted(groups.items()):
        entry: dict[str, Any] = {"mode": mode, "subscribers": k, "rounds": len(runs)}
        for key, value in vars(runs[0]).items():
            if isinstance(value, float | int) and key != "subscribers":
                entry[key] = round(statistics.median(getattr(r, key) for r in runs), 4)
        out.append(entry)
    floors = {e["subscribers"]: e["cpu_us_per_packet"] for e in out if e["mode"] == "floor"}
    for entry in out:
        floor = floors.get(entry["subscribers"])
        entry["floor_us_per_packet"] = floor
        entry["ratio_to_floor"] = round(entry["cpu_us_per_packet"] / floor, 2) if floor else None
    return out


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Fan-out of one VP8 640x480 30 fps publisher (server process CPU, medians)")
    cols = (
        "K",
        "mode",
        "CPU s/s",
        "pkt/s",
        "µs/pkt",
        "x floor",
        "fps min",
        "p50 ms",
        "p99 ms",
        "1st frame ms",
        "PLIs",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        ratio = r["ratio_to_floor"]
        table.add_row(
            str(r["subscribers"]),
            r["mode"],
            f"{r['server_cpu_s_per_s']:.3f}",
            f"{r['packets_per_s']:.0f}",
            f"{r['cpu_us_per_packet']:.1f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{r['fps_min']:.1f}",
            f"{r['latency_ms_p50']:.1f}",
            f"{r['latency_ms_p99']:.1f}",
            f"{r['first_frame_ms']:.0f}",
            f"{r['keyframe_requests']:.0f}",
        )
    Console(width=120).print(table)


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, style in (("forward", "o-"), ("replay", "x-"), ("floor", "^:"), ("relay", "s--")):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["subscribers"])
        if not mine:
            continue
        ks = [r["subscribers"] for r in mine]
        axes[0].plot(ks, [r["server_cpu_s_per_s"] for r in mine], style, label=mode)
        axes[1].plot(ks, [r["cpu_us_per_packet"] for r in mine], style, label=mode)
        axes[2].plot(ks, [r["latency_ms_p99"] for r in mine], style, label=mode)
    for ax, title in zip(
        axes,
        ("server CPU-seconds per second", "server CPU µs per forwarded packet", "latency p99 (ms)"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("subscribers")
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)


async def _main(args: argparse.Namespace) -> list[Row]:
    clip = packetize(encode_vp8_clip(width=640, height=480, fps=30, seconds=4.0, bitrate=1_000_000))
    modes = [m for m in args.modes.split(",") if m]
    rows: list[Row] = []
    for _ in range(args.rounds):
        for k in [int(x) for x in args.subscribers.split(",") if x]:
            for mode in modes:
                row = await run_case(mode, k, args.seconds, clip, args.warmup)
                print(json.dumps(row.as_json()), flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fanout",
        description="Server CPU and latency of one publisher to K subscribers, by mode.",
    )
    parser.add_argument("--subscribers", default="1,2,4,8,16", help="comma-separated K values")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="runs per case (medians)")
    parser.add_argument("--modes", default=",".join(MODES), help="forward, floor and/or relay")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--plot", help="write a PNG plot to this file")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if os.environ.get("FANOUT_GC"):
            import gc

            gc.set_threshold(*[int(x) for x in os.environ["FANOUT_GC"].split(",")])
        uvloop.run(_serve(args.serve))
        return
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = median_rows(uvloop.run(_main(args)))
    _table(rows)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        result = {"started": started, "machine": machine(), "argv": sys.argv, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.plot:
        _plot(rows, args.plot)


if __name__ == "__main__":
    main()
