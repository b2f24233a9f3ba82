"""Guide rooms carried by the SFU (`GUIDE_ROOM_MODE=sfu`): the guide's client, unchanged,
gets every member's media under that member's socket id, uploads once, and a DataChannel
offer (guide 6.5) is refused with a clear error instead of being dropped."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from devtools.media import Clip
from devtools.poll import poll_until
from signaling.handlers.guide_media import media_room
from signaling.media import DATA_CHANNELS_DECLINED
from tests.clients import connected, http_json
from tests.server import InProcess, inprocess_server
from tests.sfu.peers import until
from tests.signaling.guide_peers import GuidePeer


@asynccontextmanager
async def guide_peers(
    server: InProcess, n: int, video: Clip, audio: Clip | None = None, chat: bool = False
) -> AsyncIterator[list[GuidePeer]]:
    made = [GuidePeer(server.url, video, audio, chat=chat) for _ in range(n)]
    try:
        for peer in made:
            await peer.connect()
        yield made
    finally:
        for peer in made:
            await peer.close()


def media_stats(server: InProcess) -> dict[str, Any]:
    media = server.application.media
    assert media is not None
    return media.stats()


async def test_three_guide_members_see_each_other_by_socket_id_and_upload_once(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        inprocess_server(room_mode="mesh", guide_room_mode="sfu") as server,
        guide_peers(server, 3, vp8_clip, opus_clip) as (host, b, c),
    ):
        assert (await host.create("g"))["success"] is True
        assert (await b.join("g"))["existingUsers"] == [host.sid]
        joined = await c.join("g")
        assert sorted(joined["existingUsers"]) == sorted([host.sid, b.sid])
        group = [host, b, c]
        for peer in group:
            others = [p.sid for p in group if p is not peer]
            await peer.wait_frames(others, n=5)
            await peer.wait_frames(others, n=3, kind="audio")
            # the SFU answered every offer as its target, under the target's socket id
            assert sorted(peer.answers) == sorted(others)
            for other in others:
                assert set(peer.frames(other)) == {other}
            assert peer.offers_from == []  # both sides offer in the guide: the SFU never does
        for peer in group:
            assert len(peer.uploads()) == 1, peer.uploads()
            assert peer.errors == [] and peer.failures == []
        stats = media_stats(server)["rooms"]
        assert stats[media_room("g", 100)]["peer_connections"] == 3 * 2
        _, rooms = await http_json("GET", server.url + "/rooms")
        assert [(r["name"], r["mode"]) for r in rooms["rooms"]] == [("g", "sfu")]

        # The host's camera goes up on its first connection, to b. b leaves: the SFU moves
        # the upload to the host's connection to c, offering it afresh as c, after a
        # `user-left` for c so that the guide's client closes the one it holds.
        assert host.uploads() == [b.sid]
        await b.client.emit("leave-room")
        await until(host.changed, lambda: host.offers_from == [c.sid], timeout=10)
        await until(host.changed, lambda: host.uploads() == [c.sid], timeout=10)
        await c.wait_frames([host.sid], n=10)
        await host.wait_frames([c.sid], n=10)
        assert len(c.uploads()) == 1
        assert len([pc for pc in host.all_pcs if pc.connectionState != "closed"]) == 1
        for peer in (host, c):
            assert peer.errors == [] and peer.failures == []


async def test_a_data_channel_offer_is_refused_clearly_and_media_still_flows(
    vp8_clip: Clip,
) -> None:
    async with (
        inprocess_server(room_mode="mesh", guide_room_mode="sfu") as server,
        guide_peers(server, 2, vp8_clip, chat=True) as (host, guest),
    ):
        await host.create("chat")
        await guest.join("chat")
        await until(guest.changed, lambda: host.sid in guest.answers and guest.errors != [])
        error = guest.errors[0]
        assert error["code"] == "INVALID_PAYLOAD" and error["event"] == "offer"
        assert error["type"] == "offer-error" and error["message"] == DATA_CHANNELS_DECLINED
        assert "m=application 0 " in guest.answers[host.sid]  # declined in place (port 0)
        await until(host.changed, lambda: guest.sid in host.answers and host.errors != [])
        assert host.errors[0]["message"] == DATA_CHANNELS_DECLINED


async def test_guide_rooms_stay_mesh_by_default_and_signals_are_relayed() -> None:
    async with (
        inprocess_server(room_mode="sfu") as server,
        connected(server.url, "a", "b") as (a, b),
    ):
        await a.call("create-room", "m")
        await b.call("join-room", "m")
        offer = {"type": "offer", "sdp": "v=0 verbatim", "extra": 1}
        await b.emit("offer", {"target": a.sid, "offer": offer})
        assert await a.next("offer") == {"from": b.sid, "offer": offer}
        _, rooms = await http_json("GET", server.url + "/rooms")
        assert [(r["name"], r["mode"]) for r in rooms["rooms"]] == [("m", "mesh")]


async def test_the_host_leaving_an_sfu_guide_room_closes_its_media(vp8_clip: Clip) -> None:
    async with (
        inprocess_server(room_mode="mesh", guide_room_mode="sfu") as server,
        guide_peers(server, 2, vp8_clip) as (host, guest),
    ):
        await host.create("h")
        await guest.join("h")
        await guest.wait_frames([host.sid], n=3)
        await host.client.emit("leave-room")
        closed = await guest.client.next("room-closed")
        assert closed["reason"] == "host-left"
        await poll_until(lambda: media_stats(server)["rooms"] == {}, 10)
        # a bad description to the SFU is refused in the guide's error shape, never relayed
        await host.create("h2")
        await guest.join("h2")
        await guest.client.emit("answer", {"target": host.sid, "answer": {"type": "offer"}})
        await until(guest.changed, lambda: any(e["event"] == "answer" for e in guest.errors))
        error = next(e for e in guest.errors if e["event"] == "answer")
        assert error["type"] == "answer-error" and error["code"] == "INVALID_PAYLOAD"


async def test_the_guides_data_channel_chat_still_works_in_mesh_guide_rooms(
    vp8_clip: Clip,
) -> None:
    async with inprocess_server(room_mode="auto") as server:  # GUIDE_ROOM_MODE: mesh
        host = await GuidePeer(server.url, vp8_clip, chat=True, lower_offers=True).connect()
        guest = await GuidePeer(server.url, vp8_clip, chat=True, lower_offers=True).connect()
        try:
            await host.create("talk")
            await guest.join("talk")
            offerer, answerer = sorted((host, guest), key=lambda p: p.sid)

            def open_(peer: GuidePeer, other: GuidePeer) -> bool:
                channel = peer.channels.get(other.sid)
                return channel is not None and channel.readyState == "open"

            await until(answerer.changed, lambda: open_(answerer, offerer))
            await until(offerer.changed, lambda: open_(offerer, answerer))
            offerer.channels[answerer.sid].send("hello")
            answerer.channels[offerer.sid].send("hi")
            await until(answerer.changed, lambda: (offerer.sid, "hello") in answerer.messages)
            await until(offerer.changed, lambda: (answerer.sid, "hi") in offerer.messages)
            # a real peer-to-peer call: the stream id is the browser's own, not a socket id
            await until(offerer.changed, lambda: sum(offerer.frames(answerer.sid).values()) > 3)
            assert offerer.errors == [] and answerer.errors == []
            assert media_stats(server)["rooms"] == {}  # relayed: the SFU is not in it
        finally:
            await host.close()
            await guest.close()
