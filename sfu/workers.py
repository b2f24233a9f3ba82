"""Handles on media workers: a worker process behind its channel, or the plane in-process.

`sfu.pool.WorkerPool` drives both the same way: ``call`` a command and await its reply;
events come back, in order, through the pool's ``on_worker_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .channel import LIMIT, frame, parse, read_line
from .commands import Command, Event, Reply
from .config import MediaConfig
from .plane import MediaPlane
from .port import LocalMedia
from .proc import cpu_seconds, rss

if TYPE_CHECKING:
    from .pool import WorkerPool

logger = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[None]]
CALL_TIMEOUT_S = 30.0
STATS_INTERVAL_S = 1.0
Address = tuple[str, int]


@dataclass(frozen=True)
class PoolConfig:
    workers: int
    media: MediaConfig = field(default_factory=MediaConfig)
    pipe_host: str = "127.0.0.1"
    pipe_advertise: str | None = None
    placement: Literal["load", "spread"] = "load"
    """``spread`` puts each joining participant on the next worker (to test rooms that span
    workers); ``load`` keeps rooms together while they fit."""
    node: str = ""
    """This node's id, when rooms may span nodes (see `sfu.pool.Bus`)."""
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
        self.cpu_s = 0.0
        self.pipes = 0
        self.rss = 0
        self.last_stats: dict[str, Any] = {"rooms": {}, "total": {}}
        self.last_counters: dict[str, dict[str, int]] = {}
        self.restarts = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._hello: asyncio.Future[dict[str, Any]] | None = None

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
        self.cpu_s = float(message.get("cpu_s", 0.0))
        self.pipes = int(message["pipes"])
        self.rss = int(message["rss"])
        self.last_stats = message["stats"]
        self.last_counters = message["counters"]

    async def _gone(self) -> None:
        if self.state == "stopping":
            return
        self.state = "down"
        if self._hello is not None and not self._hello.done():
            # Died while starting: `start` raises, and whoever started it decides.
            self._hello.set_exception(WorkerGone(f"media worker {self.index} died starting"))
            self._events.put_nowait(None)
            return
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerGone(f"media worker {self.index} died"))
        self._events.put_nowait(None)
        await self.pool.worker_died(self)

    def stats(self) -> dict[str, Any]:
        return self.last_stats

    def counters(self) -> dict[str, dict[str, int]]:
        return self.last_counters

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
        """What /health, /metrics and Prometheus show of this worker (as of its last report)."""
        return {
            "index": self.index,
            "pid": self.pid,
            "state": _state(self.state, self.restarts),
            "participants": len(self.participants),
            "peer_connections": self.last_stats.get("total", {}).get("peer_connections", 0),
            "forwarded_packets_per_s": round(self.packets_per_s, 1),
            "cpu_s_per_s": round(self.cpu_s_per_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "pipes": self.pipes,
            "rss": self.rss,
            "restarts": self.restarts,
        }


def _state(state: str, restarts: int) -> str:
    """``starting`` again after a death is ``restarting`` (its participants are elsewhere)."""
    return "restarting" if state == "starting" and restarts else state


class InlineWorker:
    """The one plane of a single-process server (``MEDIA_WORKERS=1``): no process, the
    same handle."""

    def __init__(self, index: int, pool: WorkerPool) -> None:
        self.index = index
        self.pool = pool
        self.pipe: Address = ("", 0)
        self.pid = 0
        self.state = "starting"
        self.participants: set[tuple[str, str]] = set()
        self.restarts = 0
        self.plane = MediaPlane(pool.config.media)
        self.port = LocalMedia(self.plane, self._queue_event)
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.packets_per_s = 0.0
        self.cpu_s_per_s = 0.0

    async def _sample(self) -> None:
        """Once a second, as a worker process reports itself (the CPU is the whole server
        process's: signaling and media share it)."""
        last_packets, last_cpu, last_at = self._forwarded(), cpu_seconds(), time.monotonic()
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            now, cpu, packets = time.monotonic(), cpu_seconds(), self._forwarded()
            elapsed = max(now - last_at, 1e-6)
            self.packets_per_s = (packets - last_packets) / elapsed
            self.cpu_s_per_s = (cpu - last_cpu) / elapsed
            last_packets, last_cpu, last_at = packets, cpu, now

    def _forwarded(self) -> int:
        return sum(self.plane.counters().get("forwarded_packets", {}).values())

    async def _queue_event(self, event: Event) -> None:
        self._events.put_nowait(event)

    async def start(self) -> None:
        import os

        config = self.pool.config
        self.pipe = await self.plane.open_pipe(config.pipe_host, config.pipe_advertise)
        self.pid = os.getpid()
        self.state = "up"
        self._task = asyncio.create_task(self._deliver())
        self._sampler = asyncio.create_task(self._sample())

    async def _deliver(self) -> None:
        while (event := await self._events.get()) is not None:
            try:
                await self.pool.on_worker_event(self, event)
            except Exception:
                logger.exception("media plane: event %s failed", event.name)

    async def call(self, command: Command) -> Reply:
        return await self.port.run(command)

    async def stop(self) -> None:
        self.state = "stopping"
        self._events.put_nowait(None)
        if self._sampler is not None:
            self._sampler.cancel()
        await self.port.close()
        if self.plane.pipe is not None:
            self.plane.pipe.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def stats(self) -> dict[str, Any]:
        return self.plane.stats()

    def counters(self) -> dict[str, dict[str, int]]:
        return self.plane.counters()

    def status(self) -> dict[str, Any]:
        total = self.plane.stats()["total"]
        return {
            "index": self.index,
            "pid": self.pid,
            "state": self.state,
            "participants": len(self.participants),
            "peer_connections": total["peer_connections"],
            "forwarded_packets_per_s": round(self.packets_per_s, 1),
            "cpu_s_per_s": round(self.cpu_s_per_s, 3),
            "cpu_s": round(cpu_seconds(), 3),
            "pipes": self.plane.pipes.count(),
            "rss": rss(),
            "restarts": 0,
        }
