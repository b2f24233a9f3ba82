"""One way to run a server for tests and benchmarks: a process on a free port, stopped after.

The server prints ``Listening on http://HOST:PORT`` once it accepts connections (see
`signaling.__main__`); the runners wait for that line (bounded), keep draining the output so
the pipe never fills, and on exit send SIGTERM, then SIGKILL if it does not stop within ten
seconds. `running_server` is for asyncio code, `running_command` for blocking code (a pytest
fixture without a loop, a benchmark driving Node load generators).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"Listening on (http://\S+)")
SCRUB_ENV = ("REDIS_URL", "JWT_SECRET", "AUTH_VERIFY_URL", "MEMBERSHIP_URL", "PORT", "HOST")
"""Settings of the caller's environment that would take a server out of its defaults."""
STOP_TIMEOUT_S = 10.0

Stderr = int | IO[Any] | None
"""Where the server's log goes: a file, `subprocess.DEVNULL`, or None to inherit ours."""


class ServerExited(RuntimeError):
    """The server stopped before it listened."""


@dataclass
class ServerProcess:
    """A server (started by `running_server`) that printed its Listening line."""

    url: str
    process: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: the node dies without any cleanup."""
        self.process.send_signal(signal.SIGKILL)


@dataclass
class CommandProcess:
    """A command (started by `running_command`) that printed its Listening line."""

    url: str
    process: subprocess.Popen[str]


def server_env(
    env: Mapping[str, str] | None = None, scrub: Collection[str] = SCRUB_ENV
) -> dict[str, str]:
    """Our environment minus `scrub`, on 127.0.0.1 port 0, quiet, `env` (upper-cased) on top."""
    return {
        **{k: v for k, v in os.environ.items() if k not in scrub},
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "WARNING",
        **{key.upper(): str(value) for key, value in (env or {}).items()},
    }


def listening_url(line: str) -> str | None:
    """The URL of a ``Listening on URL`` line, else None."""
    match = LISTENING.search(line)
    return match.group(1) if match else None


@contextlib.asynccontextmanager
async def running_server(
    *args: str,
    env: Mapping[str, str] | None = None,
    module: str = "signaling",
    cwd: Path = ROOT,
    scrub: Collection[str] = SCRUB_ENV,
    stderr: Stderr = subprocess.DEVNULL,
    startup_timeout: float = 30.0,
) -> AsyncIterator[ServerProcess]:
    """``python -m <module> <args>`` on 127.0.0.1, any free port, with ``env`` on top."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=str(cwd),
        env=server_env(env, scrub),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    drain: asyncio.Task[bytes] | None = None
    try:
        assert process.stdout is not None
        url = await asyncio.wait_for(_listening(process.stdout), startup_timeout)
        drain = asyncio.create_task(process.stdout.read())
        yield ServerProcess(url, process)
    finally:
        if drain is not None:
            drain.cancel()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _listening(stream: asyncio.StreamReader) -> str:
    while line := await stream.readline():
        url = listening_url(line.decode(errors="replace"))
        if url is not None:
            return url
    raise ServerExited("server exited before listening")


@contextlib.contextmanager
def running_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path = ROOT,
    stderr: Stderr = subprocess.DEVNULL,
    startup_timeout: float = 30.0,
) -> Iterator[CommandProcess]:
    """The blocking twin of `running_server` for any command (`argv`) that prints the line.

    Raises `TimeoutError` when no Listening line came within `startup_timeout`,
    `ServerExited` when the command exited first.
    """
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = pump_lines(process.stdout)
        deadline = time.monotonic() + startup_timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no Listening line in {startup_timeout:.0f} s") from None
            if line is None:
                raise ServerExited(f"server exited ({process.wait()}) before listening")
            url = listening_url(line)
        yield CommandProcess(url, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pump_lines(stream: IO[str]) -> queue.Queue[str | None]:
    """Lines of a pipe into a queue (None at its end) so reads time out and it never fills."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


__all__ = [
    "LISTENING",
    "ROOT",
    "SCRUB_ENV",
    "CommandProcess",
    "ServerExited",
    "ServerProcess",
    "listening_url",
    "pump_lines",
    "running_command",
    "running_server",
    "server_env",
]
