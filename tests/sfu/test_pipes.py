"""One room on two planes (two workers): each track crosses the pipe once, both ways."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator

import pytest

from devtools.media import Clip
from sfu import MediaConfig, MediaPlane
from sfu.pipes import PipedSource, PipeEndpoint

from .peers import MeshPeer, PeerClient, until

ROOM = "piped"


class Coordinator:
    """What the worker pool does for a room on several planes, reduced to two planes."""

    def __init__(self, planes: list[MediaPlane]) -> None:
        self.planes = planes
        for plane in planes:
            plane.on_published = self._published(plane)

    def _published(self, origin: MediaPlane):  # type: ignore[no-untyped-def]
        async def published(room: str, who: str, tracks: list[PipedSource]) -> None:
            assert origin.pipe is not None
            for other in self.planes:
                if other is not origin and other.pipe is not None:
                    await other.remote_tracks(room, who, origin.pipe.address, tracks)
                    origin.pipe_to(room, who, other.pipe.address)

        return published

    async def joined(self, home: MediaPlane, who: str) -> None:
        for other in self.planes:
            if other is not home:
                await other.remote_join(ROOM, who)

    async def left(self, home: MediaPlane, who: str) -> None:
        await home.leave(ROOM, who)
        for other in self.planes:
            if other is not home:
                await other.leave(ROOM, who)


@pytest.fixture
async def planes() -> AsyncIterator[list[MediaPlane]]:
    made = [MediaPlane(MediaConfig(ice_servers=[])) for _ in range(2)]
    for plane in made:
        await plane.open_pipe("127.0.0.1")
    yield made
    for plane in made:
        await plane.close()
        if plane.pipe is not None:
            plane.pipe.close()


async def test_a_room_on_two_planes_forwards_every_track_across_the_pipe_once(
    planes: list[MediaPlane], vp8_clip: Clip, opus_clip: Clip
) -> None:
    a, b = planes
    coordinator = Coordinator(planes)
    ann = PeerClient(a, ROOM, "ann", vp8_clip, opus_clip)
    ada = PeerClient(a, ROOM, "ada", None, None, mode="none")
    ben = PeerClient(b, ROOM, "ben", vp8_clip, opus_clip)
    bea = PeerClient(b, ROOM, "bea", None, None, mode="none")
    try:
        for peer, home in ((ann, a), (ada, a), (ben, b), (bea, b)):
            await peer.join()
            await coordinator.joined(home, peer.id)
        for peer, far in ((ada, "ben"), (bea, "ann"), (ann, "ben"), (ben, "ann")):
            await peer.wait_frames("video", [far], n=10)
            await peer.wait_frames("audio", [far], n=10)
            assert peer.frames_by_stream("video")[far][0][0] is True  # from a keyframe
        # two subscribers on b, yet each of ann's tracks crosses the pipe once
        assert a.pipe is not None and b.pipe is not None
        assert len(b.pipe.sources) == 2 and len(a.pipe.sources) == 2
        piped = sum(leg.packets for leg in a.pipes.legs[(ROOM, "ann")].values())
        received = sum(s.received for s in b.pipe.sources.values())
        assert piped > 0 and received >= piped * 0.9
        # what crossed the pipe is counted apart from what reached clients
        assert sum(a.counters()["piped_packets"].values()) >= piped

        # ann leaves: ben and bea are renegotiated, the pipe carries nothing for her
        answered = bea.answered
        await coordinator.left(a, "ann")
        await until(bea.changed, lambda: bea.answered > answered)
        assert len(b.pipe.sources) == 0 and (ROOM, "ann") not in a.pipes.legs
        seen = ada.count_from("video", "ben")
        await until(ada.changed, lambda: ada.count_from("video", "ben") > seen + 5)
    finally:
        for peer in (ann, ada, ben, bea):
            await peer.close()


async def test_keyframe_requests_and_loss_on_the_pipe_travel_back(
    planes: list[MediaPlane], vp8_clip: Clip
) -> None:
    a, b = planes
    coordinator = Coordinator(planes)
    ann = PeerClient(a, ROOM, "ann", vp8_clip, None)
    bea = PeerClient(b, ROOM, "bea", None, None, mode="none")
    try:
        await ann.join()
        await coordinator.joined(a, "ann")
        await bea.join()
        await coordinator.joined(b, "bea")
        await bea.wait_frames("video", ["ann"], n=3)
        assert b.pipe is not None and a.pipe is not None
        # every 10th datagram on the pipe is lost: b NACKs a over the pipe, a resends
        deliver = b.pipe.datagram_received
        count = [0]

        def lossy(data: bytes, addr: tuple[str, int]) -> None:
            count[0] += 1
            if count[0] % 10 == 0 and not 191 < data[1] < 224:
                return
            deliver(data, addr)

        b.pipe.datagram_received = lossy  # type: ignore[method-assign]
        start = bea.count_from("video", "ann")
        await until(bea.changed, lambda: bea.count_from("video", "ann") > start + 60)
        frames = bea.frames_by_stream("video")["ann"][start:]
        assert all(y[1] - x[1] == 3000 for x, y in itertools.pairwise(frames))
        legs = list(a.pipes.legs[(ROOM, "ann")].values())
        assert sum(leg.retransmits for leg in legs) > 0
    finally:
        await ann.close()
        await bea.close()


async def test_a_mesh_client_on_one_plane_sees_a_publisher_on_the_other(
    planes: list[MediaPlane], vp8_clip: Clip, opus_clip: Clip
) -> None:
    a, b = planes
    coordinator = Coordinator(planes)
    ann = PeerClient(a, ROOM, "ann", vp8_clip, opus_clip)
    mel = MeshPeer(b, ROOM, "mel", vp8_clip, opus_clip)
    try:
        await ann.join()
        await coordinator.joined(a, "ann")
        await mel.join()
        await coordinator.joined(b, "mel")
        await mel.offer_to("ann")  # ann is a remote participant on b: b plays her
        await mel.wait_frames(["ann"], n=5)
        await ann.wait_frames("video", ["mel"], n=5)
    finally:
        await ann.close()
        await mel.close()


def _rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


async def test_a_pipe_holds_a_burst_of_every_track_while_its_worker_is_busy() -> None:
    """A pipe carries all of a room's remote tracks on one socket: while its worker is off
    the CPU for a moment, a burst for many tracks must wait in the socket, not be dropped
    (the kernel's ~200 kB default held ~90 packets, and each drop cost every subscriber a
    NACK round and a keyframe)."""
    if _rmem_max() < 2 * 1024 * 1024:
        pytest.skip("net.core.rmem_max caps socket buffers below the burst")
    arrived = 0
    changed = asyncio.Event()

    class Counting(PipeEndpoint):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            nonlocal arrived
            arrived += 1
            changed.set()

    pipe = Counting()
    host, port = await pipe.start("127.0.0.1")
    burst = 1000  # 100 ms of 20 tracks' video, 1.2 MB
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            # sent while this loop cannot read: the worker is busy
            for seq in range(burst):
                out.sendto(bytes([0x80, 96]) + seq.to_bytes(2, "big") + bytes(1196), (host, port))
        with contextlib.suppress(TimeoutError):
            await until(changed, lambda: arrived == burst, timeout=5)
    finally:
        assert pipe.transport is not None
        pipe.transport.close()
    assert arrived == burst


class Hosting:
    """As the pool does it: tracks are piped only to the planes that host the room, a
    plane new to the room is introduced to what is published there, and the plane whose
    last participant leaves is unpiped and closes the room."""

    def __init__(self, planes: list[MediaPlane]) -> None:
        self.planes = planes
        self.home: dict[str, MediaPlane] = {}
        self.tracks: dict[str, list[PipedSource]] = {}
        for plane in planes:
            plane.on_published = self._published(plane)

    def hosts(self) -> set[MediaPlane]:
        return set(self.home.values())

    def _published(self, origin: MediaPlane):  # type: ignore[no-untyped-def]
        async def published(room: str, who: str, tracks: list[PipedSource]) -> None:
            assert origin.pipe is not None
            self.tracks[who] = tracks
            for other in self.hosts() - {origin}:
                assert other.pipe is not None
                await other.remote_tracks(room, who, origin.pipe.address, tracks)
                origin.pipe_to(room, who, other.pipe.address)

        return published

    async def join(self, peer: PeerClient, home: MediaPlane) -> None:
        new_host = home not in self.hosts()
        self.home[peer.id] = home
        if new_host:
            assert home.pipe is not None
            for member, seat in self.home.items():
                if seat is not home:
                    await home.remote_join(ROOM, member)
                    if member in self.tracks and seat.pipe is not None:
                        await home.remote_tracks(
                            ROOM, member, seat.pipe.address, self.tracks[member]
                        )
                        seat.pipe_to(ROOM, member, home.pipe.address)
        await peer.join()
        for other in self.hosts() - {home}:
            await other.remote_join(ROOM, peer.id)

    async def leave(self, who: str) -> None:
        home = self.home.pop(who)
        self.tracks.pop(who, None)
        await home.leave(ROOM, who)
        for other in self.hosts() - {home}:
            await other.leave(ROOM, who)
        if home not in self.hosts():
            assert home.pipe is not None
            for member, seat in self.home.items():
                seat.unpipe(ROOM, member, home.pipe.address)
            await home.close_room(ROOM)


def _pipe_state(plane: MediaPlane) -> tuple[object, ...]:
    assert plane.pipe is not None
    return (
        {k: set(v) for k, v in plane.pipes.targets.items()},
        {k: set(v) for k, v in plane.pipes.legs.items()},
        set(plane.pipe.legs),
        set(plane.pipe.sources),
    )


async def test_visitors_on_another_worker_leave_no_pipe_behind(
    planes: list[MediaPlane], vp8_clip: Clip, opus_clip: Clip
) -> None:
    """A room stays open on worker a (ann publishes, ada watches); visitors come and go,
    on b (vic) and on a (val). Each time b's last visitor leaves, b's pipes are torn
    down: a pipes nothing to b any more, b holds no remote track, and both planes are
    back where they were with only ann and ada. A PipeTo that crossed a leave (the pool
    sends them from loops that await) leaves no target either, so val coming back is
    not piped to b, which hosts nobody of the room."""
    a, b = planes
    room = Hosting(planes)
    ann = PeerClient(a, ROOM, "ann", vp8_clip, opus_clip)
    ada = PeerClient(a, ROOM, "ada", None, None, mode="none")
    visitors: list[PeerClient] = []
    try:
        await room.join(ann, a)
        await room.join(ada, a)
        await ada.wait_frames("video", ["ann"], n=3)
        before = (_pipe_state(a), _pipe_state(b))
        assert a.pipe is not None and b.pipe is not None
        for _ in range(2):
            vic = PeerClient(b, ROOM, "vic", vp8_clip, opus_clip)
            val = PeerClient(a, ROOM, "val", vp8_clip, None)
            visitors += [vic, val]
            await room.join(vic, b)
            await room.join(val, a)
            for peer, seen in ((vic, ["ann", "val"]), (ann, ["vic", "val"])):
                await peer.wait_frames("video", seen, n=3)
            assert (ROOM, "ann") in a.pipes.legs and (ROOM, "val") in a.pipes.legs
            await room.leave("val")
            await room.leave("vic")
            a.pipe_to(ROOM, "val", b.pipe.address)  # PipeTos that crossed their leaves
            b.pipe_to(ROOM, "vic", a.pipe.address)
            assert (_pipe_state(a), _pipe_state(b)) == before
            assert ROOM not in b.stats()["rooms"]
            # ann goes on publishing: nothing goes down the pipe to b
            out = a.pipe.packets_out
            await ada.wait_frames("video", ["ann"], n=ada.count_from("video", "ann") + 5)
            assert a.pipe.packets_out == out
            await vic.close()
            await val.close()

        # val comes back to a: b hosts nobody of the room, nothing is piped there
        back = PeerClient(a, ROOM, "val", vp8_clip, None)
        visitors.append(back)
        frames = ada.count_from("video", "val")
        await room.join(back, a)
        await ada.wait_frames("video", ["val"], n=frames + 5)
        assert (ROOM, "val") not in a.pipes.legs
        assert a.pipe.packets_out == out
        assert ann.errors == [] and ada.errors == []
    finally:
        for peer in (ann, ada, *visitors):
            await peer.close()


async def test_a_pipe_listening_on_every_address_announces_the_advertised_one() -> None:
    """``MEDIA_PIPE_HOST=0.0.0.0`` with ``MEDIA_PIPE_ADVERTISE``: other nodes are told the
    advertised address, and what they send there arrives."""
    from sfu.pool import WorkerPool
    from signaling.app import build_media
    from signaling.config import Settings

    settings = Settings(
        room_mode="sfu",
        media_workers=1,
        media_pipe_host="0.0.0.0",
        media_pipe_advertise="127.0.0.1",
        media_worker_capacity_pps=12_345,
    )
    pool = build_media(settings)
    assert isinstance(pool, WorkerPool) and pool.config.capacity_pps == 12_345
    await pool.start()
    try:
        host, port = pool.workers[0].pipe
        assert host == "127.0.0.1" and port > 0
        endpoint = pool.workers[0].plane.pipes.endpoint  # type: ignore[union-attr]
        arrived = asyncio.Event()
        assert endpoint is not None
        endpoint.datagram_received = lambda data, addr: arrived.set()  # type: ignore[method-assign]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            out.sendto(bytes([0x80, 96]) + bytes(10), (host, port))
        await asyncio.wait_for(arrived.wait(), 5)
    finally:
        await pool.close()
