"""One way to run the server for benchmarks and tests: a process on a free port, stopped after.

The server prints ``Listening on http://HOST:PORT`` once it accepts connections; this waits
for that line (bounded), keeps draining its output so the pipe never fills, and on exit
sends SIGTERM, then SIGKILL if it does not stop within ten seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening on (http://\S+)")
SCRUB_ENV = ("REDIS_URL", "JWT_SECRET", "AUTH_VERIFY_URL", "MEMBERSHIP_URL", "PORT", "HOST")
"""Settings of the caller's environment that would take a server out of its defaults."""


class ServerExited(RuntimeError):
    """The server stopped before it listened."""


@dataclass
class Server:
    url: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the node dies without any cleanup."""
        self.process.send_signal(signal.SIGKILL)


@contextlib.asynccontextmanager
async def running_server(
    *args: str,
    env: Mapping[str, str] | None = None,
    module: str = "signaling",
    cwd: Path = ROOT,
    scrub: bool = True,
    show_stderr: bool = False,
    startup_timeout: float = 30.0,
) -> AsyncIterator[Server]:
    """``python -m <module> <args>`` on 127.0.0.1, any free port, with ``env`` on top."""
    base = {k: v for k, v in os.environ.items() if not (scrub and k in SCRUB_ENV)}
    environment = {
        **base,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "WARNING",
        **{key.upper(): str(value) for key, value in (env or {}).items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=str(cwd),
        env=environment,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=None if show_stderr else asyncio.subprocess.DEVNULL,
    )
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stdout is not None
        url = await asyncio.wait_for(_listening(process.stdout), startup_timeout)
        drain = asyncio.create_task(process.stdout.read())
        yield Server(url, process)
    finally:
        if drain is not None:
            drain.cancel()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _listening(stream: asyncio.StreamReader) -> str:
    while line := await stream.readline():
        match = LISTENING.search(line.decode(errors="replace"))
        if match:
            return match.group(1)
    raise ServerExited("server exited before listening")
