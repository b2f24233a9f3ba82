"""The plane lets go of connections that closed, failed or never answered (issue 13, 6-7).

Pinned at the plane level so that a rewritten plane keeps it:
- a client closing its own connection is noticed (`on_failed("closed")`), and nobody's
  renegotiation ever touches a closed connection;
- an offer unanswered for `answer_timeout_s` is sent again once, then the connection is
  dropped (`on_failed("unanswered")`);
- joins of one participant are serialised (one connection survives, none leaks);
- a bad answer is refused in words.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

from devtools.media import Clip
from sfu import MediaConfig, MediaError, MediaLoss, MediaPlane

from .peers import PeerClient, until

ROOM = "lost"


class Losses:
    """An `on_failed` callback that records why, for bounded waits."""

    def __init__(self) -> None:
        self.reasons: list[MediaLoss] = []
        self.changed = asyncio.Event()

    async def __call__(self, reason: MediaLoss) -> None:
        self.reasons.append(reason)
        self.changed.set()


def connections_gauge(room: str) -> float:
    return REGISTRY.get_sample_value("sfu_peer_connections", {"room": room}) or 0.0


async def test_a_client_closing_its_connection_is_noticed_and_never_renegotiated(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip)
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip)
    carol = PeerClient(plane, ROOM, "carol", vp8_clip, opus_clip)
    losses = Losses()
    try:
        await alice.join()
        await plane.join(ROOM, "bob", bob.sink, losses)
        await bob.wait_frames("video", ["alice"], n=3)
        await alice.wait_frames("video", ["bob"], n=3)
        # What a documents-style client does on "disconnected"/"failed": close its end.
        await bob.pc.close()
        await until(losses.changed, lambda: losses.reasons == ["closed"])
        assert plane.stats()["rooms"][ROOM]["peer_connections"] == 1
        # The next joiner's answer renegotiates alice only; nothing raises.
        await carol.join()
        await carol.wait_frames("video", ["alice"], n=3)
        await alice.wait_frames("video", ["carol"], n=3)
        assert alice.errors == [] and carol.errors == []
        assert plane.stats()["rooms"][ROOM]["peer_connections"] == 2
    finally:
        for peer in (alice, bob, carol):
            await peer.close()


async def test_renegotiation_racing_a_close_skips_the_closed_connection(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """The connection closes (DTLS close from the client) just before the room changes:
    leave/answer must not fail with aiortc's InvalidStateError (INTERNAL before)."""
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip)
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip)
    carol = PeerClient(plane, ROOM, "carol", vp8_clip, opus_clip)
    losses = Losses()
    try:
        await plane.join(ROOM, "alice", alice.sink, losses)
        await bob.join()
        await carol.join()
        await carol.wait_frames("video", ["alice", "bob"], n=2)
        closing = asyncio.ensure_future(plane._get(ROOM, "alice").pc.close())
        await plane.leave(ROOM, "carol")  # renegotiates alice (closed) and bob
        await closing
        await until(losses.changed, lambda: losses.reasons == ["closed"])
        seen = bob.count_from("video", "alice")
        assert "alice" not in plane._rooms[ROOM].participants
        assert plane.stats()["rooms"][ROOM]["peer_connections"] == 1
        assert seen >= 2 and bob.errors == []
    finally:
        for peer in (alice, bob, carol):
            await peer.close()


async def test_an_unanswered_offer_is_sent_again_once_then_dropped() -> None:
    plane = MediaPlane(MediaConfig(ice_servers=[], answer_timeout_s=0.3))
    offers: list[dict[str, Any] | None] = []
    losses = Losses()

    async def silent(kind: str, payload: dict[str, Any] | None) -> None:
        offers.append(payload)

    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await plane.join(ROOM, "silent", silent, losses)
        await until(losses.changed, lambda: losses.reasons == ["unanswered"], timeout=5)
        assert loop.time() - start >= 0.6
        assert len(offers) == 2 and offers[0] == offers[1]  # the same offer, re-sent
        assert plane.stats()["total"]["peer_connections"] == 0
        assert connections_gauge(ROOM) == 0
    finally:
        await plane.close()


