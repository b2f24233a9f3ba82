"""Media workers: several processes, one media plane each, driven as one `MediaPort`.

The pool places each joining participant on a worker (the least loaded by forwarded
packets/s, keeping a room on one worker while it fits), forwards every command for that
participant to its worker, and keeps rooms that span workers whole: each worker learns of
the participants elsewhere (`RemoteJoin`), of what they publish (`RemoteTracks`) and pipes
its own publishers' tracks to every other worker of the room (`PipeTo`). A worker that
dies is started again; its participants are told their media was lost (signaling offers
them a fresh connection, placed on a live worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from . import metrics
from .channel import LIMIT, frame, parse, read_line
from .commands import (
    CloseRoom,
    Command,
    Done,
    Event,
    Join,
    JoinMesh,
    Leave,
    MediaLost,
    PipeTo,
    Published,
    Refused,
    RemoteJoin,
    RemoteLeave,
    RemoteTracks,
    Reply,
    Unpipe,
)
from .plane import MediaConfig

logger = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[None]]
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PoolConfig:
    workers: int
    media: MediaConfig = field(default_factory=MediaConfig)
    pipe_host: str = "127.0.0.1"
    pipe_advertise: str | None = None
    placement: Literal["load", "spread"] = "load"
    """``spread`` puts each joining participant on the next worker (to test rooms that span
    workers); ``load`` keeps rooms together while they fit."""
    capacity_pps: float = 30_000.0
    """Forwarded packets/s a worker takes before a room spills onto another worker."""
    publisher_pps: float = 150.0
    """What one publisher adds per subscriber (480p30 VP8 + Opus), for placement."""


class WorkerGone(Exception):
    """The worker died before it replied."""


class Worker:
    """One media worker process and its channel."""

    def __init__(self, index: int, pool: WorkerPool) -> None:
        self.index = index
        self.pool = pool
        self.process: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.pipe: tuple[str, int] = ("", 0)
        self.pid = 0
        self.state = "starting"
        self.participants: set[tuple[str, str]] = set()
        self.packets_per_s = 0.0
        self.cpu_s_per_s = 0.0
        self.estimate = 0.0
        """Load placed since the last report (packets/s), so placement sees it at once."""
        self.pipes = 0
        self.rss = 0
        self.stats: dict[str, Any] = {"rooms": {}, "total": {}}
        self.counters: dict[str, dict[str, int]] = {}
        self.restarts = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._hello: asyncio.Future[dict[str, Any]] | None = None

    @property
    def load(self) -> float:
        return self.packets_per_s + self.estimate

    async def start(self) -> None:
        config = self.pool.config
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        media = dataclasses.asdict(config.media)
        source = media.pop("source", None)
        settings = {
            "media": media,
            "source": source,
            "pipe_host": config.pipe_host,
            "pipe_advertise": config.pipe_advertise,
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sfu.worker",
            "--fd",
            str(child.fileno()),
            "--config",
            orjson.dumps(settings).decode(),
            pass_fds=(child.fileno(),),
            stdin=asyncio.subprocess.DEVNULL,
        )
        child.close()
        reader, self.writer = await asyncio.open_unix_connection(sock=parent, limit=LIMIT)
        self._hello = asyncio.get_running_loop().create_future()
        self._tasks = [
            asyncio.create_task(self._read(reader)),
            asyncio.create_task(self._deliver()),
        ]
        hello = await asyncio.wait_for(self._hello, 30)
        self.pipe = (str(hello["pipe"][0]), int(hello["pipe"][1]))
        self.pid = int(hello["pid"])
        self.state = "up"

    async def call(self, command: Command) -> Reply:
        if self.writer is None or self.state != "up":
            raise WorkerGone(f"media worker {self.index} is not running")
        ident = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        self.writer.write(frame(ident, command))
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT_S)
        finally:
            self._pending.pop(ident, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while (line := await read_line(reader)) is not None:
            try:
                ident, message = parse(line)
            except ValueError:
                logger.warning("media worker %d wrote a line nobody can read", self.index)
                continue
            if isinstance(message, dict):
                if message["t"] == "hello" and self._hello is not None and not self._hello.done():
                    self._hello.set_result(message)
                elif message["t"] == "stats":
                    self._stats(message)
            elif ident:
                future = self._pending.get(ident)
                if future is not None and not future.done():
                    future.set_result(message)  # type: ignore[arg-type]
            elif isinstance(message, Event):
                self._events.put_nowait(message)
        await self._gone()

    async def _deliver(self) -> None:
        """Events in the order the worker sent them, never blocking the reader (an event
        may make the pool call this very worker)."""
        while (event := await self._events.get()) is not None:
            try:
                await self.pool.on_worker_event(self, event)
            except Exception:
                logger.exception("media worker %d: event %s failed", self.index, event.name)

    def _stats(self, message: dict[str, Any]) -> None:
        self.packets_per_s = float(message["packets_per_s"])
        self.cpu_s_per_s = float(message["cpu_s_per_s"])
        self.pipes = int(message["pipes"])
        self.rss = int(message["rss"])
        self.stats = message["stats"]
        self.counters = message["counters"]
        self.estimate = 0.0

    async def _gone(self) -> None:
        if self.state == "stopping":
            return
        self.state = "down"
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"media worker {self.index} died"))
        self._events.put_nowait(None)
        await self.pool.worker_died(self)

    async def stop(self) -> None:
        self.state = "stopping"
        if self.writer is not None:
            self.writer.close()
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._events.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def status(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "state": self.state,
            "participants": len(self.participants),
            "peer_connections": self.stats.get("total", {}).get("peer_connections", 0),
            "packets_per_s": round(self.packets_per_s, 1),
            "cpu_s_per_s": round(self.cpu_s_per_s, 3),
            "pipes": self.pipes,
            "rss": self.rss,
            "restarts": self.restarts,
        }


class WorkerPool:
    """``config.workers`` media workers behind one `MediaPort`."""

    def __init__(self, config: PoolConfig, on_event: EventSink) -> None:
        self.config = config
        self.on_event = on_event
        self.workers = [Worker(i, self) for i in range(config.workers)]
        self._where: dict[tuple[str, str], Worker] = {}
        self._rooms: dict[str, dict[str, Worker]] = {}
        self._tracks: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._next = itertools.count()
        self._closing = False
        metrics.register(self)

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    # ------------------------------------------------------------------ commands

    async def run(self, command: Command) -> Reply:
        try:
            return await self._run(command)
        except (WorkerGone, TimeoutError) as exc:
            logger.warning("media command %s: %s", command.name, exc)
            return Refused("the media server restarted; the connection will be offered again")

    async def _run(self, command: Command) -> Reply:
        room, who = command.room, command.participant
        if isinstance(command, Join | JoinMesh):
            return await self._join(command)
        if isinstance(command, CloseRoom):
            for host in set(self._rooms.pop(room, {}).values()):
                await host.call(command)
            for key in [k for k in self._where if k[0] == room]:
                self._forget(key)
            return Done()
        worker = self._where.get((room, who))
        if worker is None:
            return Refused(f"{who!r} is not in media room {room!r}")
        if isinstance(command, Leave):
            return await self._leave(worker, room, who)
        return await worker.call(command)

    def _place(self, room: str) -> Worker:
        live = [w for w in self.workers if w.state == "up"] or self.workers
        if self.config.placement == "spread":
            return live[next(self._next) % len(live)]
        members = self._rooms.get(room, {})
        weight = self.config.publisher_pps * max(1, len(members))
        hosting = sorted(
            {w for w in members.values() if w.state == "up"},
            key=lambda w: -sum(1 for m in members.values() if m is w),
        )
        for worker in hosting:
            if worker.load + weight <= self.config.capacity_pps:
                return worker
        return min(live, key=lambda w: w.load)

    async def _join(self, command: Join | JoinMesh) -> Reply:
        room, who = command.room, command.participant
        old = self._where.get((room, who))
        if old is not None:
            await self._leave(old, room, who)
        worker = self._place(room)
        members = self._rooms.setdefault(room, {})
        hosts = set(members.values())
        if worker not in hosts:
            # A worker new to the room learns everyone already in it, and gets their tracks.
            for other, home in members.items():
                await worker.call(RemoteJoin(room, other))
                tracks = self._tracks.get((room, other))
                if tracks:
                    await worker.call(RemoteTracks(room, other, home.pipe, tracks))
                    await home.call(PipeTo(room, other, worker.pipe))
        members[who] = worker
        self._where[(room, who)] = worker
        worker.participants.add((room, who))
        worker.estimate += self.config.publisher_pps * 2 * len(members)
        reply = await worker.call(command)
        for host in hosts - {worker}:
            await host.call(RemoteJoin(room, who))
        return reply

    async def _leave(self, worker: Worker, room: str, who: str) -> Reply:
        self._forget((room, who))
        reply = await worker.call(Leave(room, who))
        members = self._rooms.get(room, {})
        for host in set(members.values()) - {worker}:
            await host.call(RemoteLeave(room, who))
        if worker not in members.values():
            # The worker hosts nobody of this room now: nothing is piped to it any more.
            for other, home in members.items():
                with contextlib.suppress(WorkerGone):
                    await home.call(Unpipe(room, other, worker.pipe))
            await worker.call(CloseRoom(room))
        if not members:
            self._rooms.pop(room, None)
        return reply

    def _forget(self, key: tuple[str, str]) -> None:
        room, who = key
        worker = self._where.pop(key, None)
        if worker is not None:
            worker.participants.discard(key)
        members = self._rooms.get(room, {})
        members.pop(who, None)
        self._tracks.pop(key, None)

    # ------------------------------------------------------------------ events

    async def on_worker_event(self, worker: Worker, event: Event) -> None:
        if isinstance(event, Published):
            await self._published(worker, event)
            return
        if self._where.get((event.room, event.participant)) is not worker:
            return  # from a connection this participant no longer has here
        await self.on_event(event)

    async def _published(self, worker: Worker, event: Published) -> None:
        key = (event.room, event.participant)
        if self._where.get(key) is not worker:
            return
        self._tracks[key] = event.tracks
        for host in set(self._rooms.get(event.room, {}).values()) - {worker}:
            await host.call(RemoteTracks(event.room, event.participant, worker.pipe, event.tracks))
            await worker.call(PipeTo(event.room, event.participant, host.pipe))

    async def worker_died(self, worker: Worker) -> None:
        if self._closing:
            return
        lost = sorted(worker.participants)
        logger.warning(
            "media worker %d (pid %d) died with %d participants; restarting it",
            worker.index,
            worker.pid,
            len(lost),
        )
        dead_pipe = worker.pipe
        for room, who in lost:
            self._forget((room, who))
            for host in set(self._rooms.get(room, {}).values()):
                with contextlib.suppress(WorkerGone, TimeoutError):
                    await host.call(RemoteLeave(room, who))
                    for other, home in self._rooms.get(room, {}).items():
                        if home is host:
                            await host.call(Unpipe(room, other, dead_pipe))
        worker.restarts += 1
        worker.participants.clear()
        fresh = Worker(worker.index, self)
        fresh.restarts = worker.restarts
        self.workers[worker.index] = fresh
        try:
            await fresh.start()
        except Exception:
            logger.exception("media worker %d did not come back", worker.index)
        for room, who in lost:
            await self.on_event(MediaLost(room, who, "failed"))

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        rooms: dict[str, Any] = {}
        total = {
            "peer_connections": 0,
            "forwarded_streams": 0,
            "packets": 0,
            "keyframe_requests": 0,
        }
        for worker in self.workers:
            for room_id, entry in worker.stats.get("rooms", {}).items():
                merged = rooms.setdefault(room_id, {})
                for key, value in entry.items():
                    merged[key] = merged.get(key, 0) + value
            for key in total:
                total[key] += worker.stats.get("total", {}).get(key, 0)
        return {"rooms": rooms, "total": total, "workers": [w.status() for w in self.workers]}

    def counters(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for worker in self.workers:
            for name, by_kind in worker.counters.items():
                for kind, value in by_kind.items():
                    out.setdefault(name, {})[kind] = out.get(name, {}).get(kind, 0) + value
        return out

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(w.stop() for w in self.workers))


def default_workers() -> int:
    return os.cpu_count() or 1
