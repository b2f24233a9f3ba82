"""The Store contract, checked against a real Redis and against MemoryStore alike.

`two_nodes` yields two nodes' views of one shared state (two RedisStores on one Redis, or the
single MemoryStore twice), so every behavioural test here proves both stores mean the same.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from devtools.poll import poll_until
from signaling.domain import (
    ChatMessage,
    GuideMember,
    GuideRoom,
    PairingQueue,
    Participant,
    Record,
    Study,
    StudyMember,
    User,
    VideoRoom,
    Waiting,
)
from signaling.store import redis as redis_store
from signaling.store.base import Store
from signaling.store.memory import MemoryStore
from signaling.store.redis import RedisStore, StoreBusy, StoreUnavailable
from tests.redis_server import free_port


def user(n: int) -> User:
    return User(id=f"u{n}", name=f"User {n}")


def participant(n: int, node: str = "node-a") -> Participant:
    return Participant(socketId=f"s{n}", userId=f"u{n}", user=user(n), node=node)


def samples() -> list[tuple[type[Record], str, Record, Callable[[Record], None]]]:
    """(model, key, a fresh record, a mutation) for every record kind."""

    def add_video(r: Record) -> None:
        assert isinstance(r, VideoRoom)
        r.join(participant(2), max_participants=16)
        r.set_media("s1", is_muted=True)

    def add_guide(r: Record) -> None:
        assert isinstance(r, GuideRoom)
        r.join(GuideMember(socketId="s2", node="node-b"), max_participants=16)

    def add_study(r: Record) -> None:
        assert isinstance(r, Study)
        r.join(StudyMember(socketId="s2", userId="u2", user=user(2)))

    def add_waiting(r: Record) -> None:
        assert isinstance(r, PairingQueue)
        r.request(Waiting(socketId="s2", user=user(2)))

    room = VideoRoom.open("room:1/é", "auto", 3, "study-1")
    room.join(participant(1), max_participants=16)
    return [
        (VideoRoom, "room:1/é", room, add_video),
        (
            GuideRoom,
            "keys",
            GuideRoom(id="keys", host="s1", members=[GuideMember(socketId="s1")]),
            add_guide,
        ),
        (Study, "study-1", Study(id="study-1"), add_study),
        (PairingQueue, "global", PairingQueue(), add_waiting),
    ]


@pytest.mark.parametrize("case", range(4), ids=["video", "guide", "study", "pairing"])
async def test_records_round_trip_across_nodes(two_nodes: tuple[Store, Store], case: int) -> None:
    a, b = two_nodes
    model, key, record, mutate = samples()[case]

    assert await b.load(model, key) is None
    async with a.edit(model, key) as slot:
        assert slot.value is None
        slot.value = record
    assert await b.load(model, key) == record
    assert await b.load_all(model) == [record]

    async with b.edit(model, key) as slot:
        assert slot.value == record
        mutate(slot.value)
        changed = slot.value
    assert await a.load(model, key) == changed
    assert changed != record

    async with a.edit(model, key) as slot:
        slot.value = None
    assert await b.load(model, key) is None
    assert await b.load_all(model) == []


async def test_load_all_lists_only_its_kind(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    for room_id in ("x", "y"):
        async with a.edit(VideoRoom, room_id) as slot:
            slot.value = VideoRoom.open(room_id, "mesh", 3, None)
    async with a.edit(GuideRoom, "x") as guide:
        guide.value = GuideRoom(id="x", host="s9")
    assert sorted(r.id for r in await b.load_all(VideoRoom)) == ["x", "y"]
    assert [r.id for r in await b.load_all(GuideRoom)] == ["x"]


async def test_failed_edit_changes_nothing_and_frees_the_record(
    two_nodes: tuple[Store, Store],
) -> None:
    a, b = two_nodes
    async with a.edit(Study, "s") as slot:
        slot.value = Study(id="s")
    with pytest.raises(RuntimeError, match="handler bug"):
        async with a.edit(Study, "s") as slot:
            assert slot.value is not None
            slot.value.join(StudyMember(socketId="s1", userId="u1", user=user(1)))
            raise RuntimeError("handler bug")
    assert await b.load(Study, "s") == Study(id="s")
    # The lock was released: the other node can edit straight away.
    async with asyncio.timeout(2):
        async with b.edit(Study, "s") as slot:
            assert slot.value == Study(id="s")


async def test_concurrent_edits_from_two_nodes_lose_nothing(
    two_nodes: tuple[Store, Store],
) -> None:
    a, b = two_nodes
    async with a.edit(VideoRoom, "race") as slot:
        slot.value = VideoRoom.open("race", "mesh", 3, None)

    async def join(store: Store, n: int) -> None:
        async with store.edit(VideoRoom, "race") as slot:
            assert slot.value is not None
            room = slot.value
            await asyncio.sleep(0)  # let the other edits run in between read and write
            room.join(participant(n, store.node_id), max_participants=100)

    async with asyncio.timeout(20):
        await asyncio.gather(*(join(a if n % 2 else b, n) for n in range(50)))
    room = await a.load(VideoRoom, "race")
    assert room is not None
    assert sorted(room.participants) == sorted(f"s{n}" for n in range(50))


async def test_capped_list_keeps_the_newest_in_order(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    assert await b.read_list("chat", "r") == []
    messages = [ChatMessage(roomId="r", content=f"m{i}", user=user(1)) for i in range(15)]
    for i, message in enumerate(messages):
        await (a if i % 2 else b).append_capped("chat", "r", message.model_dump_json(), cap=10)
    stored = [ChatMessage.model_validate_json(raw) for raw in await b.read_list("chat", "r")]
    assert [m.content for m in stored] == [f"m{i}" for i in range(5, 15)]
    assert stored == messages[5:]
    assert await a.read_list("chat", "other") == []
    await a.delete_list("chat", "r")
    assert await b.read_list("chat", "r") == []


async def test_index_get_and_set(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    await a.set_index("socket-room", "s1", "room-1")
    await b.set_index("socket-room", "s2", "room-2")
    await a.set_index("other", "s1", "elsewhere")
    assert await b.get_index("socket-room", "s1", "s2", "s3") == ["room-1", "room-2", None]
    assert await a.get_index("socket-room") == []
    await b.set_index("socket-room", "s1", None)
    await b.set_index("socket-room", "missing", None)
    assert await a.get_index("socket-room", "s1", "s2") == [None, "room-2"]
    assert await a.get_index("other", "s1") == ["elsewhere"]


async def test_claim_is_exclusive_until_it_expires(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    results = await asyncio.gather(*(s.claim("sweep", 0.3) for s in (a, b, a, b)))
    assert sorted(results) == [False, False, False, True]
    assert await a.claim("other", 10) is True

    async def claimable() -> bool:
        return await b.claim("sweep", 10)

    await poll_until(claimable, 3)
    assert await a.claim("sweep", 10) is False


async def test_publish_reaches_subscribers_in_order(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    received: asyncio.Queue[str] = asyncio.Queue()
    other: asyncio.Queue[str] = asyncio.Queue()
    await b.subscribe("media:node-b", lambda m: _put(received, m))
    await b.subscribe("media:node-c", lambda m: _put(other, m))
    for i in range(20):
        await a.publish("media:node-b", f"m{i}")
    await a.publish("media:nobody", "lost")
    async with asyncio.timeout(5):
        assert [await received.get() for _ in range(20)] == [f"m{i}" for i in range(20)]
    await a.publish("media:node-c", "last")
    async with asyncio.timeout(5):
        assert await other.get() == "last"
    assert received.empty()


async def test_a_failing_subscriber_harms_neither_publisher_nor_others(
    two_nodes: tuple[Store, Store], request: pytest.FixtureRequest
) -> None:
    a, b = two_nodes
    received: asyncio.Queue[str] = asyncio.Queue()

    async def failing(message: str) -> None:
        raise RuntimeError("subscriber bug")

    await b.subscribe("ch", failing)
    await b.subscribe("ch", lambda m: _put(received, m))
    await a.publish("ch", "one")
    await a.publish("ch", "two")
    async with asyncio.timeout(5):
        assert [await received.get(), await received.get()] == ["one", "two"]


async def _put(queue: asyncio.Queue[str], message: str) -> None:
    queue.put_nowait(message)


async def test_ping(two_nodes: tuple[Store, Store]) -> None:
    a, b = two_nodes
    assert await a.ping() and await b.ping()


# -- Redis only: several distinct nodes, liveness, lock failure modes -----------------------


@pytest.mark.redis
async def test_redis_store_is_shared(redis_pair: tuple[RedisStore, RedisStore]) -> None:
    assert redis_pair[0].shared is True


@pytest.mark.redis
async def test_dead_node_is_reported_once_its_heartbeat_expires(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    a, b = redis_pair
    await a.heartbeat(0.3)
    await b.heartbeat(30)
    assert await b.dead_nodes() == []
    assert await a.dead_nodes() == []

    async def a_is_dead() -> bool:
        return await b.dead_nodes() == ["node-a"]

    await poll_until(a_is_dead, 3)
    assert await a.dead_nodes() == []  # a node never reports itself
    await b.forget_node("node-a")
    assert await b.dead_nodes() == []
    await a.heartbeat(30)  # a node that comes back is simply known again
    assert await b.dead_nodes() == []


@pytest.mark.redis
async def test_edit_gives_up_when_another_node_holds_the_record(
    redis_pair: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_pair
    monkeypatch.setattr(redis_store, "LOCK_WAIT_S", 0.2)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with a.edit(Study, "busy") as slot:
            slot.value = Study(id="busy")
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    async with asyncio.timeout(5):
        await holding.wait()
        with pytest.raises(StoreBusy, match="busy; try again"):
            async with b.edit(Study, "busy"):
                pytest.fail("entered a record another node holds")
        release.set()
        await holder
    assert await b.load(Study, "busy") == Study(id="busy")


@pytest.mark.redis
async def test_edit_that_outlives_its_lock_saves_nothing(
    redis_pair: tuple[RedisStore, RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = redis_pair
    monkeypatch.setattr(redis_store, "LOCK_TIMEOUT_S", 0.2)
    with pytest.raises(StoreBusy, match="nothing was changed"):
        async with a.edit(Study, "slow") as slot:
            slot.value = Study(id="slow-a")
            # Meanwhile the lock expires and another node edits the record.
            async with asyncio.timeout(5), b.edit(Study, "slow") as other:
                other.value = Study(id="slow-b")
    assert await b.load(Study, "slow") == Study(id="slow-b")


async def test_start_fails_clearly_when_redis_is_unreachable() -> None:
    store = RedisStore("n", f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable, match="cannot reach Redis") as info:
        await store.start()
    assert "s3cret" not in str(info.value)
    assert await store.ping() is False


@pytest.mark.redis
async def test_memory_and_redis_agree_on_random_operations(
    redis_pair: tuple[RedisStore, RedisStore],
) -> None:
    """Differential test: one seeded random sequence, applied to both stores, same results."""
    rng = random.Random(20261122)
    memory = MemoryStore("node-a")
    stores: tuple[Store, Store] = (memory, redis_pair[0])
    keys, names, fields = ["k1", "k2", "k3"], ["chat", "other"], ["s1", "s2", "s3"]

    async def edit(store: Store, key: str, action: str, n: int) -> str:
        try:
            async with store.edit(Study, key) as slot:
                if action == "create":
                    slot.value = Study(id=key)
                elif action == "join" and slot.value is not None:
                    slot.value.join(StudyMember(socketId=f"s{n}", userId=f"u{n}", user=user(n)))
                elif action == "leave" and slot.value is not None:
                    slot.value.leave(f"s{n}")
                elif action == "delete":
                    slot.value = None
                elif action == "fail":
                    slot.value = Study(id="half-done")
                    raise LookupError("handler failed half-way")
        except LookupError:
            return "failed"
        return "ok"

    for step in range(300):
        op, key, n = rng.randrange(6), rng.choice(keys), rng.randrange(4)
        action = rng.choice(["create", "join", "join", "leave", "delete", "fail", "noop"])
        name, field, cap = rng.choice(names), rng.choice(fields), rng.randrange(4)
        value = rng.choice([None, f"room-{n}"])
        results = []
        for store in stores:
            result: object
            if op == 0:
                result = await edit(store, key, action, n)
            elif op == 1:
                result = await store.load(Study, key)
            elif op == 2:
                result = sorted((s.id, sorted(s.members)) for s in await store.load_all(Study))
            elif op == 3:
                await store.append_capped(name, key, f"item-{step}", cap)
                result = await store.read_list(name, key)
            elif op == 4:
                await store.set_index(name, field, value)
                result = await store.get_index(name, *fields)
            else:
                await store.delete_list(name, key)
                result = [await store.read_list(nm, k) for nm in names for k in keys]
            results.append(result)
        assert results[0] == results[1], f"step {step}: op {op} diverged"
