"""Room benchmark: N participants in one sfu room, each publishing to and receiving all others.

Every participant is a socket.io client of a real server (``python -m signaling --mode sfu``)
with one aiortc connection to the SFU; it publishes 480p30 VP8 (~1 Mbit/s) and Opus from a
pre-packetized clip (`benchmarks._loadgen.ClipPublisher`) and counts what it receives from
the clear SRTP header; one sampled participant decrypts and reassembles every frame. For
each N the same room runs on the SFU as it is (``forward``) and on a server whose per-packet
work is the floor of a Python forwarder (``floor``, see `benchmarks.fanout`), each on a fresh
process, in the same run.

With ``--workers 1,2`` the forward rows run again on servers with that many media workers
(``MEDIA_WORKERS``; participants placed by load, so the room spans the workers and each
track crosses a pipe once); ``--nodes 2`` runs two server processes on one Redis, the
participants alternating between them. Server CPU is the signaling process plus its
workers; each worker's share is reported (``worker_cpu``) to show the balance.

``--worker-cpu 0.2`` holds each media process (a worker, or the server with one worker) to
that share of a core for the measurement window, with a cgroup quota: on a machine where
the load generator shares the cores, a smaller "core" per worker is how 1 against 2
workers can both be driven to saturation. The run ends with the largest room each
configuration held at full quality (`capacity`) and its packets/s against one worker's.

    python -m benchmarks.room --participants 4,8,12,16,20 --seconds 8 --rounds 2 \\
        --json benchmarks/results/room.json --plot benchmarks/results/room.png
    python -m benchmarks.room --participants 6 --rooms 3,4,5,6,7 --workers 1,2 \\
        --modes forward --worker-cpu 0.2 --json benchmarks/results/room-workers.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil
import socketio
import uvloop
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from benchmarks._cpucap import capped
from benchmarks._loadgen import ClipPublisher, Packetized, RtpCounter, packetize
from benchmarks._report import machine
from devtools.media import Received, encode_opus_clip, encode_vp8_clip, receive_encoded
from devtools.poll import poll_until
from devtools.server import SCRUB_ENV, running_server
from sfu import _aiortc

MODES = ("forward", "floor")
HOLD_FPS = 27.0
"""A room is held when every stream gets 90 % of the clip's 30 fps..."""
HOLD_LATENCY_MS = 100.0
"""...and the median frame arrives within this of its send time (not seconds late in a
queue, which is how a saturated process fails)."""
SETUP_TIMEOUT = 120.0
JOIN_TIMEOUT = 30.0
"""A join ack on a machine other work shares can take seconds; only a lost one is fatal."""
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PIPED = re.compile(r"^sfu_piped_packets_total\{[^}]*\} ([0-9.e+]+)$", re.M)


def video_ssrcs(sdp: str) -> set[int]:
    """The media SSRCs the SFU announces on its video m-lines (the first of each FID pair)."""
    out: set[int] = set()
    video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        elif video and line.startswith("a=ssrc-group:FID "):
            out.add(int(line.split()[1]))
    return out


def latencies_ms(people: list[Participant]) -> list[float]:
    """Send -> receive of every recorded frame: the SFU keeps each publisher's timestamps
    (a leg's first start keeps the numbering), so a frame's timestamp names its publisher's
    send time once the publisher's random origin is taken off."""
    publishers = [p.publishers["video"] for p in people if "video" in p.publishers]
    out: list[float] = []
    for person in people:
        if person.counter is None:
            continue
        for ssrc, stream in person.counter.streams.items():
            if ssrc not in person.video:
                continue
            for ts, at in stream.arrivals:
                for pub in publishers:
                    sent = pub.sent.get((ts - pub.origin) & 0xFFFFFFFF)
                    if sent is not None:
                        out.append((at - sent) * 1000)
                        break
    return out


