"""`pair:request` racing a disconnect leaves no ghost and no room (issue 13, item 10).

Each round, `x` waits in the pairing queue from a video room with a bystander in it (so
moving it out takes several steps), and `y` asks for a pair while `x` disconnects. Or `y`
itself, over long-polling, closes its transport in a second request while its own
`pair:request` is being served. Whatever wins, nobody may be left in a room without a
connection, and a survivor who was matched must hear that its peer left.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.clients import Client, http_json
from tests.raw import RawPolling, event
from tests.server import InProcess, inprocess_server

ROUNDS = 200
POLLING_ROUNDS = 100
LOBBY = "lobby"


async def rooms(server: InProcess) -> dict[str, int]:
    _, body = await http_json("GET", server.url + "/rooms")
    return {room["name"]: room["userCount"] for room in body["rooms"]}


async def one_round(server: InProcess, n: int) -> None:
    x = await Client(server.url, f"x{n}").connect()
    y = await Client(server.url, f"y{n}").connect()
    try:
        await x.call("video:join-room", {"roomId": LOBBY})
        assert await x.call("pair:request", {}) == {"status": "waiting"}
        x_sid = x.sid
        ack, _ = await asyncio.gather(y.call("pair:request", {}), x.close())
        if ack["status"] == "matched":
            left = await y.next_where("video:user-left", lambda e: e["socketId"] == x_sid)
            assert left["userId"] == f"x{n}"
        else:
            assert ack == {"status": "waiting"}
            await y.call("pair:cancel", {})
    finally:
        await y.close()


async def test_a_waiting_peer_disconnecting_during_the_match_leaves_no_ghost() -> None:
    async with inprocess_server(room_mode="mesh") as server:
        keeper = await Client(server.url, "keeper").connect()
        try:
            await keeper.call("video:join-room", {"roomId": LOBBY})
            for n in range(ROUNDS):
                await one_round(server, n)
            assert await rooms(server) == {f"video:{LOBBY}": 1}
            assert set(server.application.sockets.conns) == {keeper.sid}
        finally:
            await keeper.close()


async def test_a_requester_closing_its_transport_mid_request_leaves_no_ghost() -> None:
    async with (
        inprocess_server(room_mode="mesh") as server,
        aiohttp.ClientSession() as http,
    ):
        keeper = await Client(server.url, "keeper").connect()
        try:
            await keeper.call("video:join-room", {"roomId": LOBBY})
            for n in range(POLLING_ROUNDS):
                waiter = await Client(server.url, f"w{n}").connect()
                await waiter.call("pair:request", {})
                poller = await RawPolling(http, server.url).open()
                await poller.connect({"userId": f"p{n}"})
                await poller.post(event("video:join-room", {"roomId": LOBBY}))
                # The request and the close travel in two concurrent POSTs.
                await asyncio.gather(poller.post(event("pair:request", {})), poller.post("1"))
                # Its ack comes after any pair:matched on the same connection.
                if not (await waiter.call("pair:cancel", {}))["cancelled"]:
                    matched = await waiter.next("pair:matched")
                    assert matched["peer"]["socketId"] == poller.sid
                    left = await waiter.next("video:user-left")
                    assert (left["socketId"], left["userId"]) == (poller.sid, f"p{n}")
                await waiter.close()
            assert await rooms(server) == {f"video:{LOBBY}": 1}, json.dumps(await rooms(server))
            assert set(server.application.sockets.conns) == {keeper.sid}
        finally:
            await keeper.close()
