"""The media workers of one node, and the node's part in rooms spread over several nodes.

The pool places each joining participant on a worker (the least loaded by forwarded
packets/s, keeping a room on one worker while it fits), forwards every command for that
participant to its worker, and keeps rooms that span workers whole: each worker learns of
the participants elsewhere (`RemoteJoin`), of what they publish (`RemoteTracks`), and pipes
its own publishers' tracks to every other worker of the room (`PipeTo`). A worker that dies
is started again; its participants are told their media was lost (signaling offers them a
fresh connection, placed on a live worker).

Across nodes the same happens over a `Bus` (Redis pub/sub): each node runs the media of
its own clients, tells the others who of a room it holds, what they publish and which of
its pipes host the room, and pipes its publishers to the other nodes' workers. Every node
keeps what it hears of every room, hosted here or not, so that a participant joining here
finds the room's far members already known (a mesh client is never offered, as a newcomer,
someone who was there before it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from . import metrics
from .commands import (
    CloseRoom,
    Command,
    Done,
    Event,
    Join,
    JoinMesh,
    Leave,
    MediaLost,
    Offer,
    PipeTo,
    Published,
    Refused,
    RemoteJoin,
    RemoteLeave,
    RemoteTracks,
    Reply,
    Unpipe,
)
from .workers import Address, InlineWorker, PoolConfig, Worker, WorkerGone

logger = logging.getLogger(__name__)

EventSink = Callable[[Event], Awaitable[None]]
Handle = Worker | InlineWorker


class Bus(Protocol):
    """How this node's pool talks to the pools of the other nodes (every node hears all)."""

    async def publish(self, message: dict[str, Any]) -> None: ...


