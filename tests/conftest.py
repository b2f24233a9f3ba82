from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.server import InProcess, inprocess_server


@pytest.fixture
async def server() -> AsyncIterator[InProcess]:
    """An in-process mesh-mode node with open auth and an API key."""
    async with inprocess_server(room_mode="mesh", api_key="test-key") as running:
        yield running
