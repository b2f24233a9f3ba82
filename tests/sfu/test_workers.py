"""Media workers: one room across two worker processes, a worker killed mid-call."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest

from devtools.media import Clip
from devtools.poll import poll_until
from sfu.commands import Answer, Candidate, Event, Join, Leave, MediaLost, OfferToClient, Refused
from sfu.pool import WorkerPool
from sfu.workers import PoolConfig

from .peers import PeerClient, until

ROOM = "spread"
pytestmark = pytest.mark.timeout(90)


class PortPlane:
    """The plane API the test peers speak, over a `MediaPort` (what signaling does)."""

    def __init__(self) -> None:
        self.sinks: dict[str, Any] = {}
        self.lost: asyncio.Queue[MediaLost] = asyncio.Queue()
        self.port: WorkerPool | None = None

    async def on_event(self, event: Event) -> None:
        if isinstance(event, OfferToClient):
            sink = self.sinks.get(event.participant)
            if sink is not None:
                await sink("offer", {"type": "offer", "sdp": event.sdp})
        elif isinstance(event, MediaLost):
            self.lost.put_nowait(event)

    async def _run(self, command: Any) -> None:
        assert self.port is not None
        reply = await self.port.run(command)
        if isinstance(reply, Refused):
            raise RuntimeError(reply.message)

    async def join(self, room: str, pid: str, sink: Any) -> None:
        self.sinks[pid] = sink
        await self._run(Join(room, pid))

    async def answer(self, room: str, pid: str, answer: dict[str, Any]) -> None:
        await self._run(Answer(room, pid, sdp=answer["sdp"]))

    async def candidate(self, room: str, pid: str, candidate: dict[str, Any] | None) -> None:
        await self._run(Candidate(room, pid, candidate=candidate))


@pytest.fixture
async def pool() -> AsyncIterator[tuple[WorkerPool, PortPlane]]:
    plane = PortPlane()
    workers = WorkerPool(PoolConfig(workers=2, placement="spread"), plane.on_event)
    plane.port = workers
    await workers.start()
    try:
        yield workers, plane
    finally:
        pids = [w.pid for w in workers.workers]
        await workers.close()
        # SIGTERM of the pool leaves no worker process behind
        for pid in pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


async def test_a_room_spread_over_two_workers_forwards_everyone_to_everyone(
    pool: tuple[WorkerPool, PortPlane], vp8_clip: Clip, opus_clip: Clip
) -> None:
    workers, plane = pool
    peers = [PeerClient(plane, ROOM, f"p{i}", vp8_clip, opus_clip) for i in range(4)]
    try:
        for peer in peers:
            await peer.join()
        assert {len(w.participants) for w in workers.workers} == {2}  # two on each worker
        for peer in peers:
            others = [o.id for o in peers if o is not peer]
            await peer.wait_frames("video", others, n=10)
            await peer.wait_frames("audio", others, n=10)
            for other in others:
                assert peer.frames_by_stream("video")[other][0][0] is True
        status = workers.stats()["workers"]
        assert [s["state"] for s in status] == ["up", "up"]
    finally:
        for peer in peers:
            await peer.close()


async def test_a_killed_worker_is_restarted_and_its_participants_come_back(
    pool: tuple[WorkerPool, PortPlane], vp8_clip: Clip, opus_clip: Clip
) -> None:
    workers, plane = pool
    peers = {f"p{i}": PeerClient(plane, ROOM, f"p{i}", vp8_clip, opus_clip) for i in range(4)}
    try:
        for peer in peers.values():
            await peer.join()
        for peer in peers.values():
            await peer.wait_frames("video", [o for o in peers if o != peer.id], n=5)
        victim = workers.workers[1]
        gone = sorted(who for _, who in victim.participants)
        kept = sorted(set(peers) - set(gone))
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        os.kill(victim.pid, signal.SIGKILL)
        # what signaling does on MediaLost: a fresh connection (here a fresh client)
        for _ in gone:
            lost = await asyncio.wait_for(plane.lost.get(), 10)
            assert lost.reason == "failed" and lost.participant in gone
            with contextlib.suppress(Exception):
                await peers[lost.participant].close()
            peers[lost.participant] = PeerClient(plane, ROOM, lost.participant, vp8_clip, opus_clip)
            await peers[lost.participant].join()
        for who in gone:
            await peers[who].wait_frames("video", [o for o in peers if o != who], n=5)
        assert loop.time() - killed_at < 15
        # the survivors kept each other all along, and got the others back
        for who in kept:
            await peers[who].wait_frames("video", [o for o in peers if o != who], n=5)
        # restarted after its participants were told (they came back on the live worker)
        await poll_until(lambda: workers.workers[1].state == "up", timeout=30)
        assert workers.workers[1].restarts == 1
        for who in list(peers):
            reply = await workers.run(Leave(ROOM, who))
            assert not isinstance(reply, Refused)
    finally:
        for peer in peers.values():
            await peer.close()


async def test_load_placement_keeps_a_room_on_one_worker_until_it_would_overfill_it(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    """``MEDIA_PLACEMENT=load``: joiners stay with their room's worker while what it will
    forward fits its capacity, counted at the join (before any packet flows); the one that
    would overfill it goes to the other worker, and the room still gets everyone."""
    plane = PortPlane()
    # each publisher counted as 1,000 pkt/s per subscriber: 2 people forward 2,000 and a
    # third would add 4,000 more, over the capacity of 5,000
    config = PoolConfig(workers=2, placement="load", capacity_pps=5_000, publisher_pps=1_000)
    pool = WorkerPool(config, plane.on_event)
    plane.port = pool
    await pool.start()
    peers = [PeerClient(plane, ROOM, f"p{i}", vp8_clip, opus_clip) for i in range(3)]
    try:
        for peer in peers:
            await peer.join()
        seats = {who: w.index for w in pool.workers for _, who in w.participants}
        assert seats["p0"] == seats["p1"] != seats["p2"]
        for peer in peers:
            await peer.wait_frames("video", [o.id for o in peers if o is not peer], n=5)
    finally:
        for peer in peers:
            await peer.close()
        await pool.close()


class Bus:
    """Two nodes' pools on one message bus (in the server: Redis pub/sub)."""

    def __init__(self) -> None:
        self.pools: list[WorkerPool] = []

    def node(self) -> Any:
        bus = self

        class Node:
            async def publish(self, message: dict[str, Any]) -> None:
                for pool in bus.pools:
                    await pool.on_bus(message)

        return Node()