class Participant:
    """One person: a socket.io client and an aiortc connection to the SFU."""

    def __init__(self, url: str, name: str, clips: dict[str, Packetized], sampled: bool) -> None:
        self.url = url
        self.name = name
        self.clips = clips
        self.sampled = sampled
        self.sio = socketio.AsyncClient(reconnection=False)
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.publishers: dict[str, ClipPublisher] = {}
        self.counter: RtpCounter | None = None
        self.received: dict[str, Received] = {}
        self.video: set[int] = set()
        self._offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.sio.on("video:offer", self._on_offer)

    async def _on_offer(self, message: dict[str, Any]) -> None:
        if message.get("from") == "sfu":
            self._offers.put_nowait(message["offer"])

    async def join(self, room: str) -> None:
        await self.sio.connect(
            self.url,
            auth={"userId": self.name},
            transports=["websocket"],
            wait_timeout=JOIN_TIMEOUT,
        )
        self._task = asyncio.create_task(self._answer_offers())
        ack = await self.sio.call(
            "video:join-room", {"roomId": room, "sfu": True}, timeout=JOIN_TIMEOUT
        )
        if not ack.get("ok"):
            raise RuntimeError(f"join refused: {ack}")

    async def _answer_offers(self) -> None:
        while True:
            offer = await self._offers.get()
            await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
            self.video = video_ssrcs(offer["sdp"])
            transceivers = self.pc.getTransceivers()
            if not self.sampled and self.counter is None:
                self.counter = RtpCounter(transceivers[0].receiver.transport)
            for t in transceivers:
                mid = t.mid or ""
                if self.sampled and mid not in self.received:
                    self.received[mid] = receive_encoded(t.receiver, t.kind, lambda: "")
                if _aiortc.offered_direction(t) == "sendonly" and t.kind not in self.publishers:
                    t.direction = "sendonly"
                    self.publishers[t.kind] = ClipPublisher(t, self.clips[t.kind])
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            local = self.pc.localDescription
            await self.sio.emit(
                "video:answer", {"to": "sfu", "answer": {"type": local.type, "sdp": local.sdp}}
            )
            for publisher in self.publishers.values():
                if publisher._timer is None:
                    publisher.start()

    def video_frames(self) -> dict[str, int]:
        """Frames received per video stream so far."""
        if self.counter is not None:
            return {str(s): c.frames for s, c in self.counter.streams.items() if s in self.video}
        video = {t.mid for t in self.pc.getTransceivers() if t.kind == "video"}
        return {mid: len(r.frames) for mid, r in self.received.items() if r.frames and mid in video}

    def packets(self) -> int:
        if self.counter is not None:
            return self.counter.packets()
        return sum(r.assembler.packets for r in self.received.values() if r.assembler is not None)

    async def close(self) -> None:
        for publisher in self.publishers.values():
            publisher.stop()
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            await self.sio.disconnect()
        await self.pc.close()


@dataclass
class Row:
    mode: str
    participants: int
    """Per room."""
    rooms: int
    nodes_by: str
    workers: int
    nodes: int
    server_cpu_s_per_s: float
    packets_per_s: float
    cpu_us_per_packet: float
    fps_publisher: float
    fps_min: float
    fps_median: float
    fps_sampled_min: float
    latency_ms_p50: float
    latency_ms_p99: float
    loadgen_cpu_s_per_s: float
    rss_kb_per_stream: float
    setup_s: float
    piped_packets_per_s: float
    worker_cpu: list[float]
    worker_imbalance: float
    """(busiest - idlest) / busiest worker CPU; 0 with one worker."""
    load_1m: float
    """The machine's 1-minute load average at the end of the window (others share it)."""
    worker_cpu_cap: float | None = None
    """Each media process held to this share of a core (``--worker-cpu``), or None."""
    throttled_s_per_s: float = 0.0
    """Time the capped media processes were held back, per second: > 0 means saturated."""


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _tree_cpu(pids: list[int]) -> tuple[float, dict[int, float]]:
    """CPU of the server processes and their media workers; each worker's apart."""
    total, workers = 0.0, {}
    for pid in pids:
        total += _cpu(pid)
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                workers[child.pid] = _cpu(child.pid)
                total += workers[child.pid]
    return total, workers


def _rss(pids: list[int]) -> int:
    procs = [psutil.Process(p) for p in pids]
    procs += [c for p in procs for c in p.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs)


