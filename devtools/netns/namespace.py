"""`Namespace`: a network namespace on a veth pair to the host, shaped and filtered."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import ipaddress
import itertools
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from devtools.netns.shaping import (
    DEFAULT_QUEUE_MS,
    UDP_BLOCK_RULE,
    TokenBucket,
    filter_table,
    reset_table,
    token_bucket,
    udp_loss_rule,
)
from devtools.netns.system import (
    COMMAND_TIMEOUT_S,
    NetnsError,
    check_capable,
    command,
    kill_all,
    link_exists,
)

PREFIX = "scn"
"""Every namespace and veth made here starts with it (then the owner's pid)."""
POOL = ipaddress.IPv4Network("10.213.0.0/16")
"""The /30s are carved from here; one with an address in use on the host is skipped."""

_CLONE_NEWNET = 0x40000000
_LOCK = Path(tempfile.gettempdir()) / "studycall-netns.lock"
_numbers = itertools.count()


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


@dataclass(frozen=True)
class Addresses:
    """One /30: the host end (the namespace's gateway) and the namespace end."""

    network: ipaddress.IPv4Network

    @property
    def host(self) -> str:
        return str(self.network.network_address + 1)

    @property
    def inside(self) -> str:
        return str(self.network.network_address + 2)


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Held while a /30 is chosen and put on the host: concurrent test processes (other
    worktrees, other sessions) see each other's addresses and never pick the same one."""
    with _LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _free_subnet(pool: ipaddress.IPv4Network, start: int) -> Addresses:
    """The first /30 of `pool` from index `start` on with no address on the host."""
    links = json.loads(command(["ip", "-j", "-4", "addr", "show"]) or "[]")
    used = {
        ipaddress.IPv4Address(info["local"])
        for link in links
        for info in link.get("addr_info", [])
        if "local" in info
    }
    subnets = list(pool.subnets(new_prefix=30))
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not any(addr in net for addr in used):
            return Addresses(net)
    raise NetnsError(f"every /30 of {pool} is in use on this host")


class Namespace:
    """A network namespace whose only link is a veth pair to the host.

    The namespace is ``<prefix>-<pid>-<n>``; its end of the pair ``<prefix><pid>x<n>n`` has
    the /30's second address and a default route via the host end ``<prefix><pid>x<n>h``
    (the first address). Everything the namespace sends to any address of this host (a
    server, other browsers, the SFU's ICE candidates on every interface) crosses the pair:
    the downlink is the host end's egress, the uplink the namespace end's egress.

    Use as ``with`` or ``async with``. Commands run inline (each takes milliseconds), so a
    cancellation never lands half-way through a set-up or a clean-up.
    """

    def __init__(self, *, prefix: str = PREFIX, pool: str = str(POOL)) -> None:
        if not re.fullmatch(r"[a-z]{1,4}", prefix):
            raise ValueError("prefix: 1-4 lower-case letters (interface names are short)")
        pid, number = os.getpid(), next(_numbers)
        n = _b36(number)
        self.name = f"{prefix}-{pid}-{n}"
        self.host_if = f"{prefix}{pid}x{n}h"
        self.inside_if = f"{prefix}{pid}x{n}n"
        self.downlink: TokenBucket | None = None
        self.uplink: TokenBucket | None = None
        self.filters: dict[str, Any] = {}
        self._pool = ipaddress.IPv4Network(pool)
        self._start = pid * 7919 + number * 131  # where this one looks for a free /30
        self._addresses: Addresses | None = None
        self._created: set[str] = set()  # what close() removes: "netns", "veth"

    # -------------------------------------------------------- life

    @property
    def host_address(self) -> str:
        """The host end: what the namespace reaches the host at (bind servers to it or
        to 0.0.0.0)."""
        return self._open().host

    @property
    def inside_address(self) -> str:
        """The namespace's own address."""
        return self._open().inside

    def _open(self) -> Addresses:
        if self._addresses is None:
            raise NetnsError(f"namespace {self.name} is not open")
        return self._addresses

    def open(self) -> Namespace:
        """Creates the namespace, the pair, addresses, links and the default route."""
        check_capable()
        try:
            command(["ip", "netns", "add", self.name])
            self._created.add("netns")
            with _allocation_lock():
                addresses = _free_subnet(self._pool, self._start)
                command(
                    ["ip", "link", "add", self.host_if, "type", "veth",
                     "peer", "name", self.inside_if, "netns", self.name]
                )  # fmt: skip
                self._created.add("veth")
                command(["ip", "addr", "add", f"{addresses.host}/30", "dev", self.host_if])
            self._addresses = addresses
            command(["ip", "link", "set", self.host_if, "up"])
            inside = ["ip", "-n", self.name]
            command([*inside, "addr", "add", f"{addresses.inside}/30", "dev", self.inside_if])
            command([*inside, "link", "set", self.inside_if, "up"])
            command([*inside, "link", "set", "lo", "up"])
            command([*inside, "route", "add", "default", "via", addresses.host])
        except BaseException as exc:
            self._close_noting(exc)
            raise
        return self

    def close(self) -> None:
        """Kills what still runs inside, removes the veth pair and the namespace (and with
        them its qdiscs and nft table). Every step is tried; NetnsError lists what failed."""
        failures: list[str] = []
        steps: list[Callable[[], object]] = []
        if "netns" in self._created:
            steps.append(lambda: kill_all(self.name))
        if "veth" in self._created and link_exists(self.host_if):
            steps.append(lambda: command(["ip", "link", "del", self.host_if]))
        if "netns" in self._created:
            steps.append(lambda: command(["ip", "netns", "del", self.name]))
        for step in steps:
            try:
                step()
            except NetnsError as exc:
                failures.append(str(exc))
        self._created.clear()
        self._addresses = None
        self.downlink = self.uplink = None
        self.filters = {}
        if failures:
            raise NetnsError(f"could not remove namespace {self.name}: " + "; ".join(failures))

    def _close_noting(self, exc: BaseException) -> None:
        """Closes while `exc` propagates: a failure to clean up is added to it as a note."""
        try:
            self.close()
        except NetnsError as failure:
            exc.add_note(str(failure))

    def __enter__(self) -> Namespace:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
        else:
            self._close_noting(exc)

    async def __aenter__(self) -> Namespace:
        return self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -------------------------------------------------------- the link

    def shape_downlink(
        self,
        rate_kbit: float,
        *,
        latency_ms: float = DEFAULT_QUEUE_MS,
        burst_bytes: int | None = None,
    ) -> TokenBucket:
        """Limits what reaches the namespace (the host end's egress) with a tbf."""
        bucket = token_bucket(rate_kbit, latency_ms=latency_ms, burst_bytes=burst_bytes)
        command(["tc", "qdisc", "replace", "dev", self.host_if, "root", *bucket.tc_args()])
        self.downlink = bucket
        return bucket

    def shape_uplink(
        self,
        rate_kbit: float,
        *,
        latency_ms: float = DEFAULT_QUEUE_MS,
        burst_bytes: int | None = None,
    ) -> TokenBucket:
        """Limits what the namespace sends (its own end's egress) with a tbf."""
        bucket = token_bucket(rate_kbit, latency_ms=latency_ms, burst_bytes=burst_bytes)
        tc = ["tc", "-n", self.name, "qdisc", "replace", "dev", self.inside_if, "root"]
        command([*tc, *bucket.tc_args()])
        self.uplink = bucket
        return bucket

    def unshape(self) -> None:
        """Both directions back to the veth's default (no queueing discipline)."""
        if self.downlink is not None:
            command(["tc", "qdisc", "del", "dev", self.host_if, "root"])
            self.downlink = None
        if self.uplink is not None:
            command(["tc", "-n", self.name, "qdisc", "del", "dev", self.inside_if, "root"])
            self.uplink = None

    def drop_udp(self, uplink_percent: int, downlink_percent: int | None = None) -> None:
        """Drops that share of UDP datagrams at random each way (`numgen random mod 100`);
        `downlink_percent` defaults to `uplink_percent`. TCP (signaling) is untouched."""
        down = uplink_percent if downlink_percent is None else downlink_percent
        rules = {"uplink": udp_loss_rule(uplink_percent), "downlink": udp_loss_rule(down)}
        self._nft(filter_table(self.inside_if, **rules))
        self.filters = {"udp_loss_up_percent": uplink_percent, "udp_loss_down_percent": down}

    def block_udp(self) -> None:
        """Drops every UDP datagram in and out (a network that lets only TCP through)."""
        self._nft(filter_table(self.inside_if, uplink=UDP_BLOCK_RULE, downlink=UDP_BLOCK_RULE))
        self.filters = {"udp_blocked": True}

    def clear_filters(self) -> None:
        """Removes the loss or blocking rules."""
        self._nft(reset_table())
        self.filters = {}

    def _nft(self, script: str) -> None:
        command(self.command("nft", "-f", "-"), stdin=script)

    def describe(self) -> dict[str, Any]:
        """What this namespace's link does, for a benchmark row."""
        return {
            "downlink": self.downlink.as_dict() if self.downlink else None,
            "uplink": self.uplink.as_dict() if self.uplink else None,
            **self.filters,
        }

    # -------------------------------------------------------- running things inside

    def command(self, *argv: str) -> list[str]:
        """`argv` wrapped to run inside the namespace (`ip netns exec`)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, *argv: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """Runs a command inside and waits for it, its output captured as text."""
        return subprocess.run(
            self.command(*argv), capture_output=True, text=True, timeout=timeout, check=check
        )

    async def exec(self, *argv: str, **kwargs: Any) -> asyncio.subprocess.Process:
        """Starts a command inside (`asyncio.create_subprocess_exec`'s keyword arguments).
        `close()` kills it if it still runs."""
        return await asyncio.create_subprocess_exec(*self.command(*argv), **kwargs)

    def launcher(self, executable: str, directory: Path) -> Path:
        """A script in `directory` that runs `executable` with its arguments inside.

        For programs that something else starts, such as Chromium under Playwright's
        `executable_path` (Playwright talks to it over a pipe, which crosses namespaces).
        """
        script = directory / f"{self.name}-{Path(executable).name}"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {executable} "$@"\n')
        script.chmod(0o755)
        return script

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        """A socket of the namespace, usable from this process (and its event loop).

        A short-lived thread joins the namespace to make it (setns moves only the calling
        thread); a socket stays in the namespace it was made in.
        """
        made: list[socket.socket] = []
        failed: list[BaseException] = []
        self._open()
        path = f"/run/netns/{self.name}"

        def inside() -> None:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, _CLONE_NEWNET) != 0:
                        raise NetnsError(f"setns({path}): {os.strerror(ctypes.get_errno())}")
                    made.append(socket.socket(family, kind))
                finally:
                    os.close(fd)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=inside, name=f"setns-{self.name}")
        thread.start()
        thread.join()
        if failed:
            raise failed[0]
        return made[0]
