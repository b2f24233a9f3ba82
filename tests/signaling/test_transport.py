"""The lean engine.io transport (signaling/edge/engine.py) still drops peers that go silent."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.clients import connected, http_json
from tests.server import inprocess_server

CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


async def test_a_silent_websocket_peer_is_dropped_and_its_room_told() -> None:
    async with (
        inprocess_server(room_mode="mesh", ping_interval=0.5, ping_timeout=1.0) as server,
        connected(server.url, "ann") as (ann,),
        aiohttp.ClientSession() as http,
    ):
        await ann.call("video:join-room", {"roomId": "r"})
        ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        async with http.ws_connect(ws_url, autoping=False) as ws:
            assert (await ws.receive_str()).startswith("0{")  # engine.io open
            await ws.send_str('40{"userId":"ghost"}')
            assert (await ws.receive_str()).startswith("40")  # socket.io connected
            await ws.send_str('42["video:join-room",{"roomId":"r"}]')
            joined = await ann.next("video:user-joined")
            assert joined["userId"] == "ghost"
            # From now on the ghost answers neither engine.io pings nor websocket pings.
            left = await ann.next("video:user-left", timeout=10)
            assert left == {"socketId": joined["socketId"], "userId": "ghost"}

            async def closed_by_server() -> aiohttp.WSMsgType:
                while True:  # engine.io pings and websocket pings until the close frame
                    message = await ws.receive()
                    if message.type in CLOSED:
                        return message.type

            assert await asyncio.wait_for(closed_by_server(), 5) in CLOSED

        _, health = await http_json("GET", server.url + "/health")
        assert health["connections"] == 1
