"""Fixtures of the multi-node tests: one Redis per session, two fresh nodes per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.multinode.cluster import two_nodes
from tests.server import ServerProcess


@pytest.fixture
async def nodes(redis_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes on their own key prefix, so tests never see each other's rooms."""
    async with two_nodes(redis_url, f"mn-{uuid.uuid4().hex[:8]}") as pair:
        yield pair