async def test_an_answer_to_the_repeated_offer_keeps_the_connection(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    # (1 s, not less: a real aiortc peer must answer within it on a busy machine)
    timeout = 1.0
    plane = MediaPlane(MediaConfig(ice_servers=[], answer_timeout_s=timeout))
    losses = Losses()
    late = PeerClient(plane, ROOM, "late", vp8_clip, opus_clip)
    first: list[bool] = []

    async def answer_the_second(kind: str, payload: dict[str, Any] | None) -> None:
        if not first:
            first.append(True)  # "lost" on the way
            return
        await late.sink(kind, payload)

    try:
        await plane.join(ROOM, "late", answer_the_second, losses)
        await until(late.changed, lambda: late.answered == 1, timeout=5)
        # The answer disarmed the timer: nothing fires one more timeout later (a bounded
        # wait that must expire).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(losses.changed.wait(), timeout * 1.5)
        assert losses.reasons == [] and late.errors == [] and len(late.offers) == 1
        assert plane.stats()["rooms"][ROOM]["peer_connections"] == 1
    finally:
        await late.close()
        await plane.close()


async def test_joins_of_one_participant_are_serialised(plane: MediaPlane) -> None:
    offers: list[dict[str, Any] | None] = []

    async def sink(kind: str, payload: dict[str, Any] | None) -> None:
        offers.append(payload)

    await asyncio.gather(*(plane.join(ROOM, "twice", sink) for _ in range(5)))
    assert plane.stats()["rooms"][ROOM]["peer_connections"] == 1
    assert connections_gauge(ROOM) == 1  # no connection leaked past the room's books
    assert len(offers) == 5
    await plane.leave(ROOM, "twice")
    assert connections_gauge(ROOM) == 0


@pytest.mark.parametrize(
    "mutate,words",
    [
        (lambda s: "garbage", "must start with v=0"),
        (lambda s: s.replace("a=fingerprint:sha-256 ", "a=fingerprint:"), "DTLS fingerprint"),
        (lambda s: "\r\n".join(x for x in s.splitlines() if "fingerprint" not in x), "fingerprint"),
        (lambda s: "\r\n".join(x for x in s.splitlines() if "ice-pwd" not in x), "ICE credentials"),
        (lambda s: s.replace("a=setup:active", "a=setup:actpass"), "active or passive"),
        (lambda s: s.replace("a=rtcp-mux\r\n", ""), "rtcp-mux"),
        (lambda s: s.split("m=video")[0], "media sections"),
        (lambda s: s.replace("a=mid:1", "a=mid:9"), "mid"),
        (lambda s: s.replace("m=video", "m=audio", 1), "video in the offer"),
        (lambda s: s + "not an sdp line\r\n", "not an SDP line"),
    ],
    ids=[
        "not-sdp",
        "fingerprint-without-value",
        "no-fingerprint",
        "no-ice-pwd",
        "setup-actpass",
        "no-rtcp-mux",
        "missing-section",
        "wrong-mid",
        "wrong-kind",
        "junk-line",
    ],
)
async def test_bad_answers_are_refused_in_words(plane: MediaPlane, mutate: Any, words: str) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    offers: list[dict[str, Any]] = []

    async def sink(kind: str, payload: dict[str, Any] | None) -> None:
        assert payload is not None
        offers.append(payload)

    await plane.join(ROOM, "p", sink)
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await peer.setRemoteDescription(RTCSessionDescription(**offers[0]))
        await peer.setLocalDescription(await peer.createAnswer())
        good = peer.localDescription.sdp
        with pytest.raises(MediaError) as refused:
            await plane.answer(ROOM, "p", {"type": "answer", "sdp": mutate(good)})
        message = str(refused.value)
        assert words in message, message
        for python in ("unpack", "Error", "Traceback", "object", "NoneType"):
            assert python not in message, message
        await plane.answer(ROOM, "p", {"type": "answer", "sdp": good})  # still answerable
    finally:
        await peer.close()
