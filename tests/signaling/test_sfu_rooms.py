"""sfu and auto rooms through the signaling server: real aiortc peers answer the server's offers.

The peers publish pre-encoded VP8 and Opus (no encoding in the tests) and count what they get
without decoding; `decode_counter` proves the in-process server never decodes either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from devtools.media import Clip
from devtools.poll import poll_until
from tests.clients import Client
from tests.server import InProcess, inprocess_server
from tests.sfu.peers import TIMEOUT, DecodeCounter, PeerClient, SocketPlane


@asynccontextmanager
async def peers(
    server: InProcess, room: str, names: list[str], video: Clip, audio: Clip
) -> AsyncIterator[list[PeerClient]]:
    made: list[tuple[Client, PeerClient]] = []
    try:
        for name in names:
            client = await Client(server.url, name).connect()
            peer = PeerClient(SocketPlane(client), room, client.sid, video, audio)
            made.append((client, peer))
            await peer.join()
        yield [peer for _, peer in made]
    finally:
        for client, peer in made:
            await peer.close()
            await client.close()


def sockets(*clients: PeerClient) -> list[str]:
    return [c.id for c in clients]


async def test_sfu_room_forwards_everyone_to_everyone_by_socket_id(
    vp8_clip: Clip, opus_clip: Clip, decode_counter: DecodeCounter
) -> None:
    async with (
        inprocess_server(room_mode="sfu") as server,
        peers(server, "s", ["ann", "ben", "cat"], vp8_clip, opus_clip) as group,
    ):
        for peer in group:
            assert isinstance(peer.plane, SocketPlane) and peer.plane.joined is not None
            assert peer.plane.joined["mode"] == "sfu"
        for peer in group:
            others = sockets(*(p for p in group if p is not peer))
            await peer.wait_frames("video", others, n=5)
            await peer.wait_frames("audio", others, n=5)
            for other in others:
                assert peer.frames_by_stream("video")[other][0][0] is True  # keyframe first
            assert set(peer.frames_by_stream("video")) == set(others)
            assert peer.errors == []
        assert decode_counter.calls == 0
        media = server.application.media
        assert media is not None
        assert media.stats()["rooms"]["s"]["peer_connections"] == 3

        # Someone leaves: the others are renegotiated and keep receiving each other.
        ann, ben, cat = group
        await cat.plane.client.call("video:leave-room", {"roomId": "s"})  # type: ignore[attr-defined]
        await poll_until(lambda: media.stats()["rooms"]["s"]["peer_connections"] == 2, TIMEOUT)
        seen = ann.count_from("video", ben.id)
        await poll_until(lambda: ann.count_from("video", ben.id) > seen + 5, TIMEOUT)


async def test_client_offers_to_the_sfu_are_refused() -> None:
    async with inprocess_server(room_mode="sfu") as server:
        client = await Client(server.url, "ann").connect()
        try:
            await client.call("video:join-room", {"roomId": "s", "sfu": True})
            await client.emit("video:offer", {"to": "sfu", "offer": {"type": "offer", "sdp": "x"}})
            error = await client.next("error")
            assert error["code"] == "INVALID_PAYLOAD" and error["event"] == "video:offer"
            await client.emit(
                "video:answer", {"to": "sfu", "answer": {"type": "answer", "sdp": ""}}
            )
            assert (await client.next("error"))["code"] == "INVALID_PAYLOAD"
        finally:
            await client.close()


async def test_auto_mode_switches_to_sfu_at_four_and_back_to_mesh_at_two(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        inprocess_server(room_mode="auto", mesh_max=3) as server,
        peers(server, "a", ["p1", "p2", "p3"], vp8_clip, opus_clip) as first,
    ):
        for peer in first:
            assert peer.plane.joined is not None and peer.plane.joined["mode"] == "mesh"  # type: ignore[attr-defined]
        media = server.application.media
        assert media is not None and "a" not in media.stats()["rooms"]
        async with peers(server, "a", ["p4"], vp8_clip, opus_clip) as (p4,):
            assert p4.plane.joined["mode"] == "sfu"  # type: ignore[attr-defined]
            for peer in first:
                changed = await peer.plane.client.next("video:mode-changed")  # type: ignore[attr-defined]
                assert changed == {"roomId": "a", "mode": "sfu"}
            everyone = [*first, p4]
            for peer in everyone:
                others = sockets(*(p for p in everyone if p is not peer))
                await peer.wait_frames("video", others, n=5)
                await peer.wait_frames("audio", others, n=3)
        # p4 left (3 remain: still sfu, hysteresis); p3 leaves too: mesh again, the SFU lets go.
        p1, p2, p3 = first
        await p3.plane.client.call("video:leave-room", {"roomId": "a"})  # type: ignore[attr-defined]
        for peer in (p1, p2):
            changed = await peer.plane.client.next("video:mode-changed")  # type: ignore[attr-defined]
            assert changed == {"roomId": "a", "mode": "mesh"}
        await poll_until(lambda: "a" not in media.stats()["rooms"], TIMEOUT)
        assert media.stats()["total"]["peer_connections"] == 0
