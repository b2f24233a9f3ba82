"""SFU connections that close, fail or go unanswered, seen through signaling (issue 13, 6-7)."""

from __future__ import annotations

import re

from devtools.media import Clip
from devtools.poll import poll_until
from tests.clients import Client
from tests.server import inprocess_server
from tests.sfu.peers import TIMEOUT, PeerClient, SocketPlane


def ufrag(sdp: str) -> str:
    match = re.search(r"a=ice-ufrag:(\S+)", sdp)
    assert match is not None
    return match.group(1)


async def test_a_client_closing_its_sfu_connection_gets_a_fresh_one_and_nobody_an_internal(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with inprocess_server(room_mode="sfu", sfu_retry_backoff_s=0.05) as server:
        made: list[tuple[Client, PeerClient]] = []
        try:
            for name in ("ann", "ben"):
                client = await Client(server.url, name).connect()
                peer = PeerClient(SocketPlane(client), "s", client.sid, vp8_clip, opus_clip)
                made.append((client, peer))
                await peer.join()
            (ann_client, ann), (ben_client, ben) = made
            await ann.wait_frames("video", [ben.id], n=3)
            first = (await ben_client.next("video:offer"))["offer"]["sdp"]
            # The documents' hook closes its connection on "disconnected"/"failed"; the
            # socket stays in the room.
            await ben.pc.close()
            fresh = await ben_client.next_where(
                "video:offer",
                lambda e: e["from"] == "sfu" and ufrag(e["offer"]["sdp"]) != ufrag(first),
            )
            assert fresh["offer"]["type"] == "offer"
            # The next joiner's answer renegotiates the room: no INTERNAL for anyone.
            cat_client = await Client(server.url, "cat").connect()
            cat = PeerClient(SocketPlane(cat_client), "s", cat_client.sid, vp8_clip, opus_clip)
            made.append((cat_client, cat))
            await cat.join()
            await cat.wait_frames("video", [ann.id], n=3)
            await ann_client.call("video:leave-room", {"roomId": "s"})
            for client, _ in made:
                assert client.pending("error") == [], client.auth
        finally:
            for client, peer in made:
                await peer.close()
                await client.close()


async def test_an_unanswered_sfu_offer_is_repeated_once_then_the_media_dropped() -> None:
    async with inprocess_server(room_mode="sfu", sfu_answer_timeout_s=0.3) as server:
        mute = await Client(server.url, "mute").connect()
        try:
            await mute.call("video:join-room", {"roomId": "s", "sfu": True})
            first = await mute.next("video:offer")
            again = await mute.next("video:offer", timeout=3)
            assert first == again and first["from"] == "sfu"
            error = await mute.next("error", timeout=3)
            assert error["code"] == "INVALID_PAYLOAD" and error["event"] == "video:answer"
            assert "no answer" in error["message"]
            media = server.application.media
            assert media is not None
            await poll_until(lambda: media.stats()["total"]["peer_connections"] == 0, TIMEOUT)
            # Its signaling stays: still in the room, still served.
            ack = await mute.call("video:chat", {"roomId": "s", "content": "still here"})
            assert ack["ok"] is True
            assert mute.pending("video:offer") == []
        finally:
            await mute.close()


async def test_a_malformed_sfu_answer_is_refused_in_words() -> None:
    async with inprocess_server(room_mode="sfu") as server:
        client = await Client(server.url, "ann").connect()
        try:
            await client.call("video:join-room", {"roomId": "s", "sfu": True})
            offer = (await client.next("video:offer"))["offer"]["sdp"]
            broken = offer.replace("a=setup:actpass", "a=setup:active")
            broken = re.sub(r"a=fingerprint:(\S+) \S+", r"a=fingerprint:\1", broken)
            await client.emit(
                "video:answer", {"to": "sfu", "answer": {"type": "answer", "sdp": broken}}
            )
            error = await client.next("error")
            assert error["code"] == "INVALID_PAYLOAD" and "DTLS fingerprint" in error["message"]
            assert "unpack" not in error["message"]
        finally:
            await client.close()
