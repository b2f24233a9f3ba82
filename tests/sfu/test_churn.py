"""Join/leave churn leaves no peer connections, tasks, threads or m-lines behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from devtools.media import Clip
from devtools.poll import poll_until
from sfu import MediaPlane

from .peers import TIMEOUT, PeerClient, settle_tasks, until

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
