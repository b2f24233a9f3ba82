"""Redis store: the room state shared by every node (python-socketio's rooms are per process).

Key layout (all under `prefix`, default `studycall`)::

    {prefix}:{kind}:{key}          one record as JSON (video, guide, study, pairing)
    {prefix}:keys:{kind}           set of the record keys of a kind (for load_all, no SCAN)
    {prefix}:lock:{kind}:{key}     the per-record edit lock (token, PX 5 s)
    {prefix}:list:{name}:{key}     bounded list (chat history), oldest first
    {prefix}:index:{name}          hash field -> value (socket -> room, read on the relay path)
    {prefix}:node:{id}:alive       node heartbeat (PX ttl); {prefix}:nodes is the set of known ids
    {prefix}:claim:{name}          SET NX PX: one caller wins until the ttl passes
    {prefix}:chan:{channel}        pub/sub channel (node-to-node commands)

The keys set, locks, lists and indexes live in their own name spaces so that no client-chosen
room id (`keys`, `x:lock`, ...) can collide with a store key of another type.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.lock import Lock
from redis.commands.core import AsyncScript
from redis.exceptions import LockError, RedisError

from signaling.store.base import R, Slot, Store, StoreBusy

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 5.0
"""How long an edit may hold a record before another node may take it over."""
LOCK_WAIT_S = 5.0
"""How long an edit waits for a record another node is editing before giving up."""
LOCK_POLL_S = 0.005
"""Retry interval while another node holds the lock (same-node waiters queue locally)."""

# Writes the record back (or deletes it) and releases the lock in one round trip, but only if
# this edit still owns the lock: an edit that outlived LOCK_TIMEOUT_S must not overwrite what
# another node wrote meanwhile (fencing).
#   KEYS: lock, record, keys set   ARGV: token, record key, "1" delete / "0" write, json
_COMMIT = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then
    return 0
end
if ARGV[3] == '1' then
    redis.call('del', KEYS[2])
    redis.call('srem', KEYS[3], ARGV[2])
else
    redis.call('set', KEYS[2], ARGV[4])
    redis.call('sadd', KEYS[3], ARGV[2])
end
redis.call('del', KEYS[1])
return 1
"""


class StoreUnavailable(RuntimeError):
    """Redis cannot be reached at start-up: the node must not run half-connected."""


