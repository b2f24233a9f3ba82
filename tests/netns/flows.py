"""UDP flows across a namespace's veth pair, counted at the receiver.

Datagrams carry a sequence number; the sender ends a flow with FIN datagrams, repeated
until the receiver has one (a FIN can be shaped away or dropped too). Everything sent
before a FIN crossed the same FIFO path first, so once the FIN is in, the flow is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

FIN = 0xFFFFFFFF
UDP_IP_ETHERNET = 8 + 20 + 14
"""Header bytes a datagram costs on the veth on top of its payload (what tbf counts)."""
RCVBUF = 8 * 1024 * 1024
SO_RCVBUFFORCE = 33
"""Linux's SO_RCVBUFFORCE (root may exceed net.core.rmem_max); not in the socket module."""


@dataclass
class Received:
    """What a receiver got: arrival times and payload sizes of data datagrams."""

    times: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    fin: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def count(self) -> int:
        return len(self.sizes)

    def wire_rate_bps(self) -> float:
        """Bits per second on the link between the first and the last arrival (payload and
        headers, as the shaper counts them; the first datagram opens the interval)."""
        elapsed = self.times[-1] - self.times[0]
        bits = sum(size + UDP_IP_ETHERNET for size in self.sizes[1:]) * 8
        return bits / elapsed


def udp_socket(sock: socket.socket, address: str) -> socket.socket:
    """`sock` bound to `address` (any port), non-blocking, with a receive buffer large
    enough that the receiver never drops what the link delivered."""
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    sock.bind((address, 0))
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def receiving(sock: socket.socket) -> AsyncIterator[Received]:
    """Counts datagrams arriving on `sock` while the block runs."""
    got = Received()
    loop = asyncio.get_running_loop()

    async def reader() -> None:
        while True:
            data = await loop.sock_recv(sock, 65536)
            (seq,) = struct.unpack_from("!I", data)
            if seq == FIN:
                got.fin.set()
            else:
                got.times.append(time.monotonic())
                got.sizes.append(len(data))

    task = asyncio.create_task(reader())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def send_flow(
    sock: socket.socket,
    dest: tuple[str, int],
    *,
    count: int,
    size: int,
    rate_bps: float,
    batch: int = 5,
) -> None:
    """`count` datagrams of `size` bytes at `rate_bps` of payload, in small batches."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    padding = bytes(size - 4)
    for first in range(0, count, batch):
        for seq in range(first, min(count, first + batch)):
            with contextlib.suppress(BlockingIOError):
                sock.sendto(struct.pack("!I", seq) + padding, dest)
        due = start + (first + batch) * size * 8 / rate_bps
        await asyncio.sleep(max(0.0, due - loop.time()))


async def finish(
    sock: socket.socket, dest: tuple[str, int], got: Received, timeout: float = 5.0
) -> None:
    """Sends FIN every 20 ms until the receiver has one (bounded by `timeout`)."""
    async with asyncio.timeout(timeout):
        while not got.fin.is_set():
            with contextlib.suppress(BlockingIOError):
                sock.sendto(struct.pack("!I", FIN), dest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.fin.wait(), 0.02)


def drain(sock: socket.socket) -> int:
    """Datagrams waiting on a non-blocking `sock`, read and counted."""
    n = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1
