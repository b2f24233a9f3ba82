"""A throwaway real Redis for the store tests (and, later, the multi-node tests).

`redis_server()` is self-contained so that it can move to tests/conftest.py as is: it starts
`redis-server` on a free port without persistence, waits until PING answers and terminates it
at the end. `TEST_REDIS_URL` reuses a running Redis instead (every test uses its own key prefix).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
import redis as syncredis

from signaling.store.base import Store
from signaling.store.memory import MemoryStore
from signaling.store.redis import RedisStore

REDIS_START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A port nobody listens on right now (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def redis_server() -> Iterator[str]:
    """Runs a private `redis-server` and yields its URL (`redis://127.0.0.1:PORT/0`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = syncredis.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {err}")
            try:
                if client.ping():
                    break
            except syncredis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not answer PING") from None
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One Redis per test session; tests isolate themselves by key prefix."""
    existing = os.environ.get("TEST_REDIS_URL")
    if existing:
        yield existing
        return
    with redis_server() as url:
        yield url


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
