"""The pool's bookkeeping with stand-in workers: what each worker is told, in which order,
when the room changes while a worker is being introduced to it (no media, no processes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from sfu.commands import (
    Command,
    Done,
    Join,
    Leave,
    PipeTo,
    Published,
    RemoteJoin,
    RemoteTracks,
    Reply,
)
from sfu.pool import Handle, WorkerPool
from sfu.workers import Address, PoolConfig

ROOM = "spread"
TRACKS = [{"key": "video", "kind": "video", "ssrc": 1, "codecs": [[97, "VP8", 90000]]}]


T = TypeVar("T")


async def run_hooks(
    hooks: list[tuple[Callable[[T], bool], Callable[[], Awaitable[Any]]]], item: T
) -> None:
    """Runs (once) the step of each hook whose test matches ``item``, while it is handled."""
    for hook in list(hooks):
        matches, step = hook
        if matches(item):
            hooks.remove(hook)
            await step()


class StandIn:
    """A worker handle that records its commands; ``during`` runs a step of the room while
    the first command matching it is in flight (as an event or a bus notice would)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.pipe: Address = ("127.0.0.1", 40000 + index)
        self.pid = 0
        self.state = "up"
        self.restarts = 0
        self.packets_per_s = 0.0
        self.participants: set[tuple[str, str]] = set()
        self.sent: list[Command] = []
        self.during: list[tuple[Callable[[Command], bool], Callable[[], Awaitable[None]]]] = []

    async def call(self, command: Command) -> Reply:
        self.sent.append(command)
        await run_hooks(self.during, command)
        return Done()

    async def stop(self) -> None:
        pass


class Recorder:
    """A bus that keeps what was said; ``during`` runs a step while the first message
    matching it is being published (Redis publishes are awaited)."""

    def __init__(self) -> None:
        self.said: list[dict[str, Any]] = []
        self.during: list[
            tuple[Callable[[dict[str, Any]], bool], Callable[[], Awaitable[Any]]]
        ] = []

    async def publish(self, message: dict[str, Any]) -> None:
        self.said.append(message)
        await run_hooks(self.during, message)


async def no_events(event: Any) -> None:
    pass


def pool_of(
    n: int, bus: Recorder | None = None, config: PoolConfig | None = None
) -> tuple[WorkerPool, list[StandIn]]:
    config = config or PoolConfig(workers=n, node="b", placement="spread")
    pool = WorkerPool(config, no_events, bus)
    stand_ins = [StandIn(i) for i in range(n)]
    pool.workers = cast(list[Handle], stand_ins)
    return pool, stand_ins


def remote_join(who: str) -> Callable[[Command], bool]:
    return lambda c: isinstance(c, RemoteJoin) and c.participant == who


async def test_tracks_published_while_a_worker_is_introduced_reach_it() -> None:
    pool, (w0, w1, w2) = pool_of(3)
    await pool.run(Join(ROOM, "p0"))  # on w0
    await pool.run(Join(ROOM, "p1"))  # on w1
    # p2 goes to w2, which is told of p0 (no tracks yet), then of p1: p0's tracks come
    # meanwhile (w2 was asked about p0 already, and is not a host yet in the old order)
    w2.during.append(
        (
            remote_join("p1"),
            lambda: pool.on_worker_event(cast(Handle, w0), Published(ROOM, "p0", TRACKS)),
        )
    )
    await pool.run(Join(ROOM, "p2"))
    assert RemoteTracks(ROOM, "p0", w0.pipe, TRACKS) in w2.sent
    assert PipeTo(ROOM, "p0", w2.pipe) in w0.sent
    assert PipeTo(ROOM, "p0", w1.pipe) in w0.sent
    # and it learnt of p0 before its tracks, of everyone before its own participant
    order = [type(c).__name__ for c in w2.sent]
    assert order.index("RemoteJoin") < order.index("RemoteTracks") < order.index("Join")


async def test_a_far_member_heard_of_while_a_worker_is_introduced_reaches_it() -> None:
    bus = Recorder()
    pool, (w0, _) = pool_of(2, bus)
    far = {"t": "member", "room": ROOM, "joined": True, "node": "a"}
    await pool.on_bus({**far, "participant": "a1"})
    # w0 is told of a1; a2 joins on node a meanwhile (the far members change under it)
    w0.during.append((remote_join("a1"), lambda: pool.on_bus({**far, "participant": "a2"})))
    reply = await pool.run(Join(ROOM, "p0"))
    assert reply == Done()
    assert RemoteJoin(ROOM, "a2") in w0.sent
    assert {"t": "member", "room": ROOM, "participant": "p0", "joined": True, "node": "b"} in (
        bus.said
    )


