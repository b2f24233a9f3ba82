"""The admin commands a namespace is made of, and what to say when the machine refuses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

TOOLS = {"ip": "iproute2", "tc": "iproute2", "nft": "nftables"}
"""Command -> the Debian package that brings it (`make test-deps` installs them)."""
COMMAND_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 5.0


class NetnsError(RuntimeError):
    """This machine cannot make, shape or remove a namespace; the message says why."""


def command(argv: Sequence[str], *, stdin: str | None = None) -> str:
    """Runs one admin command; its stdout, or NetnsError with the command and its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        tool = argv[0]
        raise NetnsError(
            f"`{tool}` is not installed: install Debian's {TOOLS.get(tool, tool)} package "
            "(`make test-deps` does)"
        ) from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(argv)}` did not finish in {COMMAND_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        why = done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}"
        raise NetnsError(f"the kernel or the tool refused `{' '.join(argv)}`: {why}")
    return done.stdout


def check_capable() -> None:
    """Raises NetnsError unless this process can make namespaces (root, ip, tc, nft)."""
    if os.geteuid() != 0:
        raise NetnsError(
            "network namespaces need root (CAP_NET_ADMIN); this process runs as uid "
            f"{os.geteuid()}: run the tests as root, as CI does"
        )
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        packages = sorted({TOOLS[t] for t in missing})
        raise NetnsError(
            f"{', '.join(f'`{t}`' for t in missing)} not found on PATH: install Debian's "
            f"{' and '.join(packages)} (`make test-deps` does)"
        )


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return False


def link_exists(name: str) -> bool:
    """Whether the host has a network interface called `name`."""
    return Path(f"/sys/class/net/{name}").exists()


def kill_all(namespace: str) -> None:
    """SIGKILLs every process left in `namespace` and waits (bounded) until they are gone:
    a namespace with a process in it outlives `ip netns del`, and so does its veth pair."""
    pids = [int(p) for p in command(["ip", "netns", "pids", namespace]).split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    if left:
        raise NetnsError(f"processes {left} in namespace {namespace} did not die on SIGKILL")