async def test_a_room_over_two_nodes_one_of_them_with_two_workers(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    bus = Bus()
    planes = [PortPlane(), PortPlane()]
    pools = [
        WorkerPool(PoolConfig(workers=1, node="a"), planes[0].on_event, bus.node()),
        WorkerPool(
            PoolConfig(workers=2, node="b", placement="spread"), planes[1].on_event, bus.node()
        ),
    ]
    bus.pools = pools
    for plane, pool in zip(planes, pools, strict=True):
        plane.port = pool
        await pool.start()
    peers = [
        PeerClient(planes[0], ROOM, "a1", vp8_clip, opus_clip),
        PeerClient(planes[1], ROOM, "b1", vp8_clip, opus_clip),
        PeerClient(planes[1], ROOM, "b2", vp8_clip, opus_clip),
    ]
    try:
        for peer in peers:
            await peer.join()
        for peer in peers:
            others = [o.id for o in peers if o is not peer]
            await peer.wait_frames("video", others, n=10)
            await peer.wait_frames("audio", others, n=10)
        # node a dies: node b's participants keep each other, a1 leaves their rooms
        answered = peers[1].answered
        await pools[1].node_gone("a")
        await until(peers[1].changed, lambda: peers[1].answered > answered)
        seen = peers[1].count_from("video", "b2")
        await until(peers[1].changed, lambda: peers[1].count_from("video", "b2") > seen + 5)
    finally:
        for peer in peers:
            await peer.close()
        for pool in pools:
            await pool.close()