async def test_a_join_while_the_room_is_told_to_another_node_is_told_too() -> None:
    bus = Recorder()
    pool, _ = pool_of(2, bus)
    await pool.run(Join(ROOM, "p0"))
    bus.said.clear()
    # node a asks what node b holds; p1 joins while p0 is being said
    bus.during.append((lambda m: m.get("participant") == "p0", lambda: pool.run(Join(ROOM, "p1"))))
    await pool.on_bus({"t": "sync", "room": ROOM, "node": "a"})
    said = [(m["t"], m.get("participant")) for m in bus.said]
    assert ("member", "p0") in said and ("member", "p1") in said


def pipe_to(who: str, address: Address | None = None) -> Callable[[Command], bool]:
    return lambda c: isinstance(c, PipeTo) and c.participant == who and address in (None, c.address)


def leave(pool: WorkerPool, who: str) -> Callable[[], Awaitable[None]]:
    async def step() -> None:
        await pool.run(Leave(ROOM, who))

    return step


def after_leave(worker: StandIn, who: str) -> list[Command]:
    """What ``worker`` was told about ``who`` after its `Leave`."""
    sent = worker.sent
    left = next(i for i, c in enumerate(sent) if isinstance(c, Leave) and c.participant == who)
    return [c for c in sent[left + 1 :] if c.participant == who]


async def test_a_member_leaving_while_another_node_starts_hosting_is_not_piped_there() -> None:
    """Node a starts hosting the room on two workers; p0 leaves while its worker is told
    to pipe to the first: its worker is told nothing more of it (a PipeTo after its
    Leave kept a target on the worker, which piped p0's next visit to nobody)."""
    bus = Recorder()
    pool, (w0,) = pool_of(1, bus)
    await pool.run(Join(ROOM, "p0"))
    await pool.run(Join(ROOM, "p1"))
    for who in ("p0", "p1"):
        await pool.on_worker_event(cast(Handle, w0), Published(ROOM, who, TRACKS))
    far = [("10.0.0.2", 41000), ("10.0.0.2", 41001)]
    w0.during.append((pipe_to("p0"), leave(pool, "p0")))
    await pool.on_bus({"t": "hosting", "room": ROOM, "pipes": [list(a) for a in far], "node": "a"})
    assert after_leave(w0, "p0") == []
    # the member who stayed is piped to both
    assert all(PipeTo(ROOM, "p1", address) in w0.sent for address in far)


async def test_a_publisher_leaving_while_its_tracks_are_announced_is_not_piped() -> None:
    """p1 publishes and leaves while its tracks are being told to another worker: its own
    worker gets no PipeTo after its Leave, and a worker not told yet gets no RemoteTracks
    for someone gone (it would make a participant of nobody there)."""
    pool, (w0, w1, w2) = pool_of(3)
    for who in ("p0", "p1", "p2"):
        await pool.run(Join(ROOM, who))  # on w0, w1, w2
    # (whichever of w0 and w2 is told first: the hosts are a set)
    w0.during.append(
        (
            lambda c: isinstance(c, RemoteTracks) and c.participant == "p1",
            leave(pool, "p1"),
        )
    )
    w2.during.append(
        (
            lambda c: isinstance(c, RemoteTracks) and c.participant == "p1",
            leave(pool, "p1"),
        )
    )
    await pool.on_worker_event(cast(Handle, w1), Published(ROOM, "p1", TRACKS))
    assert after_leave(w1, "p1") == []
    told = [w for w in (w0, w2) if any(isinstance(c, RemoteTracks) for c in w.sent)]
    assert len(told) == 1  # the one told while p1 left; the other never heard of its tracks


async def test_load_placement_spreads_rooms_and_keeps_each_together() -> None:
    """Rooms that arrive together go to different workers (least loaded, then fewest
    seats), each room's later joiners to its worker while it fits; a worker measured busy
    gets no new room."""
    config = PoolConfig(workers=2, placement="load", capacity_pps=10_000, publisher_pps=150)
    pool, (w0, w1) = pool_of(2, config=config)
    rooms = ["a", "b", "c", "d"]
    for i in range(4):
        for room in rooms:
            await pool.run(Join(room, f"{room}{i}"))
    seats = {
        room: {w.index for w in (w0, w1) for r, _ in w.participants if r == room} for room in rooms
    }
    assert seats == {"a": {0}, "b": {1}, "c": {0}, "d": {1}}
    w1.packets_per_s = 20_000.0  # measured: more than its seats account for
    await pool.run(Join("e", "e0"))
    assert ("e", "e0") in w0.participants
