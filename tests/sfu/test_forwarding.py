"""The SFU forwards encoded media between real aiortc peers without decoding it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import unpack_remb_fci

from devtools.media import Clip, encode_h264_clip
from sfu import MediaConfig, MediaError, MediaLoss, MediaPlane, _aiortc
from sfu._aiortc import COUNTERS

from .peers import DecodeCounter, PeerClient, settle_tasks, until

ROOM = "room-1"


async def test_three_peers_receive_each_other_from_a_keyframe_without_decoding(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip, decode_counter: DecodeCounter
) -> None:
    baseline = len(asyncio.all_tasks())
    passthrough_before = COUNTERS.passthrough_receivers
    clients = [
        PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill"),
        PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="add-first"),
        PeerClient(
            plane,
            ROOM,
            "carol",
            vp8_clip,
            opus_clip,
            "add-first",
            trickle=True,
            sendrecv_answer=True,
        ),
    ]
    for c in clients:
        await c.join()
    try:
        for c in clients:
            others = [o.id for o in clients if o is not c]
            await c.wait_frames("video", others, n=10)
            await c.wait_frames("audio", others, n=10)
            for other in others:
                # every subscriber's first video frame of every publisher is a keyframe
                assert c.frames_by_stream("video")[other][0][0] is True
            # only the publishers' own ids label the forwarded streams
            assert set(c.frames_by_stream("video")) == set(others)
            assert c.errors == []
        # carol's sloppy sendrecv answer was clamped: her own m-lines only receive
        carol_pc = plane._get(ROOM, "carol").pc
        assert [t.currentDirection for t in carol_pc.getTransceivers()[:2]] == ["recvonly"] * 2
        stats = plane.stats()
        room = stats["rooms"][ROOM]
        assert room["peer_connections"] == 3
        assert room["forwarded_streams"] == 3 * 2 * 2
        assert stats["total"]["packets"] > 0
        # no one decoded: not the server's receivers, not the peers
        assert decode_counter.calls == 0
        assert decode_counter.decoder_workers == 0
        assert COUNTERS.passthrough_receivers - passthrough_before >= 6

        # carol leaves: alice and bob are renegotiated, her m-lines become inactive
        offers = [c.answered for c in clients[:2]]
        await plane.leave(ROOM, "carol")
        await plane.leave(ROOM, "carol")  # idempotent
        for c, before in zip(clients[:2], offers, strict=True):
            await until(c.changed, lambda c=c, before=before: c.answered > before)  # type: ignore[misc]
            assert "a=inactive" in c.offers[-1]
        assert plane.stats()["rooms"][ROOM]["forwarded_streams"] == 2 * 2
        # forwarding between the remaining two goes on
        seen = clients[0].count_from("video", "bob")
        await until(clients[0].changed, lambda: clients[0].count_from("video", "bob") > seen + 5)
    finally:
        for c in clients:
            await c.close()
    await plane.close_room(ROOM)
    assert plane.stats() == {
        "rooms": {},
        "total": {
            "peer_connections": 0,
            "forwarded_streams": 0,
            "packets": plane.stats()["total"]["packets"],
            "keyframe_requests": plane.stats()["total"]["keyframe_requests"],
        },
    }
    assert await settle_tasks(baseline) <= baseline


async def test_screen_share_is_forwarded_as_its_own_stream_and_recycled(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="add-first")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_frames("video", ["alice"], n=3)

        alice.sharing = True
        await plane.screen_share(ROOM, "alice", True)
        await bob.wait_frames("video", ["alice:screen"], n=5)
        assert bob.frames_by_stream("video")["alice:screen"][0][0] is True
        lines = bob.mline_count()

        answered = bob.answered
        await plane.screen_share(ROOM, "alice", False)
        await until(bob.changed, lambda: bob.answered > answered)
        assert plane.stats()["rooms"][ROOM]["forwarded_streams"] == 4

        # sharing again reuses the recycled m-lines on both sides: no m-line growth
        answered = bob.answered
        await plane.screen_share(ROOM, "alice", True)
        await until(bob.changed, lambda: bob.answered > answered)
        count = bob.count_from("video", "alice:screen")
        await until(bob.changed, lambda: bob.count_from("video", "alice:screen") > count + 5)
        assert bob.mline_count() == lines
        assert alice.mline_count() == 5
        assert alice.errors == [] and bob.errors == []
    finally:
        await alice.close()
        await bob.close()


async def test_subscriber_pli_reaches_the_publisher_rate_limited(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", None, None, mode="none")
    carol = PeerClient(plane, ROOM, "carol", None, None, mode="none")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_frames("video", ["alice"], n=3)
        assert alice.cam is not None
        # a new subscriber asks the publisher for a keyframe and starts on it (the clip
        # has a keyframe only every 2 s, so only the PLI gets carol going this fast)
        before = alice.cam.keyframe_requests
        await carol.join()
        await carol.wait_frames("video", ["alice"], n=1)
        assert alice.cam.keyframe_requests == before + 1
        # bob and carol publish nothing: alice was never renegotiated for them
        assert len(alice.offers) == 1 and alice.mline_count() == 2
        assert carol.frames_by_stream("video")["alice"][0][0] is True
        assert plane.stats()["total"]["keyframe_requests"] >= 1
        before = alice.cam.keyframe_requests

        # bob's decoder "loses" pictures: 40 PLIs in ~1 s
        t = next(
            x
            for x in bob.pc.getTransceivers()
            if x.kind == "video" and bob.msids.get(x.mid or "") == "alice"
        )
        ssrc = t.receiver.getSynchronizationSources()[0].source
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(40):
            await t.receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.025)
        elapsed = loop.time() - start

        def answered_enough() -> bool:
            assert alice.cam is not None
            return alice.cam.keyframe_requests > before

        await until(alice.changed, answered_enough)
        got = alice.cam.keyframe_requests - before
        # at most one PLI per 0.5 s interval (+1 for the trailing deferred one)
        assert 1 <= got <= int(elapsed / 0.5) + 2
    finally:
        await alice.close()
        await bob.close()
        await carol.close()


async def test_bad_input_raises_media_error(plane: MediaPlane, vp8_clip: Clip) -> None:
    with pytest.raises(MediaError):
        await plane.answer(ROOM, "nobody", {"type": "answer", "sdp": "v=0"})
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, None, mode="none")
    try:
        await alice.join()
        await until(alice.changed, lambda: alice.answered >= 1)
        with pytest.raises(MediaError):
            await plane.answer(ROOM, "alice", {"type": "answer", "sdp": "garbage"})
        with pytest.raises(MediaError):
            await plane.candidate(ROOM, "alice", {"candidate": "candidate:x", "sdpMid": "0"})
        with pytest.raises(MediaError):
            await plane.screen_share(ROOM, "nobody", True)
        await plane.candidate(ROOM, "alice", {"candidate": "", "sdpMid": "0"})
    finally:
        await alice.close()


async def test_failed_ice_releases_the_participant_then_calls_on_failed(
    plane: MediaPlane,
) -> None:
    failed = asyncio.Event()
    offers: list[dict[str, Any] | None] = []

    async def sink(kind: str, payload: dict[str, Any] | None) -> None:
        offers.append(payload)

    async def on_failed(reason: MediaLoss) -> None:
        # the plane released the participant before telling signaling
        assert ROOM not in plane.stats()["rooms"]
        assert reason == "failed"
        failed.set()

    await plane.join(ROOM, "ghost", sink, on_failed)
    # a real answer from a peer that then vanishes, with no candidates at all followed
    # by end-of-candidates: the server's ICE checks have nothing to pair and fail
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    assert offers and offers[0] is not None
    await peer.setRemoteDescription(RTCSessionDescription(**offers[0]))
    await peer.setLocalDescription(await peer.createAnswer())
    sdp = "\r\n".join(x for x in peer.localDescription.sdp.splitlines() if "candidate" not in x)
    await peer.close()
    await plane.answer(ROOM, "ghost", {"type": "answer", "sdp": sdp + "\r\n"})
    await plane.candidate(ROOM, "ghost", None)
    await asyncio.wait_for(failed.wait(), 10)
    assert plane.stats()["total"]["peer_connections"] == 0


async def test_h264_is_forwarded_from_an_idr(decode_counter: DecodeCounter) -> None:
    clip = encode_h264_clip()
    plane = MediaPlane(MediaConfig(ice_servers=[], video_codec="H264"))
    alice = PeerClient(plane, ROOM, "alice", clip, None, mode="fill")
    # (not add-first: an aiortc client whose first addTrack is not the first m-line's kind
    # stops its own bundle transport, see docs/aiortc.md)
    bob = PeerClient(plane, ROOM, "bob", clip, None, mode="fill")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_frames("video", ["alice"], n=5)
        await alice.wait_frames("video", ["bob"], n=5)
        assert bob.frames_by_stream("video")["alice"][0][0] is True
        assert alice.frames_by_stream("video")["bob"][0][0] is True
        assert "H264" in bob.offers[-1] and "VP8" not in bob.offers[-1]
        assert decode_counter.calls == 0 and decode_counter.decoder_workers == 0
    finally:
        await alice.close()
        await bob.close()
        await plane.close()


async def test_nack_and_rtx_repair_loss_on_the_subscriber_leg(
    plane: MediaPlane, vp8_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, None, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", None, None, mode="none")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_frames("video", ["alice"], n=3)
        t = next(
            x
            for x in bob.pc.getTransceivers()
            if x.kind == "video" and bob.msids.get(x.mid or "") == "alice"
        )
        receiver = t.receiver
        media_ssrc = receiver.getSynchronizationSources()[0].source
        original = receiver._handle_rtp_packet
        dropped: set[int] = set()

        async def lossy(packet: Any, arrival_time_ms: int) -> None:
            # lose every 10th media packet once; its RTX retransmission gets through
            seq = packet.sequence_number
            if packet.ssrc == media_ssrc and seq % 10 == 0 and seq not in dropped:
                dropped.add(seq)
                return
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lossy  # type: ignore[method-assign]
        start = bob.count_from("video", "alice")
        await until(bob.changed, lambda: bob.count_from("video", "alice") > start + 40)
        assert len(dropped) >= 3
        frames = bob.frames_by_stream("video")["alice"][start:]
        # every frame arrived, in order: no gap a lost packet would have left
        assert all(b[1] - a[1] == 3000 for a, b in itertools.pairwise(frames))
        assert plane.stats()["rooms"][ROOM]["packets"] > 0
    finally:
        await alice.close()
        await bob.close()


def lose_every(dtls: Any, nth: int) -> list[int]:
    """Drops every ``nth`` RTP datagram this ICE connection receives (before SRTP); the
    returned list counts what was dropped."""
    connection = _aiortc.ice_connection(dtls)
    deliver = connection.data_received
    seen = [0]
    dropped: list[int] = []

    def lossy(data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and not 191 < data[1] < 224:
            seen[0] += 1
            if seen[0] % nth == 0:
                dropped.append(seen[0])
                return
        deliver(data, component)

    connection.data_received = lossy  # type: ignore[method-assign]
    return dropped


async def test_loss_on_the_publisher_and_on_one_subscriber_leg_is_repaired(
    plane: MediaPlane, vp8_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, None, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", None, None, mode="none")
    carol = PeerClient(plane, ROOM, "carol", None, None, mode="none")
    try:
        for c in (alice, bob, carol):
            await c.join()
        for c in (bob, carol):
            await c.wait_frames("video", ["alice"], n=3)
        sfu_alice = plane._get(ROOM, "alice").transport
        assert sfu_alice is not None
        # 5 % of alice's datagrams never reach the SFU, 5 % of the SFU's never reach carol
        upstream = lose_every(sfu_alice._dtls, 20)
        downstream = lose_every(carol.pc.getTransceivers()[0].receiver.transport, 20)
        starts = {c.id: c.count_from("video", "alice") for c in (bob, carol)}
        for c in (bob, carol):
            await until(c.changed, lambda c=c: c.count_from("video", "alice") > starts[c.id] + 120)  # type: ignore[misc]
        assert len(upstream) >= 5 and len(downstream) >= 5
        for c in (bob, carol):
            frames = c.frames_by_stream("video")["alice"][starts[c.id] :]
            # every frame complete and in order: each lost packet came back
            gaps = [b[1] - a[1] for a, b in itertools.pairwise(frames) if b[1] - a[1] != 3000]
            assert not gaps, (c.id, gaps)
        source = plane._get(ROOM, "alice").publications["video"].source
        assert source.nacks_sent >= len(upstream) // 2 and source.lost == 0
        legs = {p: plane._get(ROOM, p).subscriptions[source].leg for p in ("bob", "carol")}
        assert legs["carol"].retransmits > 0
        # bob's leg was healthy: it never had to resend or wait for a keyframe
        assert legs["bob"].retransmits == 0 and not legs["bob"].waiting
    finally:
        for c in (alice, bob, carol):
            await c.close()


async def test_aiortc_media_loops_never_run_for_the_sfus_transceivers(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    taken, loops = _aiortc.COUNTERS.taken_over, _aiortc.COUNTERS.owned_loops
    peers = [PeerClient(plane, ROOM, pid, vp8_clip, opus_clip) for pid in ("ann", "ben")]
    try:
        for peer in peers:
            await peer.join()
        for peer, other in zip(peers, reversed(peers), strict=True):
            await peer.wait_frames("video", [other.id], n=10)
            await peer.wait_frames("audio", [other.id], n=10)
        # each connection: 2 own m-lines + 2 of the other's, all owned by the SFU's path
        assert _aiortc.COUNTERS.taken_over - taken == 8
        assert _aiortc.COUNTERS.owned_loops == loops
        assert plane.stats()["total"]["packets"] > 0
    finally:
        for peer in peers:
            await peer.close()


async def test_rtcp_reaches_both_ends_receiver_reports_remb_and_sender_reports(
    plane: MediaPlane, vp8_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, None, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", None, None, mode="none")
    got: list[Any] = []
    try:
        await alice.join()
        await bob.join()
        await bob.wait_frames("video", ["alice"], n=3)
        publishing = next(t for t in alice.pc.getTransceivers() if t.sender.track is alice.cam)
        receiving = next(
            t for t in bob.pc.getTransceivers() if bob.msids.get(t.mid or "") == "alice"
        )
        arrived = asyncio.Event()
        for part in (publishing.sender, receiving.receiver):
            handle = part._handle_rtcp_packet

            async def record(packet: Any, handle: Any = handle) -> None:
                got.append(packet)
                arrived.set()
                await handle(packet)

            part._handle_rtcp_packet = record  # type: ignore[method-assign]
        ssrc = publishing.sender._ssrc
        kinds = {"rr": False, "remb": False, "sr": False}

        def seen() -> bool:
            for packet in got:
                name = type(packet).__name__
                if name in ("RtcpRrPacket", "RtcpSrPacket") and any(
                    r.ssrc == ssrc for r in packet.reports
                ):
                    kinds["rr"] = True  # the SFU reports on what it receives from alice
                if name == "RtcpPsfbPacket" and packet.fmt == 15:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                    assert ssrc in ssrcs and 150_000 <= bitrate <= 3_000_000
                    kinds["remb"] = True
                if name == "RtcpSrPacket" and packet.ssrc != ssrc:
                    kinds["sr"] = True  # bob gets sender reports of his forwarded leg
            return all(kinds.values())

        await until(arrived, seen, timeout=8)
    finally:
        await alice.close()
        await bob.close()