def redact_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisStore(Store):
    """The `Store` semantics of `MemoryStore`, shared across nodes through one Redis."""

    def __init__(self, node_id: str, url: str, prefix: str = "studycall") -> None:
        super().__init__(node_id)
        self.url = url
        self.prefix = prefix
        self._client: aioredis.Redis | None = None
        # Edits of one record on this node queue here instead of polling Redis's lock.
        self._local_locks: dict[str, asyncio.Lock] = {}
        self._local_users: dict[str, int] = defaultdict(int)
        self._commit: AsyncScript | None = None
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._handlers: dict[str, list[Callable[[str], Awaitable[None]]]] = {}
        self._confirmed: dict[str, asyncio.Event] = {}

    # -- connection -------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    @property
    def redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisStore is not connected: start() not called, or closed")
        return self._client

    async def start(self) -> None:
        client = aioredis.Redis.from_url(
            self.url, decode_responses=True, socket_connect_timeout=5.0
        )
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StoreUnavailable(f"cannot reach Redis at {redact_url(self.url)}: {exc}") from exc
        self._client = client
        self._commit = client.register_script(_COMMIT)
        log.info("redis store connected", extra={"redis": redact_url(self.url)})

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        self._handlers.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def ping(self) -> bool:
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError):
            return False

    # -- keys -------------------------------------------------------------------------------

    def _record_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}:{kind}:{key}"

    def _keys_set(self, kind: str) -> str:
        return f"{self.prefix}:keys:{kind}"

    def _lock_key(self, kind: str, key: str) -> str:
        return f"{self.prefix}:lock:{kind}:{key}"

    def _list_key(self, name: str, key: str) -> str:
        return f"{self.prefix}:list:{name}:{key}"

    def _index_key(self, name: str) -> str:
        return f"{self.prefix}:index:{name}"

    def _alive_key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}:alive"

    @property
    def _nodes_key(self) -> str:
        return f"{self.prefix}:nodes"

    # -- records ----------------------------------------------------------------------------

    @asynccontextmanager
    async def edit(self, model: type[R], key: str) -> AsyncIterator[Slot[R]]:
        lock_key = self._lock_key(model.kind, key)
        local = self._local_locks.setdefault(lock_key, asyncio.Lock())
        self._local_users[lock_key] += 1
        try:
            async with local, self._redis_lock(lock_key) as token:
                raw = await self.redis.get(self._record_key(model.kind, key))
                slot: Slot[R] = Slot(model.model_validate_json(raw) if raw else None)
                yield slot
                delete = slot.value is None
                body = "" if slot.value is None else slot.value.model_dump_json()
                assert self._commit is not None  # set by start() with the client
                committed = await self._commit(
                    keys=[
                        lock_key,
                        self._record_key(model.kind, key),
                        self._keys_set(model.kind),
                    ],
                    args=[token, key, "1" if delete else "0", body],
                )
                if not committed:
                    log.warning("edit of %s outlived its lock; nothing was saved", lock_key)
                    raise StoreBusy("the room was busy and nothing was changed; try again")
        finally:
            self._local_users[lock_key] -= 1
            if self._local_users[lock_key] == 0:
                del self._local_users[lock_key]
                del self._local_locks[lock_key]

    @asynccontextmanager
    async def _redis_lock(self, lock_key: str) -> AsyncIterator[str]:
        """Holds the Redis lock; the commit script releases it, so only failures release here."""
        lock = Lock(
            self.redis,
            lock_key,
            timeout=LOCK_TIMEOUT_S,
            sleep=LOCK_POLL_S,
            blocking_timeout=LOCK_WAIT_S,
            thread_local=False,
        )
        token = uuid.uuid4().hex
        if not await lock.acquire(token=token):
            log.warning("%s still locked by another node after %.1f s", lock_key, LOCK_WAIT_S)
            raise StoreBusy("the room is busy; try again")
        committed = False
        try:
            yield token
            committed = True
        finally:
            if not committed:
                try:
                    await lock.release()
                except (LockError, RedisError, OSError):
                    # Expired already, or Redis is gone: the lock times out on its own.
                    log.warning("could not release %s", lock_key)

    async def load(self, model: type[R], key: str) -> R | None:
        raw = await self.redis.get(self._record_key(model.kind, key))
        return model.model_validate_json(raw) if raw else None

    async def load_all(self, model: type[R]) -> list[R]:
        # decode_responses=True: every reply is str (redis-py's stubs say bytes | str).
        keys = sorted(cast(set[str], await self.redis.smembers(self._keys_set(model.kind))))
        if not keys:
            return []
        raws = await self.redis.mget([self._record_key(model.kind, k) for k in keys])
        return [model.model_validate_json(raw) for raw in raws if raw]

    # -- bounded lists ----------------------------------------------------------------------

    async def append_capped(self, name: str, key: str, item: str, cap: int) -> None:
        if cap < 0:
            raise ValueError("cap must be >= 0")
        list_key = self._list_key(name, key)
        if cap == 0:  # LTRIM -0 -1 would keep everything
            await self.redis.delete(list_key)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(list_key, item)
            pipe.ltrim(list_key, -cap, -1)
            await pipe.execute()

    async def read_list(self, name: str, key: str) -> list[str]:
        return cast(list[str], await self.redis.lrange(self._list_key(name, key), 0, -1))

    async def delete_list(self, name: str, key: str) -> None:
        await self.redis.delete(self._list_key(name, key))

    # -- indexes ----------------------------------------------------------------------------

    async def set_index(self, name: str, field: str, value: str | None) -> None:
        if value is None:
            await self.redis.hdel(self._index_key(name), field)
        else:
            await self.redis.hset(self._index_key(name), field, value)

    async def get_index(self, name: str, *fields: str) -> list[str | None]:
        if not fields:
            return []
        values = await self.redis.hmget(self._index_key(name), list(fields))
        return cast(list[str | None], values)

    # -- nodes ------------------------------------------------------------------------------

    async def heartbeat(self, ttl_s: float) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._alive_key(self.node_id), "1", px=max(1, int(ttl_s * 1000)))
            pipe.sadd(self._nodes_key, self.node_id)
            await pipe.execute()

    async def dead_nodes(self) -> list[str]:
        """Known nodes without a live heartbeat; never this node, which is evidently running."""
        known = cast(set[str], await self.redis.smembers(self._nodes_key))
        nodes = sorted(n for n in known if n != self.node_id)
        if not nodes:
            return []
        alive = await self.redis.mget([self._alive_key(n) for n in nodes])
        return [n for n, flag in zip(nodes, alive, strict=True) if flag is None]

    async def forget_node(self, node_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(self._nodes_key, node_id)
            pipe.delete(self._alive_key(node_id))
            await pipe.execute()

    async def claim(self, name: str, ttl_s: float) -> bool:
        won = await self.redis.set(
            f"{self.prefix}:claim:{name}", self.node_id, nx=True, px=max(1, int(ttl_s * 1000))
        )
        return bool(won)

    # -- pub/sub ----------------------------------------------------------------------------

    def _channel_key(self, channel: str) -> str:
        return f"{self.prefix}:chan:{channel}"

    async def publish(self, channel: str, message: str) -> None:
        await self.redis.publish(self._channel_key(channel), message)

    async def subscribe(self, channel: str, handler: Callable[[str], Awaitable[None]]) -> None:
        """Returns once Redis confirmed the subscription: later publishes are delivered."""
        key = self._channel_key(channel)
        handlers = self._handlers.setdefault(key, [])
        handlers.append(handler)
        if len(handlers) > 1:
            return
        if self._pubsub is None:
            self._pubsub = self.redis.pubsub()
        confirmed = self._confirmed[key] = asyncio.Event()
        await self._pubsub.subscribe(key)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(self._pubsub), name="redis-pubsub")
        async with asyncio.timeout(LOCK_WAIT_S):
            await confirmed.wait()

    async def _read(self, pubsub: PubSub) -> None:
        """One reader per node: handlers run one at a time, in publish order."""
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # redis-py reconnects and re-subscribes on the next read.
                log.warning("redis pub/sub connection lost (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            key = message["channel"]
            if message["type"] == "subscribe":
                event = self._confirmed.pop(key, None)
                if event is not None:
                    event.set()
            elif message["type"] == "message":
                for handler in list(self._handlers.get(key, ())):
                    try:
                        await handler(message["data"])
                    except Exception:
                        log.exception("pub/sub handler for %s failed", key)


__all__ = ["RedisStore", "StoreBusy", "StoreUnavailable", "redact_url"]
