"""Media workers behind the real server process: one sfu room over two worker processes,
one of them SIGKILLed mid-call, and the server's SIGTERM taking its workers with it.

The clients are real socket.io clients with real aiortc connections; a client replaces its
connection when the server's DTLS fingerprint changes, as the web client does
(`web/js/sfu.js`): that is what a fresh offer on another worker looks like to it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psutil
import pytest

from devtools.media import Clip
from devtools.poll import poll_until
from tests.clients import Client, http_json
from tests.server import ServerProcess, inprocess_server, running_server
from tests.sfu.peers import PeerClient

ROOM = "workers"
FRESH_OFFER_S = 5.0
"""A participant of a dead worker gets a fresh offer on a live one within this (issue 11)."""
MAX_GAP_S = 1.0
"""Longest pause allowed between two frames of a stream that never left its worker: the
SFU's keyframe interval (0.5 s, PLIs rate-limited to it) and a round trip, with margin for
two shared cores."""

pytestmark = pytest.mark.timeout(120)


def fingerprint(sdp: str) -> str:
    match = re.search(r"a=fingerprint:(\S+ \S+)", sdp)
    assert match is not None
    return match.group(1)


class Caller:
    """One person: a socket.io client and an SFU connection, replaced (a new
    `PeerClient`) whenever the server offers from a new DTLS identity."""

    def __init__(self, url: str, name: str, video: Clip, audio: Clip) -> None:
        self.url = url
        self.name = name
        self.clips = (video, audio)
        self.client = Client(url, name)
        self.peers: list[PeerClient] = []
        self.fingerprint = ""
        self.fresh_at: list[float] = []
        """When each offer from a new server connection arrived (time.monotonic)."""

    @property
    def id(self) -> str:
        return self.client.sid

    @property
    def peer(self) -> PeerClient:
        return self.peers[-1]

    async def enter(self) -> None:
        await self.client.connect()
        self.client.sio.on("video:offer", self._on_offer)
        self.peers.append(PeerClient(self, ROOM, self.id, *self.clips))
        ack = await self.client.call("video:join-room", {"roomId": ROOM, "sfu": True})
        assert ack["ok"] is True, ack

    async def _on_offer(self, payload: dict[str, Any]) -> None:
        await self.client.events["video:offer"].put(payload)
        if payload.get("from") != "sfu":
            return
        offer = payload["offer"]
        mine = fingerprint(offer["sdp"])
        if self.fingerprint and mine != self.fingerprint:
            self.fresh_at.append(time.monotonic())
            self.peers.append(PeerClient(self, ROOM, self.id, *self.clips))
        self.fingerprint = mine
        await self.peer.sink("offer", offer)

    # the plane API `PeerClient` speaks: the contract's `to: "sfu"` events
    async def join(self, room: str, pid: str, sink: Any) -> None:
        raise AssertionError("a caller joins by itself (enter)")

    async def answer(self, room: str, pid: str, answer: dict[str, Any]) -> None:
        await self.client.emit("video:answer", {"to": "sfu", "answer": answer})

    async def candidate(self, room: str, pid: str, candidate: dict[str, Any] | None) -> None:
        await self.client.emit("video:ice-candidate", {"to": "sfu", "candidate": candidate})

    def moved(self) -> bool:
        return bool(self.fresh_at)

    def arrivals(self, kind: str, stream: str) -> list[float]:
        """Arrival times of every frame from ``stream``, over all of this caller's connections."""
        return sorted(
            at for peer in self.peers for _, _, at in peer.frames_by_stream(kind).get(stream, [])
        )

    def count(self, kind: str, stream: str, since: float = 0.0) -> int:
        return sum(1 for at in self.arrivals(kind, stream) if at > since)

    async def wait_frames(
        self, kind: str, streams: list[str], n: int = 5, since: float = 0.0
    ) -> None:
        await poll_until(lambda: all(self.count(kind, s, since) >= n for s in streams), timeout=15)

    def errors(self) -> list[Any]:
        """`error` events received, and whatever failed applying an offer."""
        return self.client.pending("error") + [e for p in self.peers for e in p.errors]

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        await self.client.close()


def two_workers() -> AbstractAsyncContextManager[ServerProcess]:
    """The real server, sfu rooms, two media workers, each joiner on the next worker."""
    return running_server(ROOM_MODE="sfu", MEDIA_WORKERS="2", MEDIA_PLACEMENT="spread")


async def workers_of(server: ServerProcess) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{server.url}/health")
    assert status == 200, body
    workers: list[dict[str, Any]] = body["workers"]
    return workers


@asynccontextmanager
async def room_of_four(
    server: ServerProcess, video: Clip, audio: Clip
) -> AsyncIterator[list[Caller]]:
    callers = [Caller(server.url, f"p{i}", video, audio) for i in range(4)]
    try:
        for caller in callers:
            await caller.enter()
        yield callers
    finally:
        for caller in callers:
            await caller.close()


