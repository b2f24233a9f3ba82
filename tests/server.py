"""Servers for tests: the real `python -m signaling` process, or the same app in-process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from signaling.app import Application
from signaling.config import Settings

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening on (http://\S+)")


@dataclass
class ServerProcess:
    url: str
    process: asyncio.subprocess.Process

    def kill(self) -> None:
        """SIGKILL: the node dies without any cleanup."""
        self.process.send_signal(signal.SIGKILL)


@asynccontextmanager
async def running_server(
    *args: str, startup_timeout: float = 20.0, stderr: IO[bytes] | None = None, **env: str
) -> AsyncIterator[ServerProcess]:
    """Starts `python -m signaling --port 0` with `env` and yields once it accepts connections.

    The history is in memory unless `env` names a `DATABASE_URL` (tests never write into the
    checkout's `./data`). `stderr`: a file for the server's log (inherited otherwise).
    """
    environment = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": "memory",
        "MEDIA_WORKERS": "1",  # tests that want worker processes ask for them
        **{key.upper(): str(value) for key, value in env.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signaling",
        *args,
        cwd=str(ROOT),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    try:
        assert process.stdout is not None
        url = await asyncio.wait_for(_read_url(process.stdout), startup_timeout)
        drain = asyncio.create_task(process.stdout.read())
        yield ServerProcess(url, process)
        drain.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _read_url(stream: asyncio.StreamReader) -> str:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("server exited before listening")
        match = LISTENING.search(line.decode())
        if match:
            return match.group(1)


@dataclass
class InProcess:
    url: str
    application: Application


@asynccontextmanager
async def inprocess_server(**overrides: Any) -> AsyncIterator[InProcess]:
    """The same application on an ephemeral port in this event loop (fast, inspectable).

    The history is in memory unless `overrides` names a `database_url`."""
    overrides.setdefault("database_url", "memory")
    overrides.setdefault("media_workers", 1)
    settings = Settings(_env_file=None, host="127.0.0.1", port=0, **overrides)  # type: ignore[call-arg]
    application = Application(settings)
    runner = web.AppRunner(application.web, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield InProcess(f"http://127.0.0.1:{port}", application)
    finally:
        await runner.cleanup()
