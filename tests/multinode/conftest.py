"""Fixtures of the multi-node tests: one Redis per session, two fresh nodes per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.multinode.cluster import two_nodes
from tests.redis.conftest import redis_server
from tests.server import ServerProcess


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    existing = os.environ.get("TEST_REDIS_URL")
    if existing:
        yield existing
        return
    with redis_server() as url:
        yield url


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes on their own key prefix, so tests never see each other's rooms."""
    async with two_nodes(redis_url, f"mn-{uuid.uuid4().hex[:8]}") as pair:
        yield pair