async def test_a_room_across_two_workers_gets_everyone_and_health_lists_them(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        two_workers() as server,
        room_of_four(server, vp8_clip, opus_clip) as callers,
    ):
        for caller in callers:
            others = [o.id for o in callers if o is not caller]
            await caller.wait_frames("video", others, n=10)
            await caller.wait_frames("audio", others, n=10)
            for other in others:
                assert caller.peer.frames_by_stream("video")[other][0][0] is True
        workers = await workers_of(server)
        assert [(w["index"], w["state"]) for w in workers] == [(0, "up"), (1, "up")]
        assert [w["participants"] for w in workers] == [2, 2]  # the room spans both

        # Their own reports (once a second) catch up with the room.
        async def reported() -> bool:
            return all(
                w["peer_connections"] == 2 and w["pipes"] > 0 for w in await workers_of(server)
            )

        await poll_until(reported, timeout=5)
        workers = await workers_of(server)
        for worker in workers:
            assert psutil.Process(worker["pid"]).ppid() == server.process.pid
            assert worker["peer_connections"] == 2 and worker["pipes"] > 0
            assert worker["forwarded_packets_per_s"] > 0 and worker["cpu_s_per_s"] > 0
        status, text = await text_of(f"{server.url}/metrics/prometheus")
        assert status == 200
        for index in ("0", "1"):
            assert f'sfu_worker_up{{worker="{index}"}} 1.0' in text
            assert f'sfu_worker_peer_connections{{worker="{index}"}} 2.0' in text
        assert 'sfu_worker_pipes{worker="1"}' in text
        assert 'sfu_worker_cpu_seconds_total{worker="0"}' in text
        for caller in callers:
            assert caller.errors() == [], caller.name


async def text_of(url: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


def max_gap(times: list[float], start: float, end: float) -> float:
    """The longest pause between frames over [start, end], its edges included."""
    inside = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(inside))


async def test_a_killed_worker_is_restarted_and_its_participants_come_back_on_a_live_one(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        two_workers() as server,
        room_of_four(server, vp8_clip, opus_clip) as callers,
    ):
        for caller in callers:  # a second of frames before the kill: the baseline below
            await caller.wait_frames("video", [o.id for o in callers if o is not caller], n=30)
        before = await workers_of(server)
        victim = before[1]
        # spread placement: the 1st and 3rd joiners on worker 0, the 2nd and 4th on 1
        gone, kept = callers[1::2], callers[0::2]
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        # What a browser may still say about the connection it is losing: no error for it.
        for caller in gone:
            await caller.client.emit("video:ice-candidate", {"to": "sfu", "candidate": None})

        async def noticed() -> bool:
            return bool((await workers_of(server))[1]["state"] != "up")

        await poll_until(noticed, timeout=5)  # once the server has noticed, say it again
        for caller in gone:
            await caller.client.emit("video:ice-candidate", {"to": "sfu", "candidate": None})

        for caller in gone:
            await poll_until(caller.moved, timeout=FRESH_OFFER_S + 5)
            assert caller.fresh_at[0] - killed_at < FRESH_OFFER_S
        for caller in kept:
            assert caller.fresh_at == []  # their connection never moved
        # Everyone gets everyone again, on the fresh connections.
        for caller in callers:
            others = [o.id for o in callers if o is not caller]
            await caller.wait_frames("video", others, n=5, since=killed_at + 0.5)
            await caller.wait_frames("audio", others, n=5, since=killed_at + 0.5)
        recovered_at = time.monotonic()
        # The survivors' streams to each other never stopped for longer than a keyframe
        # interval (or than the same stream paused over as long a window before the kill,
        # should the shared machine make that longer).
        for caller in kept:
            for other in kept:
                if other is not caller:
                    times = caller.arrivals("video", other.id)
                    window = recovered_at - killed_at
                    before_gap = max_gap(times, max(times[0], killed_at - window), killed_at)
                    gap = max_gap(times, killed_at, recovered_at)
                    bound = max(MAX_GAP_S, 2 * before_gap)
                    assert gap < bound, (caller.name, other.name, gap, before_gap)

        # The dead worker came back (a new process) and took nobody back by itself.
        async def restarted() -> bool:
            return bool((await workers_of(server))[1]["state"] == "up")

        await poll_until(restarted, timeout=10)
        after = await workers_of(server)
        assert after[1]["state"] == "up" and after[1]["restarts"] == 1
        assert after[1]["pid"] != victim["pid"]
        assert sum(w["participants"] for w in after) == 4
        assert (
            not psutil.pid_exists(victim["pid"])
            or psutil.Process(victim["pid"]).status() == psutil.STATUS_ZOMBIE
        )
        for caller in callers:
            assert caller.errors() == [], caller.name


async def test_sigterm_of_the_server_leaves_no_worker_process(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        two_workers() as server,
        room_of_four(server, vp8_clip, opus_clip) as callers,
    ):
        for caller in callers:
            await caller.wait_frames("video", [o.id for o in callers if o is not caller])
        pids = [w["pid"] for w in await workers_of(server)]
        children = {c.pid for c in psutil.Process(server.process.pid).children()}
        assert set(pids) <= children
        server.process.terminate()
        await asyncio.wait_for(server.process.wait(), 15)
        await poll_until(lambda: not any(_running(pid) for pid in pids), timeout=10)


async def test_sigkill_of_the_server_leaves_no_worker_process() -> None:
    """No clean-up at all: each worker sees its channel close and exits by itself."""
    async with two_workers() as server:
        pids = [w["pid"] for w in await workers_of(server)]
        assert len(pids) == 2
        server.kill()
        await asyncio.wait_for(server.process.wait(), 15)
        await poll_until(lambda: not any(_running(pid) for pid in pids), timeout=10)


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_a_single_process_server_lists_its_media_as_worker_0() -> None:
    """``MEDIA_WORKERS=1``: no extra process; the one plane is this process, listed alike."""
    async with inprocess_server(room_mode="sfu") as server:
        status, body = await http_json("GET", f"{server.url}/health")
        assert status == 200
        [worker] = body["workers"]
        assert worker["index"] == 0 and worker["pid"] == os.getpid()
        assert worker["state"] == "up" and worker["participants"] == 0
    async with inprocess_server(room_mode="mesh") as server:
        _, body = await http_json("GET", f"{server.url}/health")
        assert body["workers"] == []  # no SFU at all
