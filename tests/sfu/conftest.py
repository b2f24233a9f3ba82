"""Real aiortc peers on loopback talking to a MediaPlane through an in-memory sink."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sfu import MediaConfig, MediaPlane


@pytest.fixture
async def plane() -> AsyncIterator[MediaPlane]:
    media = MediaPlane(MediaConfig(ice_servers=[], keyframe_interval_s=0.5))
    yield media
    await media.close()
