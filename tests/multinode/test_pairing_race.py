"""`pair:request` on one node racing the disconnect of the peer it matches on the other."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from tests.clients import Client
from tests.multinode.cluster import clients, rooms_of
from tests.server import ServerProcess

pytestmark = pytest.mark.redis
T = TypeVar("T")

ROUNDS = 60


async def after(delay: float, action: Awaitable[T]) -> T:
    await asyncio.sleep(delay)
    return await action


async def test_pairing_across_nodes_racing_a_disconnect_leaves_no_ghost(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    async with clients(("keeper", a.url)) as (keeper,):
        await keeper.call("video:join-room", {"roomId": "lobby"})
        for n in range(ROUNDS):
            x = await Client(b.url, f"x{n}").connect()
            y = await Client(a.url, f"y{n}").connect()
            try:
                await x.call("video:join-room", {"roomId": "lobby"})
                assert await x.call("pair:request", {}) == {"status": "waiting"}
                x_sid = x.sid
                # Staggered by 0-3 ms either way, so every interleaving of the two nodes'
                # steps comes up (a jitter to provoke the race, not a wait for anything).
                lag = (n % 13 - 6) / 2000
                ack, _ = await asyncio.gather(
                    after(max(lag, 0), y.call("pair:request", {})), after(max(-lag, 0), x.close())
                )
                if ack["status"] == "matched":
                    left = await y.next("video:user-left")  # y is in no other room
                    assert (left["socketId"], left["userId"]) == (x_sid, f"x{n}")
                else:
                    await y.call("pair:cancel", {})
            finally:
                await y.close()
        for node in (a, b):
            assert await rooms_of(node) == {"lobby": 1}