async def _media_pids(http: aiohttp.ClientSession, urls: list[str]) -> list[int]:
    """Every server's media processes, from /health (the server itself with one worker)."""
    pids: list[int] = []
    for url in urls:
        async with http.get(f"{url}/health") as res:
            pids += [int(w["pid"]) for w in (await res.json()).get("workers", [])]
    return pids


async def _piped(http: aiohttp.ClientSession, urls: list[str]) -> float:
    """Packets sent down pipes so far, from every server's /metrics."""
    total = 0.0
    for url in urls:
        async with http.get(f"{url}/metrics/prometheus") as res:
            total += sum(float(v) for v in PIPED.findall(await res.text()))
    return total


@contextlib.asynccontextmanager
async def _servers(mode: str, n: int, workers: int, nodes: int) -> Any:
    env = {"ROOM_MODE": "sfu", "MAX_PARTICIPANTS": str(max(16, n)), "MEDIA_WORKERS": str(workers)}
    if nodes > 1:
        env |= {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}"}
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                running_server(
                    "--serve",
                    mode,
                    module="benchmarks.room",
                    env=env,
                    scrub=SCRUB_ENV if nodes == 1 else (),
                )
            )
            for _ in range(nodes)
        ]
        yield servers


async def run_case(
    mode: str,
    n: int,
    seconds: float,
    warmup: float,
    clips: dict[str, Packetized],
    workers: int = 1,
    nodes: int = 1,
    cpu_cap: float | None = None,
    rooms: int = 1,
    nodes_by: str = "member",
) -> Row:
    """``rooms`` rooms of ``n`` participants each (participant i in room i % rooms)."""
    async with (
        _servers(mode, n, workers, nodes) as servers,
        aiohttp.ClientSession() as http,
    ):
        stack = contextlib.ExitStack()
        pids = [s.pid for s in servers]
        urls = [s.url for s in servers]
        rss0 = _rss(pids)
        names = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(rooms)]

        # participant i is in room i % rooms; by member, each room's members alternate
        # between the nodes (every room spans them: a load balancer by socket); by room,
        # a room's members all go to one node (a load balancer that routes by room)
        def node_of(i: int) -> int:
            return (i % rooms if nodes_by == "room" else i // rooms) % nodes

        people = [
            Participant(urls[node_of(i)], f"p{i}", clips, sampled=i == 0) for i in range(n * rooms)
        ]
        started = time.monotonic()
        try:
            for i, person in enumerate(people):
                await person.join(names[i % rooms])

            def complete() -> bool:
                return all(
                    len([f for f in p.video_frames().values() if f > 0]) >= n - 1 for p in people
                )

            try:
                left = started + SETUP_TIMEOUT - time.monotonic()
                await poll_until(complete, left, interval=0.1)
            except TimeoutError:
                got = [len(p.video_frames()) for p in people]
                raise RuntimeError(
                    f"{mode} N={n} x {rooms}: streams per participant {got}"
                ) from None
            setup = time.monotonic() - started
            # set up at full speed, then each media process held to its share for the window
            cap = stack.enter_context(capped(cpu_cap, await _media_pids(http, urls)))
            await asyncio.sleep(warmup)
            me = os.getpid()
            frames0 = [p.video_frames() for p in people]
            vframes0 = [p.publishers["video"]._n for p in people]
            packets0 = sum(p.packets() for p in people)
            recorders: list[Any] = [p.counter for p in people if p.counter is not None]
            recorders += [p.publishers["video"] for p in people]
            for recorder in recorders:
                recorder.record = True
            piped0 = await _piped(http, urls)
            throttled0 = cap.throttled_s() if cap else 0.0
            (cpu0, wcpu0), gen0, t0 = _tree_cpu(pids), _cpu(me), time.monotonic()
            await asyncio.sleep(seconds)
            (cpu1, wcpu1), gen1, t1 = _tree_cpu(pids), _cpu(me), time.monotonic()
            throttled1 = cap.throttled_s() if cap else 0.0
            piped1 = await _piped(http, urls)
            for recorder in recorders:
                recorder.record = False
            latency = sorted(latencies_ms(people))
            frames1 = [p.video_frames() for p in people]
            vframes1 = [p.publishers["video"]._n for p in people]
            packets1 = sum(p.packets() for p in people)
            rss = _rss(pids)
            elapsed = t1 - t0
            worker_cpu = sorted(
                (wcpu1[pid] - wcpu0.get(pid, 0.0)) / elapsed for pid in wcpu1 if pid in wcpu0
            )
            fps = [
                (after[k] - before.get(k, 0)) / elapsed
                for before, after in zip(frames0, frames1, strict=True)
                for k in after
            ]
            sampled = [(frames1[0][k] - frames0[0].get(k, 0)) / elapsed for k in frames1[0]]
            cpu = (cpu1 - cpu0) / elapsed
            packets = (packets1 - packets0) / elapsed
            return Row(
                mode=mode,
                participants=n,
                rooms=rooms,
                nodes_by=nodes_by if nodes > 1 else "-",
                workers=workers,
                nodes=nodes,
                server_cpu_s_per_s=cpu,
                packets_per_s=packets,
                cpu_us_per_packet=cpu * 1e6 / packets if packets else float("nan"),
                fps_publisher=statistics.median(
                    (b - a) / elapsed for a, b in zip(vframes0, vframes1, strict=True)
                ),
                fps_min=min(fps),
                fps_median=statistics.median(fps),
                fps_sampled_min=min(sampled) if sampled else float("nan"),
                latency_ms_p50=statistics.median(latency) if latency else float("nan"),
                latency_ms_p99=latency[int(0.99 * (len(latency) - 1))] if latency else float("nan"),
                loadgen_cpu_s_per_s=(gen1 - gen0) / elapsed,
                rss_kb_per_stream=(rss - rss0) / 1024 / (2 * rooms * n * (n - 1)),
                setup_s=setup,
                piped_packets_per_s=(piped1 - piped0) / elapsed,
                worker_cpu=[round(c, 4) for c in worker_cpu],
                worker_imbalance=(
                    (worker_cpu[-1] - worker_cpu[0]) / worker_cpu[-1]
                    if len(worker_cpu) > 1 and worker_cpu[-1] > 0
                    else 0.0
                ),
                load_1m=os.getloadavg()[0],
                worker_cpu_cap=cpu_cap,
                throttled_s_per_s=(throttled1 - throttled0) / elapsed,
            )
        finally:
            for person in people:
                await person.close()
            stack.close()


def median_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """Medians over rounds per (N, rooms, workers, nodes, mode), with the same run's
    baselines: the floor of one process, and the forwarded packets/s of one worker."""
    groups: dict[tuple[int, int, int, int, str], list[Row]] = {}
    for row in rows:
        case = (row.participants, row.rooms, row.workers, row.nodes, row.mode)
        groups.setdefault(case, []).append(row)
    out: list[dict[str, Any]] = []
    for (n, rooms, workers, nodes, mode), runs in sorted(groups.items()):
        entry: dict[str, Any] = {
            "mode": mode,
            "participants": n,
            "rooms": rooms,
            "workers": workers,
            "nodes": nodes,
            "rounds": len(runs),
        }
        for key, value in vars(runs[0]).items():
            if isinstance(value, float):
                entry[key] = round(statistics.median(getattr(r, key) for r in runs), 4)
        entry["worker_cpu"] = runs[len(runs) // 2].worker_cpu
        entry["nodes_by"] = runs[0].nodes_by
        out.append(entry)
    floors = {
        (e["participants"], e["rooms"]): e["cpu_us_per_packet"]
        for e in out
        if e["mode"] == "floor" and e["workers"] == 1 and e["nodes"] == 1
    }
    single = {
        (e["participants"], e["rooms"]): e
        for e in out
        if e["mode"] == "forward" and e["workers"] == 1 and e["nodes"] == 1
    }
    for entry in out:
        floor = floors.get((entry["participants"], entry["rooms"]))
        entry["floor_us_per_packet"] = floor
        entry["ratio_to_floor"] = round(entry["cpu_us_per_packet"] / floor, 2) if floor else None
        base = single.get((entry["participants"], entry["rooms"]))
        entry["pps_vs_one_worker"] = (
            round(entry["packets_per_s"] / base["packets_per_s"], 2)
            if base and base["packets_per_s"]
            else None
        )
        piped = entry["piped_packets_per_s"]
        entry["us_per_piped_packet"] = (
            round((entry["server_cpu_s_per_s"] - base["server_cpu_s_per_s"]) * 1e6 / piped, 1)
            if base and piped > 0 and entry is not base
            else None
        )
    return out


def capacity(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (mode, workers, nodes): the largest load held at full quality (most forwarded
    streams: rooms x N x (N-1)) and what it forwards, against one worker's in the same run
    (the scaling figure); ``saturated`` is the most it forwarded at any quality."""
    best: dict[tuple[str, int, int], dict[str, Any]] = {}
    for r in rows:
        held = r["fps_min"] >= HOLD_FPS and r["latency_ms_p50"] <= HOLD_LATENCY_MS
        key = (r["mode"], r["workers"], r["nodes"])
        streams = r["rooms"] * r["participants"] * (r["participants"] - 1)
        entry = best.setdefault(
            key,
            {"largest_room": 0, "rooms": 0, "streams": 0, "packets_per_s": 0.0, "saturated": 0.0},
        )
        entry["saturated"] = max(entry["saturated"], r["packets_per_s"])
        if held and streams > entry["streams"]:
            entry |= {
                "largest_room": r["participants"],
                "rooms": r["rooms"],
                "streams": streams,
                "packets_per_s": r["packets_per_s"],
            }
    out = []
    for (mode, workers, nodes), entry in sorted(best.items()):
        one = best.get((mode, 1, 1))
        ratio = (
            round(entry["packets_per_s"] / one["packets_per_s"], 2)
            if one and one["packets_per_s"]
            else None
        )
        out.append(
            {"mode": mode, "workers": workers, "nodes": nodes, **entry, "vs_one_worker": ratio}
        )
    return out


def _table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="One sfu room of N participants, 480p30 VP8 + Opus each (medians)")
    cols = (
        "(rooms x) N",
        "workers x nodes",
        "mode",
        "CPU s/s",
        "pkt/s",
        "µs/pkt",
        "x floor",
        "fps pub",
        "fps min",
        "fps med",
        "loadgen s/s",
        "x 1 worker",
        "piped/s",
        "µs/piped",
        "imbalance",
        "load 1m",
    )
    for col in cols:
        table.add_column(col, justify="right")
    for r in rows:
        ratio = r["ratio_to_floor"]
        table.add_row(
            str(r["participants"]) if r["rooms"] == 1 else f"{r['rooms']} x {r['participants']}",
            f"{r['workers']}x{r['nodes']}",
            r["mode"],
            f"{r['server_cpu_s_per_s']:.3f}",
            f"{r['packets_per_s']:.0f}",
            f"{r['cpu_us_per_packet']:.1f}",
            "-" if ratio is None else f"{ratio:.2f}",
            f"{r['fps_publisher']:.1f}",
            f"{r['fps_min']:.1f}",
            f"{r['fps_median']:.1f}",
            f"{r['loadgen_cpu_s_per_s']:.2f}",
            "-" if r["pps_vs_one_worker"] is None else f"{r['pps_vs_one_worker']:.2f}",
            f"{r['piped_packets_per_s']:.0f}",
            "-" if r["us_per_piped_packet"] is None else f"{r['us_per_piped_packet']:.1f}",
            f"{r['worker_imbalance']:.0%}",
            f"{r['load_1m']:.1f}",
        )
    console = Console(width=170)
    console.print(table)
    held = Table(
        title=f"Largest room held (every stream >= {HOLD_FPS:.0f} fps, "
        f"p50 latency <= {HOLD_LATENCY_MS:.0f} ms)"
    )
    for col in ("mode", "workers x nodes", "rooms x N", "pkt/s", "x 1 worker", "max pkt/s"):
        held.add_column(col, justify="right")
    for c in capacity(rows):
        held.add_row(
            c["mode"],
            f"{c['workers']}x{c['nodes']}",
            f"{c['rooms']} x {c['largest_room']}" if c["largest_room"] else "-",
            f"{c['packets_per_s']:.0f}",
            "-" if c["vs_one_worker"] is None else f"{c['vs_one_worker']:.2f}",
            f"{c['saturated']:.0f}",
        )
    console.print(held)


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, style in (("forward", "o-"), ("floor", "^:")):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["participants"])
        if not mine:
            continue
        ns = [r["participants"] for r in mine]
        axes[0].plot(ns, [r["server_cpu_s_per_s"] for r in mine], style, label=mode)
        axes[1].plot(ns, [r["cpu_us_per_packet"] for r in mine], style, label=mode)
        axes[2].plot(ns, [r["fps_min"] for r in mine], style, label=f"{mode} min")
    axes[0].axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="one core")
    for ax, title in zip(
        axes,
        ("server CPU-seconds per second", "server CPU µs per forwarded packet", "subscriber fps"),
        strict=True,
    ):
        ax.set_title(title)
        ax.set_xlabel("participants")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def serve(mode: str) -> None:
    """The server process of one case: ``python -m signaling``, with the floor if asked."""
    if mode == "floor":
        from benchmarks.fanout import install_floor

        install_floor()
    from signaling.__main__ import main as signaling_main

    signaling_main([])


async def _main(args: argparse.Namespace) -> list[Row]:
    # SIGTERM cancels the run, so that each case's servers are stopped on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    clips = {
        "video": packetize(
            encode_vp8_clip(width=640, height=480, fps=30, seconds=4.0, bitrate=1_000_000)
        ),
        "audio": packetize(encode_opus_clip(seconds=2.0)),
    }
    rows: list[Row] = []
    workers = [int(x) for x in args.workers.split(",") if x]
    nodes = [int(x) for x in args.nodes.split(",") if x]
    rooms = [int(x) for x in args.rooms.split(",") if x]
    cases = [
        (n, r, mode, w, k)
        for n in [int(x) for x in args.participants.split(",") if x]
        for r in rooms
        for mode in [m for m in args.modes.split(",") if m]
        for w in workers
        for k in nodes
        if mode != "floor" or (w, k) == (1, 1)  # the floor is one process's: no pipe twin
    ]
    for _ in range(args.rounds):
        for n, r, mode, w, k in cases:
            try:
                row = await run_case(
                    mode,
                    n,
                    args.seconds,
                    args.warmup,
                    clips,
                    workers=w,
                    nodes=k,
                    cpu_cap=args.worker_cpu,
                    rooms=r,
                    nodes_by=args.nodes_by,
                )
            except Exception as exc:  # one case's failure is not the run's
                print(f"# {mode} N={n} x {r} {w}x{k} failed: {exc!r}", flush=True)
                continue
            print(json.dumps(vars(row)), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.room", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--participants", default="4,8,12,16,20", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="runs per case (medians)")
    parser.add_argument("--modes", default=",".join(MODES), help="forward and/or floor")
    parser.add_argument(
        "--rooms", default="1", help="comma-separated counts of rooms of N (aggregate load)"
    )
    parser.add_argument("--workers", default="1", help="comma-separated MEDIA_WORKERS values")
    parser.add_argument("--nodes", default="1", help="comma-separated server counts (Redis)")
    parser.add_argument(
        "--nodes-by",
        choices=("member", "room"),
        default="member",
        help="member: each room's members alternate between nodes; room: a room on one node",
    )
    parser.add_argument(
        "--worker-cpu",
        type=float,
        help="hold each media process to this share of a core during the window (cgroup quota)",
    )
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--plot", help="write a PNG plot to this file")
    parser.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rows = median_rows(uvloop.run(_main(args)))
    _table(rows)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                {
                    "started": started,
                    "machine": machine(),
                    "argv": sys.argv,
                    "rows": rows,
                    "capacity": capacity(rows),
                },
                f,
                indent=2,
            )
    if args.plot:
        _plot(rows, args.plot)


if __name__ == "__main__":
    main()