class _Far:
    """A participant of a room whose media runs on another node."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.origin: Address | None = None
        self.tracks: list[dict[str, Any]] = []


class WorkerPool:
    """``config.workers`` media workers behind one `MediaPort` (in-process when 1)."""

    def __init__(self, config: PoolConfig, on_event: EventSink, bus: Bus | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self.bus = bus
        if config.workers <= 1:
            self.workers: list[Handle] = [InlineWorker(0, self)]
        else:
            self.workers = [Worker(i, self) for i in range(config.workers)]
        self._where: dict[tuple[str, str], Handle] = {}
        self._rooms: dict[str, dict[str, Handle]] = {}
        self._tracks: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._far: dict[str, dict[str, _Far]] = {}
        """room -> participant on another node -> what we know of it."""
        self._far_pipes: dict[str, dict[str, set[Address]]] = {}
        """room -> node -> the pipes of its workers that host the room."""
        self._next = itertools.count()
        self._lost: set[tuple[str, str]] = set()
        """Participants whose worker died, until they join again or leave."""
        self._closing = False
        metrics.register(self)
        metrics.register_workers(self)

    def use_bus(self, node: str, bus: Bus) -> None:
        """Rooms span nodes: this pool is ``node`` on ``bus`` (before `start`)."""
        self.config = dataclasses.replace(self.config, node=node)
        self.bus = bus

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))
        await self._say({"t": "sync"})  # a node (re)started: the others say what they hold

    # ------------------------------------------------------------------ commands

    async def run(self, command: Command) -> Reply:
        try:
            return await self._run(command)
        except WorkerGone as exc:
            logger.info("media command %s: %s", command.name, exc)
            if isinstance(command, Offer):
                return Refused("the media server restarted; offer again")
            # What it said belonged to the connection that died; a fresh one is offered.
            return Done()
        except TimeoutError as exc:
            logger.warning("media command %s: %s", command.name, exc)
            return Refused("the media server did not answer in time")

    async def _run(self, command: Command) -> Reply:
        room, who = command.room, command.participant
        if isinstance(command, Join | JoinMesh):
            return await self._join(command)
        if isinstance(command, CloseRoom):
            self._lost = {key for key in self._lost if key[0] != room}
            for host in set(self._rooms.pop(room, {}).values()):
                await host.call(command)
            for key in [k for k in self._where if k[0] == room]:
                self._forget(key)
            self._far.pop(room, None)
            self._far_pipes.pop(room, None)
            return Done()
        worker = self._where.get((room, who))
        if worker is None:
            if (room, who) in self._lost and not isinstance(command, Offer):
                if isinstance(command, Leave):
                    self._lost.discard((room, who))
                return Done()  # its worker died: a fresh connection is on its way
            return Refused(f"{who!r} is not in media room {room!r}")
        if isinstance(command, Leave):
            return await self._leave(worker, room, who)
        if isinstance(command, Offer) and not self._known(room, command.peer):
            # The peer is in the room (signaling checked) but its node has not told us yet.
            # It was there before the client (it offers to it): no offer to it as a newcomer.
            self._far.setdefault(room, {})[command.peer] = _Far("")
            for host in self._hosts(room):
                await host.call(RemoteJoin(room, command.peer, greet=False))
        return await worker.call(command)

    def _known(self, room: str, who: str) -> bool:
        return who in self._rooms.get(room, {}) or who in self._far.get(room, {})

    def _place(self, room: str) -> Handle:
        live = [w for w in self.workers if w.state == "up"] or self.workers
        if self.config.placement == "spread":
            return live[next(self._next) % len(live)]
        members = self._rooms.get(room, {})
        others = len(members) + len(self._far.get(room, {}))
        seats = collections.Counter(members.values())  # the room's seats on each worker
        for worker, here in seats.most_common():
            if worker.state != "up":
                continue
            # the joiner subscribes to everyone; the worker's own subscribers add the joiner
            added = self.config.publisher_pps * (others + here)
            if self._load(worker) + added <= self.config.capacity_pps:
                return worker
        # least loaded; among equals (rooms of one, no packets yet) the one with fewer seats
        return min(live, key=lambda w: (self._load(w), len(w.participants)))

    def _load(self, worker: Handle) -> float:
        """Forwarded packets/s: what the worker last measured, or what its seats will
        forward once their media flows (a join counts at once, before any packet does)."""
        others = 0  # per seat here: everyone else in its room (its subscriptions)
        for room, _ in worker.participants:
            others += len(self._rooms.get(room, {})) + len(self._far.get(room, {})) - 1
        return max(worker.packets_per_s, self.config.publisher_pps * others)

    def _hosts(self, room: str) -> set[Handle]:
        return set(self._rooms.get(room, {}).values())

    def _seated(self, room: str, who: str, home: Handle) -> bool:
        """Whether ``who`` is still seated on ``home`` (a loop that awaits re-reads it
        before each command: a participant that left or moved meanwhile is not piped,
        nor announced, from a seat it no longer has)."""
        return self._where.get((room, who)) is home

    def _publishes(self, room: str, who: str, home: Handle) -> bool:
        return self._seated(room, who, home) and bool(self._tracks.get((room, who)))

    async def _join(self, command: Join | JoinMesh) -> Reply:
        room, who = command.room, command.participant
        self._lost.discard((room, who))
        old = self._where.get((room, who))
        if old is not None:
            await self._leave(old, room, who)
        worker = self._place(room)
        members = self._rooms.setdefault(room, {})
        hosts = set(members.values())
        first_here = not members
        # Seated before a new worker is introduced to the room: what happens in the room
        # while it is (a member publishes, a far member comes or goes) reaches it as it
        # reaches every host, and the introduction sends what was there before (a worker
        # told the same twice does nothing the second time).
        members[who] = worker
        self._where[(room, who)] = worker
        worker.participants.add((room, who))
        if worker not in hosts:
            await self._introduce(worker, room)
        reply = await worker.call(command)
        for host in hosts - {worker}:
            if not self._seated(room, who, worker):
                break  # left meanwhile: the hosts not told yet need not hear of it
            if host in self._hosts(room):
                await host.call(RemoteJoin(room, who))
        await self._say({"t": "member", "room": room, "participant": who, "joined": True})
        if worker not in hosts:
            await self._say_hosting(room)
        if first_here:
            await self._say({"t": "sync", "room": room})
        return reply

    async def _introduce(self, worker: Handle, room: str) -> None:
        """A worker new to the room learns everyone in it, here and on other nodes.

        It already hosts the joining participant, so it hears of the room's changes
        meanwhile; each member is read again when it is sent (it may have left, or
        published, while an earlier one was being sent)."""
        for other in list(self._rooms.get(room, {})):
            home = self._rooms.get(room, {}).get(other)
            if home is None or home is worker:
                continue  # gone meanwhile, or seated on this worker (the joining one)
            await worker.call(RemoteJoin(room, other))
            tracks = self._tracks.get((room, other))
            if tracks and self._publishes(room, other, home):
                await worker.call(RemoteTracks(room, other, home.pipe, tracks))
                if self._publishes(room, other, home) and worker in self._hosts(room):
                    await home.call(PipeTo(room, other, worker.pipe))
        for other in list(self._far.get(room, {})):
            far = self._far.get(room, {}).get(other)
            if far is None:
                continue
            await worker.call(RemoteJoin(room, other))
            if far.origin is not None and far.tracks and self._far.get(room, {}).get(other) is far:
                await worker.call(RemoteTracks(room, other, far.origin, far.tracks))

    async def _leave(self, worker: Handle, room: str, who: str) -> Reply:
        self._forget((room, who))
        reply = await worker.call(Leave(room, who))
        members = self._rooms.get(room, {})
        for host in set(members.values()) - {worker}:
            await host.call(RemoteLeave(room, who))
        if worker not in members.values():
            # The worker hosts nobody of this room now: nothing is piped to it any more.
            for other, home in list(members.items()):
                with contextlib.suppress(WorkerGone):
                    await home.call(Unpipe(room, other, worker.pipe))
            await worker.call(CloseRoom(room))
            await self._say_hosting(room)
        await self._say({"t": "member", "room": room, "participant": who, "joined": False})
        if not members:
            self._rooms.pop(room, None)  # what the other nodes hold of it stays known
        return reply

    def _forget(self, key: tuple[str, str]) -> None:
        room, who = key
        worker = self._where.pop(key, None)
        if worker is not None:
            worker.participants.discard(key)
        self._rooms.get(room, {}).pop(who, None)
        self._tracks.pop(key, None)

    # ------------------------------------------------------------------ worker events

    async def on_worker_event(self, worker: Handle, event: Event) -> None:
        if isinstance(event, Published):
            await self._published(worker, event)
            return
        if self._where.get((event.room, event.participant)) is not worker:
            return  # from a connection this participant no longer has here
        await self.on_event(event)

    async def _published(self, worker: Handle, event: Published) -> None:
        room, who = event.room, event.participant
        if self._where.get((room, who)) is not worker:
            return
        tracks = self._tracks[(room, who)] = event.tracks

        def current() -> bool:  # neither gone nor moved, nor published anew meanwhile
            return self._seated(room, who, worker) and self._tracks.get((room, who)) is tracks

        for host in self._hosts(room) - {worker}:
            if not current():
                return
            if host not in self._hosts(room):
                continue  # its last participant of the room left meanwhile
            await host.call(RemoteTracks(room, who, worker.pipe, event.tracks))
            if current() and host in self._hosts(room):
                await worker.call(PipeTo(room, who, host.pipe))
        for node, pipes in list(self._far_pipes.get(room, {}).items()):
            for address in pipes:
                if not current():
                    return
                if address in self._far_pipes.get(room, {}).get(node, set()):
                    await worker.call(PipeTo(room, who, address))
        await self._say(
            {
                "t": "tracks",
                "room": room,
                "participant": who,
                "origin": list(worker.pipe),
                "tracks": event.tracks,
            }
        )

    async def worker_died(self, worker: Handle) -> None:
        if self._closing:
            return
        lost = sorted(worker.participants)
        logger.warning(
            "media worker %d (pid %d) died with %d participants; restarting it",
            worker.index,
            worker.pid,
            len(lost),
        )
        dead_pipe = worker.pipe
        fresh = Worker(worker.index, self)
        fresh.restarts = worker.restarts + 1
        self.workers[worker.index] = fresh  # "restarting": placement skips it until it is up
        for room, who in lost:
            self._forget((room, who))
            self._lost.add((room, who))
            for host in self._hosts(room):
                with contextlib.suppress(WorkerGone, TimeoutError):
                    await host.call(RemoteLeave(room, who))
            await self._say({"t": "member", "room": room, "participant": who, "joined": False})
        for room, members in list(self._rooms.items()):
            for other, home in list(members.items()):
                with contextlib.suppress(WorkerGone, TimeoutError):
                    await home.call(Unpipe(room, other, dead_pipe))
        for room in {room for room, _ in lost}:
            await self._say_hosting(room)
        # Told before the restart: signaling offers them a fresh connection on a live worker
        # at once, not after a process start.
        for room, who in lost:
            await self.on_event(MediaLost(room, who, "failed"))
        await self._restart(worker.index)

    async def _restart(self, index: int) -> None:
        """Starts the worker at ``index`` again, backing off while it fails to start."""
        delay = 0.5
        while not self._closing:
            fresh = self.workers[index]
            assert isinstance(fresh, Worker)
            try:
                await fresh.start()
                return
            except Exception:
                logger.exception("media worker %d did not come back; retrying", index)
                await fresh.stop()
                again = Worker(index, self)
                again.restarts = fresh.restarts
                self.workers[index] = again
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    # ------------------------------------------------------------------ other nodes

    async def _say(self, message: dict[str, Any]) -> None:
        if self.bus is not None:
            await self.bus.publish({**message, "node": self.config.node})

    async def _say_hosting(self, room: str) -> None:
        pipes = sorted({w.pipe for w in self._hosts(room)})
        await self._say({"t": "hosting", "room": room, "pipes": [list(p) for p in pipes]})

    async def on_bus(self, message: dict[str, Any]) -> None:
        """What another node's pool said; a node ignores itself."""
        node = message.get("node")
        if not isinstance(node, str) or node == self.config.node:
            return
        kind, room = message.get("t"), message.get("room")
        if kind == "sync":
            for each in [room] if isinstance(room, str) else list(self._rooms):
                await self._answer_sync(each)
            return
        if not isinstance(room, str):
            return
        # Kept for rooms not hosted here too: a participant joining here finds them known.
        who = message.get("participant")
        if kind == "member" and isinstance(who, str):
            await self._far_member(room, node, who, bool(message.get("joined")))
        elif kind == "tracks" and isinstance(who, str):
            await self._far_tracks(room, node, who, message)
        elif kind == "hosting":
            await self._far_hosting(room, node, _addresses(message.get("pipes")))

    async def _answer_sync(self, room: str) -> None:
        members = self._rooms.get(room, {})
        if not members:
            return
        for who, home in list(members.items()):
            await self._say({"t": "member", "room": room, "participant": who, "joined": True})
            tracks = self._tracks.get((room, who))
            if tracks:
                await self._say(
                    {
                        "t": "tracks",
                        "room": room,
                        "participant": who,
                        "origin": list(home.pipe),
                        "tracks": tracks,
                    }
                )
        await self._say_hosting(room)

    async def _far_member(self, room: str, node: str, who: str, joined: bool) -> None:
        if joined:
            far = self._far.setdefault(room, {})
            if who not in far:
                far[who] = _Far(node)
                for host in self._hosts(room):
                    await host.call(RemoteJoin(room, who))
            far[who].node = node
            return
        far = self._far.get(room, {})
        if far.pop(who, None) is None:
            return
        if not far:
            self._far.pop(room, None)
        for host in self._hosts(room):
            await host.call(RemoteLeave(room, who))

    async def _far_tracks(self, room: str, node: str, who: str, message: dict[str, Any]) -> None:
        await self._far_member(room, node, who, True)
        origin = message.get("origin")
        tracks = message.get("tracks")
        if not (isinstance(origin, list) and len(origin) == 2 and isinstance(tracks, list)):
            return
        far = self._far[room][who]
        far.origin = (str(origin[0]), int(origin[1]))
        far.tracks = tracks
        for host in self._hosts(room):
            await host.call(RemoteTracks(room, who, far.origin, tracks))

    async def _far_hosting(self, room: str, node: str, pipes: set[Address]) -> None:
        known = self._far_pipes.setdefault(room, {})
        before = known.get(node, set())
        if pipes:
            known[node] = pipes
        else:
            known.pop(node, None)
            if not known:
                self._far_pipes.pop(room, None)
        for who, home in list(self._rooms.get(room, {}).items()):
            for address in pipes - before:
                if not self._publishes(room, who, home):
                    break  # left meanwhile: a PipeTo now would outlive it on its worker
                await home.call(PipeTo(room, who, address))
            for address in before - pipes:
                if not self._publishes(room, who, home):
                    break  # its worker dropped its targets when it left
                await home.call(Unpipe(room, who, address))

    async def node_gone(self, node: str) -> None:
        """Another node died: its participants leave every room here, its pipes close, and
        this node's own participants keep their media."""
        if node == self.config.node:
            return
        for room, far in list(self._far.items()):
            for who in [w for w, f in far.items() if f.node == node]:
                with contextlib.suppress(WorkerGone, TimeoutError):
                    await self._far_member(room, node, who, False)
        for room, by_node in list(self._far_pipes.items()):
            for address in by_node.pop(node, set()):
                for who, home in list(self._rooms.get(room, {}).items()):
                    with contextlib.suppress(WorkerGone, TimeoutError):
                        await home.call(Unpipe(room, who, address))
            if not by_node:
                self._far_pipes.pop(room, None)

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        rooms: dict[str, Any] = {}
        total = {
            "peer_connections": 0,
            "forwarded_streams": 0,
            "packets": 0,
            "keyframe_requests": 0,
        }
        for worker in self.workers:
            stats = worker.stats()
            for room_id, entry in stats.get("rooms", {}).items():
                merged = rooms.setdefault(room_id, {})
                for key, value in entry.items():
                    merged[key] = merged.get(key, 0) + value
            for key in total:
                total[key] += stats.get("total", {}).get(key, 0)
        return {"rooms": rooms, "total": total, "workers": self.worker_status()}

    def worker_status(self) -> list[dict[str, Any]]:
        """Each worker: index, pid, state, participants, peer connections, forwarded
        packets/s, CPU, pipes (what /health, /metrics and Prometheus show)."""
        return [w.status() for w in self.workers]

    def counters(self) -> dict[str, dict[str, int]]:
        if isinstance(self.workers[0], InlineWorker):
            return {}  # an in-process plane is counted by the plane itself
        out: dict[str, dict[str, int]] = {}
        for worker in self.workers:
            for name, by_kind in worker.counters().items():
                for kind, value in by_kind.items():
                    out.setdefault(name, {})[kind] = out.get(name, {}).get(kind, 0) + value
        return out

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(*(w.stop() for w in self.workers))


def _addresses(raw: Any) -> set[Address]:
    out: set[Address] = set()
    if isinstance(raw, list):
        for item in raw:
            if isinstance(item, list) and len(item) == 2:
                out.add((str(item[0]), int(item[1])))
    return out
