"""A namespace's life: what it creates, it removes (even when the body fails or is
cancelled); a killed run's leftovers are swept; a machine that cannot says why."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import devtools.netns.namespace
import devtools.netns.system
from devtools.netns import Namespace, NetnsError, sweep_stale
from devtools.server import ROOT


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def _gone(ns: Namespace) -> bool:
    return ns.name not in _namespaces() and not {ns.host_if, ns.inside_if} & _links()


def _alive(pid: int) -> bool:
    return devtools.netns.system.alive(pid)


def test_everything_is_removed_when_the_body_raises(netns_swept: list[str]) -> None:
    ns = Namespace()
    with pytest.raises(ValueError, match="the body failed"), ns:
        ns.shape_downlink(300)
        ns.shape_uplink(250)
        ns.drop_udp(5)
        sleeper = subprocess.Popen(ns.command("sleep", "60"))
        assert ns.name in _namespaces() and ns.host_if in _links()
        raise ValueError("the body failed")
    assert _gone(ns)
    assert sleeper.wait(timeout=5) == -signal.SIGKILL  # what ran inside was killed


async def test_everything_is_removed_when_the_task_is_cancelled(netns_swept: list[str]) -> None:
    entered = asyncio.Event()
    ns = Namespace()

    async def inside() -> None:
        async with ns:
            ns.block_udp()
            await ns.exec("sleep", "60")
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(inside())
    async with asyncio.timeout(10):
        await entered.wait()
    assert ns.name in _namespaces()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(ns)


async def test_a_killed_runs_namespace_is_swept_and_a_live_one_is_not(
    namespace: Namespace,
) -> None:
    script = textwrap.dedent(
        """
        import time
        from devtools.netns import Namespace
        ns = Namespace().open()
        print(ns.name, ns.host_if, flush=True)
        time.sleep(60)
        """
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    async with asyncio.timeout(20):
        name, host_if = (await child.stdout.readline()).decode().split()
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert name in _namespaces() and host_if in _links()  # left behind by the killed run

    removed = sweep_stale()
    assert name in removed
    assert name not in _namespaces() and host_if not in _links()
    assert namespace.name in _namespaces()  # ours: its process (this one) is alive


CHILD = textwrap.dedent(
    """
    import sys
    from contextlib import ExitStack
    from devtools.netns import Namespace
    with ExitStack() as stack:
        for _ in range(3):
            ns = stack.enter_context(Namespace())
            print(ns.host_address, flush=True)
        sys.stdin.read()
    """
)


async def test_concurrent_processes_get_distinct_subnets(netns_swept: list[str]) -> None:
    """Two other processes and this one open namespaces at the same time: no /30 twice."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CHILD,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        with Namespace() as a, Namespace() as b, Namespace() as c:
            hosts = [a.host_address, b.host_address, c.host_address]
            for child in children:
                assert child.stdout is not None
                async with asyncio.timeout(20):
                    hosts += [(await child.stdout.readline()).decode().strip() for _ in range(3)]
            networks = {ipaddress.ip_interface(f"{h}/30").network for h in hosts}
            assert len(networks) == 9, hosts
            for ns in (a, b, c):  # each reaches the host over its own pair
                out = ns.run("ip", "-j", "-4", "route", "get", ns.host_address).stdout
                assert json.loads(out)[0]["dev"] == ns.inside_if
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            async with asyncio.timeout(20):
                assert await child.wait() == 0


def test_a_failed_open_leaves_nothing_behind_and_says_why(namespace: Namespace) -> None:
    taken = str(ipaddress.ip_interface(f"{namespace.host_address}/30").network)
    second = Namespace(pool=taken)
    with pytest.raises(NetnsError, match=f"every /30 of {taken} is in use"):
        second.open()
    assert _gone(second)


def test_without_root_the_error_says_so(
    monkeypatch: pytest.MonkeyPatch, netns_swept: list[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match=r"need root .* uid 1000"):
        Namespace().open()


def test_without_nft_the_error_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, netns_swept: list[str]
) -> None:
    for tool in ("ip", "tc"):  # a PATH with iproute2 but no nftables
        (tmp_path / tool).symlink_to(f"/usr/sbin/{tool}")
    monkeypatch.setenv("PATH", str(tmp_path))
    ns = Namespace()
    with pytest.raises(NetnsError, match="`nft` not found on PATH: install Debian's nftables"):
        ns.open()
    assert ns.name not in _namespaces()


def test_what_the_kernel_refuses_is_reported_with_the_command(netns_swept: list[str]) -> None:
    ns = Namespace()
    with ns:
        host_if = ns.host_if
    with pytest.raises(NetnsError, match=f"refused `tc qdisc replace dev {host_if} .*`: .+"):
        ns.shape_downlink(300)  # its link is gone
