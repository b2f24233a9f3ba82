"""Servers for tests: the real `python -m signaling` process, or the same app in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO, Any

from aiohttp import web

import devtools.server
from devtools.server import ROOT, ServerProcess
from signaling.app import Application
from signaling.config import Settings


@asynccontextmanager
async def running_server(
    *args: str, startup_timeout: float = 20.0, stderr: IO[bytes] | None = None, **env: str
) -> AsyncIterator[ServerProcess]:
    """Starts `python -m signaling --port 0` with `env` and yields once it accepts connections.

    The history is in memory unless `env` names a `DATABASE_URL` (tests never write into the
    checkout's `./data`). `stderr`: a file for the server's log (inherited otherwise).
    """
    defaults = {"DATABASE_URL": "memory", "MEDIA_WORKERS": "1"}  # workers: tests ask for them
    async with devtools.server.running_server(
        *args,
        env={**defaults, **{key.upper(): value for key, value in env.items()}},
        scrub=(),
        stderr=stderr,
        startup_timeout=startup_timeout,
    ) as server:
        yield server


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


__all__ = ["ROOT", "InProcess", "ServerProcess", "inprocess_server", "running_server"]
