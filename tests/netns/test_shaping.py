"""A shaped namespace link carries what it is shaped to, loses what it is told to lose.

Measured with real UDP flows across the veth pair (tests/netns/flows.py), with generous
bounds: the machine is shared, and these check that shaping happens, not its precision.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from devtools.netns import Namespace
from tests.netns.flows import drain, finish, receiving, send_flow, udp_socket

RATE_KBIT = 1000
PAYLOAD = 1000


def _pair(ns: Namespace, direction: str) -> tuple[socket.socket, socket.socket]:
    """(sender, receiver) for one direction: downlink = host to namespace."""
    host = udp_socket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ns.host_address)
    inside = udp_socket(ns.socket(), ns.inside_address)
    return (host, inside) if direction == "downlink" else (inside, host)


@pytest.mark.parametrize("direction", ["downlink", "uplink"])
async def test_a_link_shaped_to_1_mbit_carries_about_1_mbit(
    namespace: Namespace, direction: str
) -> None:
    if direction == "downlink":
        namespace.shape_downlink(RATE_KBIT)
    else:
        namespace.shape_uplink(RATE_KBIT)
    sender, receiver = _pair(namespace, direction)
    with sender, receiver:
        dest = receiver.getsockname()
        async with receiving(receiver) as got:
            # Twice what the link carries for 1.5 s: the queue never runs dry.
            await send_flow(sender, dest, count=375, size=PAYLOAD, rate_bps=2 * RATE_KBIT * 1000)
            await finish(sender, dest, got)
    rate = got.wire_rate_bps()
    assert 0.75 * RATE_KBIT * 1000 < rate < 1.25 * RATE_KBIT * 1000, (rate, got.count)
    assert got.count < 0.8 * 375  # the excess was dropped at the shaper, not delivered


async def test_an_unshaped_link_carries_the_same_flow_whole(namespace: Namespace) -> None:
    """The control: without the tbf, the 2 Mbit/s flow above arrives complete."""
    sender, receiver = _pair(namespace, "downlink")
    with sender, receiver:
        dest = receiver.getsockname()
        async with receiving(receiver) as got:
            await send_flow(sender, dest, count=150, size=PAYLOAD, rate_bps=2e6)
            await finish(sender, dest, got)
    assert got.count == 150


@pytest.mark.parametrize("direction", ["downlink", "uplink"])
async def test_20_percent_udp_loss_drops_about_a_fifth_each_way(
    namespace: Namespace, direction: str
) -> None:
    namespace.drop_udp(20)
    sender, receiver = _pair(namespace, direction)
    count = 2000
    with sender, receiver:
        dest = receiver.getsockname()
        async with receiving(receiver) as got:
            await send_flow(sender, dest, count=count, size=100, rate_bps=4e6)
            await finish(sender, dest, got)
        delivered = got.count + drain(receiver)
    # Binomial: 1 standard deviation is 0.9 % here; the bounds are about 9 of them.
    assert 0.72 < delivered / count < 0.88, delivered


async def test_blocked_udp_passes_neither_way_while_tcp_connects(namespace: Namespace) -> None:
    loop = asyncio.get_running_loop()
    host_udp = udp_socket(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), namespace.host_address)
    inside_udp = udp_socket(namespace.socket(), namespace.inside_address)
    with host_udp, inside_udp:
        # Before: a datagram crosses each way.
        for sender, receiver in ((host_udp, inside_udp), (inside_udp, host_udp)):
            sender.sendto(b"\0\0\0\1before", receiver.getsockname())
            async with asyncio.timeout(5):
                assert (await loop.sock_recv(receiver, 100)).endswith(b"before")

        namespace.block_udp()
        for _ in range(50):
            host_udp.sendto(b"\0\0\0\2after", inside_udp.getsockname())
            inside_udp.sendto(b"\0\0\0\2after", host_udp.getsockname())

        # TCP both ways, over the same link, after the datagrams: it connects and carries.
        server = await asyncio.start_server(_echo, namespace.host_address, 0)
        async with server:
            client = namespace.socket(socket.AF_INET, socket.SOCK_STREAM)
            with client:
                client.setblocking(False)
                async with asyncio.timeout(5):
                    await loop.sock_connect(client, server.sockets[0].getsockname())
                    await loop.sock_sendall(client, b"ping\n")
                    assert await loop.sock_recv(client, 100) == b"ping\n"
        listener = namespace.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener:
            listener.bind((namespace.inside_address, 0))
            listener.listen()
            listener.setblocking(False)
            async with asyncio.timeout(5):
                accepted = asyncio.ensure_future(loop.sock_accept(listener))
                reader, writer = await asyncio.open_connection(*listener.getsockname())
                conn, _ = await accepted
                with conn:
                    await loop.sock_sendall(conn, b"pong\n")
                    assert await reader.readline() == b"pong\n"
                writer.close()
                await writer.wait_closed()

        assert drain(inside_udp) == 0
        assert drain(host_udp) == 0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()
