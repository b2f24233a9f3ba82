from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiortc.codecs.opus
import aiortc.codecs.vpx
import pytest

from devtools.media import Clip, encode_opus_clip, encode_vp8_clip
from devtools.netns import Namespace, sweep_stale
from tests.postgres_server import database, postgres_server
from tests.redis_server import redis_server
from tests.server import InProcess, inprocess_server
from tests.sfu.peers import DecodeCounter


@pytest.fixture
async def server() -> AsyncIterator[InProcess]:
    """An in-process mesh-mode node with open auth and an API key."""
    async with inprocess_server(room_mode="mesh", api_key="test-key") as running:
        yield running


@pytest.fixture(scope="session")
def vp8_clip() -> Clip:
    return encode_vp8_clip(width=160, height=120, fps=30, seconds=2.0)


@pytest.fixture(scope="session")
def opus_clip() -> Clip:
    return encode_opus_clip(seconds=1.0)


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> Iterator[DecodeCounter]:
    """Counts every decode in this process (server and test peers never decode)."""
    counter = DecodeCounter()
    for cls in (aiortc.codecs.vpx.Vp8Decoder, aiortc.codecs.opus.OpusDecoder):
        original = cls.decode

        def counting(self: Any, frame: Any, _orig: Any = original) -> Any:
            counter.calls += 1
            return _orig(self, frame)

        monkeypatch.setattr(cls, "decode", counting)
    yield counter


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throwaway Redis per test session; tests isolate themselves by key prefix."""
    existing = os.environ.get("TEST_REDIS_URL")
    if existing:
        yield existing
        return
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server (the machine's, or a throwaway cluster) as a URL without a
    database; `postgres_url` is this run's own database on it."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url(postgres: str) -> Iterator[str]:
    """One database per test session, created and dropped here; tests use unique ids."""
    with database(postgres) as url:
        yield url


@pytest.fixture(scope="session")
def netns_swept() -> list[str]:
    """Namespaces and veths that a killed earlier run left behind, removed once per session
    (those of live processes are left alone). Fails with the reason on a machine that
    cannot make network namespaces (not root, no `ip`/`tc`/`nft`)."""
    return sweep_stale()


@pytest.fixture
async def namespace(netns_swept: list[str]) -> AsyncIterator[Namespace]:
    """A fresh network namespace on a veth pair to the host (devtools.netns), unshaped;
    removed after the test, whatever happened."""
    async with Namespace() as ns:
        yield ns
