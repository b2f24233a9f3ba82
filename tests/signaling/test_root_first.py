"""Closing a room or the server closes the room's media once, first, then tells the people.

Nobody left in the room is renegotiated one departure at a time on the way down: the SFU
makes no new offer once the close has begun.
"""

from __future__ import annotations

import asyncio
from typing import Any

from devtools.media import Clip
from tests.clients import Client, http_json
from tests.server import inprocess_server, running_server
from tests.sfu.peers import PeerClient, SocketPlane
from tests.signaling.test_sfu_rooms import peers, sockets


def client_of(peer: PeerClient) -> Client:
    assert isinstance(peer.plane, SocketPlane)
    client: Client = peer.plane.client
    return client


async def test_closing_an_sfu_room_closes_its_media_before_anyone_is_told(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        inprocess_server(room_mode="sfu", api_key="key") as server,
        peers(server, "s", ["ann", "ben", "cat"], vp8_clip, opus_clip) as group,
    ):
        for peer in group:
            await peer.wait_frames("video", sockets(*(p for p in group if p is not peer)), n=3)
        media = server.application.media
        assert media is not None and "s" in media.stats()["rooms"]
        media_when_told: list[bool] = []
        for peer in group:
            client = client_of(peer)

            async def told(data: Any, client: Client = client) -> None:
                media_when_told.append("s" in media.stats()["rooms"])
                await client.events["video:room-closed"].put(data)

            client.sio.on("video:room-closed", told)
            client.pending("video:offer")
        status, body = await http_json(
            "DELETE", server.url + "/api/rooms/s", headers={"Authorization": "Bearer key"}
        )
        assert (status, body) == (200, {"ok": True, "roomId": "s"})
        for peer in group:
            closed = await client_of(peer).next("video:room-closed")
            assert closed == {"roomId": "s", "reason": "closed-by-server"}
        assert media_when_told == [False, False, False]  # the media was gone before the news
        assert all(client_of(peer).pending("video:offer") == [] for peer in group)


async def test_sigterm_closes_the_media_first_and_renegotiates_nobody(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with running_server(ROOM_MODE="sfu") as node:
        made: list[tuple[Client, PeerClient]] = []
        try:
            for name in ("ann", "ben", "cat"):
                client = await Client(node.url, name).connect()
                peer = PeerClient(SocketPlane(client), "s", client.sid, vp8_clip, opus_clip)
                made.append((client, peer))
                await peer.join()
            group = [peer for _, peer in made]
            for peer in group:
                others = sockets(*(p for p in group if p is not peer))
                await peer.wait_frames("video", others, n=3)
            for client, _ in made:
                client.pending("video:offer")
            node.process.terminate()
            for client, _ in made:
                assert await client.next("server:shutdown") == {"reconnect": True}
            assert await asyncio.wait_for(node.process.wait(), 10) == 0
            # Everything the server sent has arrived: no renegotiation among them.
            assert [client.pending("video:offer") for client, _ in made] == [[], [], []]
        finally:
            for client, peer in made:
                await peer.close()
                await client.close()
