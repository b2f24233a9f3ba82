"""Join/leave churn leaves no peer connections, tasks, threads or m-lines behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from devtools.media import Clip
from devtools.poll import poll_until
from sfu import MediaPlane
from sfu.mesh import MeshParticipant

from .peers import TIMEOUT, MeshPeer, PeerClient, settle_tasks, until

ROOM = "churn"


async def _ignore(kind: str, payload: dict[str, Any] | None) -> None:
    """A churning participant that never answers (like a browser closed mid-offer)."""


async def test_join_leave_churn_leaves_nothing_behind(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    tasks_before = len(asyncio.all_tasks())
    threads_before = threading.active_count()
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="add-first")
    try:
        await alice.join()
        await bob.join()
        await alice.wait_frames("video", ["bob"], n=3)

        # a few cycles with real media: each visitor sees alice from a keyframe
        for i in range(3):
            visitor = PeerClient(plane, ROOM, f"visitor-{i}", vp8_clip, None, mode="fill")
            await visitor.join()
            await visitor.wait_frames("video", ["alice", "bob"], n=2)
            assert visitor.frames_by_stream("video")["alice"][0][0] is True
            await plane.leave(ROOM, visitor.id)
            await visitor.close()

        # 200 cycles without media: 20 here (they never publish, so alice and bob are
        # not even renegotiated), 180 in a room of their own (~6 ms each)
        # wait until the visitors' renegotiations are over
        def stable() -> bool:
            return all(
                not p.negotiator.in_flight
                and not p.negotiator.pending
                and p.pc.signalingState == "stable"
                for p in map(
                    lambda pid: plane._get(ROOM, pid), list(plane._rooms[ROOM].participants)
                )
            )

        await poll_until(stable, TIMEOUT)
        offers = (len(alice.offers), len(bob.offers))
        for i in range(20):
            await plane.join(ROOM, f"ghost-{i}", _ignore)
            await plane.leave(ROOM, f"ghost-{i}")
        for i in range(180):
            await plane.join("empty", f"ghost-{i}", _ignore)
            await plane.leave("empty", f"ghost-{i}")
        assert "empty" not in plane.stats()["rooms"]
        assert (len(alice.offers), len(bob.offers)) == offers

        stats = plane.stats()["rooms"][ROOM]
        assert stats["peer_connections"] == 2
        assert stats["forwarded_streams"] == 4
        # recycled inactive m-lines are reused once an answer confirmed them inactive, so
        # 23 visitors left a few spare m-lines (own 2 + the other's 2 + spares), not 46
        assert alice.mline_count() <= 10 and bob.mline_count() <= 10
        seen = alice.count_from("video", "bob")
        await until(alice.changed, lambda: alice.count_from("video", "bob") > seen + 3)
        assert alice.errors == [] and bob.errors == []
    finally:
        await alice.close()
        await bob.close()
    await plane.close()
    assert plane.stats()["rooms"] == {}
    assert plane.stats()["total"]["peer_connections"] == 0
    assert plane._tasks == set()
    assert await settle_tasks(tasks_before) <= tasks_before
    assert threading.active_count() <= threads_before


def _structure(plane: MediaPlane) -> dict[str, int]:
    """A room's line of `stats()` without the packet counters (which only grow)."""
    entry = plane.stats()["rooms"][ROOM]
    return {k: entry[k] for k in ("participants", "peer_connections", "sources")}


async def test_visitors_of_an_open_room_leave_nothing_forwarding_to_them(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """A study room that stays open: alice and bob stay, visitors (publishing or not) come
    and go. Each leave closes the visitor's connection and takes its legs off the sources
    it received: nothing is forwarded to it any more, and the room is counted as alice
    and bob alone (the leave used to mark the participant closed, which made its own
    release return at once: legs, transport, RTCP timer and connection all stayed)."""
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="fill")
    stayers = [alice, bob]
    try:
        for peer in stayers:
            await peer.join()
        await alice.wait_frames("video", ["bob"], n=3)
        await bob.wait_frames("video", ["alice"], n=3)
        sources = [s for peer in stayers for s in plane._get(ROOM, peer.id).sources()]
        legs_before = {id(s): list(s.legs) for s in sources}
        baseline = _structure(plane)
        assert baseline == {"participants": 2, "peer_connections": 2, "sources": 4}

        for i in range(3):
            publishing = i % 2 == 0
            visitor = PeerClient(
                plane,
                ROOM,
                f"visitor-{i}",
                vp8_clip if publishing else None,
                opus_clip if publishing else None,
                mode="fill" if publishing else "none",
            )
            await visitor.join()
            await visitor.wait_frames("video", ["alice", "bob"], n=2)
            if publishing:
                await alice.wait_frames("video", [visitor.id], n=2)
            gone = plane._get(ROOM, visitor.id)
            transport = gone.transport
            assert transport is not None
            legs = gone.legs()
            assert any(leg in s.legs for s in sources for leg in legs)  # it was forwarded to

            await plane.leave(ROOM, visitor.id)
            assert all(leg not in s.legs for s in sources for leg in legs)
            assert {id(s): list(s.legs) for s in sources} == legs_before
            assert transport.closed and transport._timer is None
            assert gone.pc.connectionState == "closed"
            assert all(s.closed for s in gone.sources())
            assert _structure(plane) == baseline
            # alice and bob go on receiving each other; none of it goes to the visitor
            sent, out = sum(leg.packets for leg in legs), transport.bytes_out
            await alice.wait_frames("video", ["bob"], n=alice.count_from("video", "bob") + 5)
            assert sum(leg.packets for leg in legs) == sent and transport.bytes_out == out
            await visitor.close()

        assert _structure(plane) == baseline
        assert alice.errors == [] and bob.errors == []
        # closing the room releases the stayers the same way (it marked them closed too)
        held = [plane._get(ROOM, peer.id) for peer in stayers]
        await plane.close_room(ROOM)
        assert all(p.pc.connectionState == "closed" for p in held)
        assert all(leg.source is None for p in held for leg in p.legs())
    finally:
        for peer in stayers:
            await peer.close()


async def test_a_mesh_visitor_leaving_closes_its_links(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """A mesh client's links are released with it: closed connections, no legs left on
    the publisher's sources, nothing more sent to it."""
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="fill")
    mel = MeshPeer(plane, ROOM, "mel", vp8_clip, opus_clip)
    try:
        await alice.join()
        await bob.join()
        await mel.join()
        await mel.offer_to("alice")
        await mel.wait_frames(["alice"], n=3)
        gone = plane._rooms[ROOM].participants["mel"]
        assert isinstance(gone, MeshParticipant)
        links = list(gone.links.values())
        legs = gone.legs()
        source = plane._get(ROOM, "alice").publications["video"].source
        assert any(leg in source.legs for leg in legs)

        await plane.leave(ROOM, "mel")
        assert all(leg not in source.legs for leg in legs)
        assert all(link.closed and link.pc.connectionState == "closed" for link in links)
        assert all(link.transport is not None and link.transport.closed for link in links)
        sent = sum(leg.packets for leg in legs)
        seen = bob.count_from("video", "alice")
        await until(bob.changed, lambda: bob.count_from("video", "alice") > seen + 5)
        assert sum(leg.packets for leg in legs) == sent
        assert plane.stats()["rooms"][ROOM]["peer_connections"] == 2
    finally:
        for peer in (alice, bob, mel):
            await peer.close()
