"""Store fixtures: the same behavioural tests run on MemoryStore and on RedisStore.

The throwaway Redis itself (`redis_url`) is the session fixture of tests/conftest.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from signaling.store.base import Store
from signaling.store.memory import MemoryStore
from signaling.store.redis import RedisStore


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def two_nodes(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Store, Store]]:
    """Two nodes' views of one shared state: two RedisStores on one prefix, or one MemoryStore.

    A MemoryStore cannot be shared, so both "nodes" are the same instance; the tests that
    need really distinct nodes (heartbeats, fencing) use `redis_pair` instead.
    """
    if request.param == "memory":
        store = MemoryStore("node-a")
        await store.start()
        yield store, store
        await store.close()
        return
    url: str = request.getfixturevalue("redis_url")
    async with RedisPair(url) as pair:
        yield pair


@pytest.fixture
async def redis_pair(redis_url: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    async with RedisPair(redis_url) as pair:
        yield pair


class RedisPair:
    """Two started RedisStores ("node-a", "node-b") on a fresh prefix; closed on exit."""

    def __init__(self, url: str) -> None:
        prefix = f"test-{uuid.uuid4().hex[:8]}"
        self.stores = (RedisStore("node-a", url, prefix), RedisStore("node-b", url, prefix))

    async def __aenter__(self) -> tuple[RedisStore, RedisStore]:
        for store in self.stores:
            await store.start()
        return self.stores

    async def __aexit__(self, *exc: object) -> None:
        for store in self.stores:
            await store.close()
