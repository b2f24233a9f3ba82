"""A media worker: one process, one media plane, one pipe socket.

    python -m sfu.worker --fd N --config JSON

The signaling process starts it with one end of a socket pair as ``fd`` and drives it with
`sfu.commands` over `sfu.channel`; the worker never imports Socket.IO. It says hello with
its pipe address, reports its load once a second, and exits when the channel closes
(its parent is gone) or on SIGTERM, closing every connection it holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import orjson

from .channel import LIMIT, frame, frame_raw, parse, read_line
from .commands import Command, Event
from .config import MediaConfig
from .plane import MediaPlane
from .port import LocalMedia
from .proc import cpu_seconds, rss
from .source import SourceConfig

logger = logging.getLogger("sfu.worker")
STATS_INTERVAL_S = 1.0


async def serve(fd: int, settings: dict[str, Any]) -> None:
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LIMIT)
    source = settings.pop("source", None)
    config = MediaConfig(**settings.pop("media"), source=SourceConfig(**source) if source else None)
    plane = MediaPlane(config)
    address = await plane.open_pipe(settings["pipe_host"], settings.get("pipe_advertise"))

    async def on_event(event: Event) -> None:
        writer.write(frame(0, event))

    port = LocalMedia(plane, on_event)
    writer.write(frame_raw(0, {"t": "hello", "pipe": list(address), "pid": os.getpid()}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    reporter = asyncio.create_task(_report(plane, writer))
    gc.freeze()  # start-up objects never die: keep them out of every collection
    reading = asyncio.create_task(_commands(reader, writer, port))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for task in (reporter, reading, stopping):
        task.cancel()
    with contextlib.suppress(Exception):
        await port.close()
    if plane.pipe is not None:
        plane.pipe.close()
    writer.close()


async def _commands(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: LocalMedia
) -> None:
    """One command at a time, in order (as signaling handles one socket's events)."""
    while (line := await read_line(reader)) is not None:
        try:
            ident, message = parse(line)
        except (ValueError, orjson.JSONDecodeError):
            logger.warning("media worker: a line it cannot read from its parent")
            continue
        if not isinstance(message, Command):
            continue
        try:
            reply = await port.run(message)
        except Exception:
            logger.exception("media worker: %s failed", message.name)
            from .commands import Refused

            reply = Refused("the media server could not do that")
        writer.write(frame(ident, reply))
        await writer.drain()


async def _report(plane: MediaPlane, writer: asyncio.StreamWriter) -> None:
    """Once a second: what this worker carries, for placement, /metrics and Prometheus."""
    last_packets, last_cpu, last_at = 0, cpu_seconds(), time.monotonic()
    while True:
        await asyncio.sleep(STATS_INTERVAL_S)
        now, cpu = time.monotonic(), cpu_seconds()
        stats = plane.stats()
        counters = plane.counters()
        packets = sum(counters["forwarded_packets"].values())
        elapsed = max(now - last_at, 1e-6)
        writer.write(
            frame_raw(
                0,
                {
                    "t": "stats",
                    "stats": stats,
                    "counters": counters,
                    "packets_per_s": (packets - last_packets) / elapsed,
                    "cpu_s_per_s": (cpu - last_cpu) / elapsed,
                    "cpu_s": cpu,
                    "pipes": plane.pipes.count(),
                    "rss": rss(),
                },
            )
        )
        last_packets, last_cpu, last_at = packets, cpu, now


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sfu.worker", description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="JSON: media, source, pipe_host")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    runner(serve(args.fd, orjson.loads(args.config)))


if __name__ == "__main__":
    main()
