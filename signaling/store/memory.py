"""In-process store: the embedded default, one node, no Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from signaling.domain import Record
from signaling.store.base import R, Slot, Store

log = logging.getLogger(__name__)


class MemoryStore(Store):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self._records: dict[tuple[str, str], Record] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._lock_users: dict[tuple[str, str], int] = defaultdict(int)
        self._lists: dict[tuple[str, str], deque[str]] = {}
        self._indexes: dict[str, dict[str, str]] = defaultdict(dict)
        self._claims: dict[str, float] = {}
        self._subscribers: dict[str, list[Callable[[str], Awaitable[None]]]] = defaultdict(list)

    @asynccontextmanager
    async def edit(self, model: type[R], key: str) -> AsyncIterator[Slot[R]]:
        ident = (model.kind, key)
        lock = self._locks.setdefault(ident, asyncio.Lock())
        self._lock_users[ident] += 1
        try:
            async with lock:
                current = self._records.get(ident)
                # Edits work on a copy so that a handler failing half-way changes nothing,
                # exactly as with the Redis store.
                slot: Slot[R] = Slot(current.model_copy(deep=True) if current is not None else None)  # type: ignore[arg-type]
                yield slot
                if slot.value is None:
                    self._records.pop(ident, None)
                else:
                    self._records[ident] = slot.value
        finally:
            self._lock_users[ident] -= 1
            if self._lock_users[ident] == 0:
                del self._lock_users[ident]
                del self._locks[ident]

    async def load(self, model: type[R], key: str) -> R | None:
        record = self._records.get((model.kind, key))
        return record.model_copy(deep=True) if record is not None else None  # type: ignore[return-value]

    async def load_all(self, model: type[R]) -> list[R]:
        return [
            record.model_copy(deep=True)  # type: ignore[misc]
            for (kind, _), record in list(self._records.items())
            if kind == model.kind
        ]

    async def append_capped(self, name: str, key: str, item: str, cap: int) -> None:
        items = self._lists.get((name, key))
        if items is None or items.maxlen != cap:
            items = deque(items or (), maxlen=cap)
            self._lists[(name, key)] = items
        items.append(item)

    async def read_list(self, name: str, key: str) -> list[str]:
        return list(self._lists.get((name, key), ()))

    async def delete_list(self, name: str, key: str) -> None:
        self._lists.pop((name, key), None)

    async def set_index(self, name: str, field: str, value: str | None) -> None:
        if value is None:
            self._indexes[name].pop(field, None)
        else:
            self._indexes[name][field] = value

    async def get_index(self, name: str, *fields: str) -> list[str | None]:
        index = self._indexes[name]
        return [index.get(f) for f in fields]

    async def heartbeat(self, ttl_s: float) -> None:
        """A single node is always alive."""

    async def dead_nodes(self) -> list[str]:
        return []

    async def forget_node(self, node_id: str) -> None:
        """Nothing to forget: other nodes cannot exist."""

    async def claim(self, name: str, ttl_s: float) -> bool:
        now = time.monotonic()
        if self._claims.get(name, 0.0) > now:
            return False
        self._claims[name] = now + ttl_s
        return True

    async def ping(self) -> bool:
        return True

    async def publish(self, channel: str, message: str) -> None:
        for handler in list(self._subscribers.get(channel, ())):
            try:
                await handler(message)
            except Exception:
                # As with Redis: a subscriber's failure is its own, never the publisher's.
                log.exception("subscriber of %s failed", channel)

    async def subscribe(self, channel: str, handler: Callable[[str], Awaitable[None]]) -> None:
        self._subscribers[channel].append(handler)

    async def close(self) -> None:
        self._subscribers.clear()
