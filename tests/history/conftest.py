"""History fixtures: the same behavioural tests run on SQLite, PostgreSQL and in memory.

`database_url` is a database of each SQL backend (SQLite: a file in the test's tmp dir;
PostgreSQL: this session's own database on a real server, see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from signaling.history import History, open_history
from signaling.store.memory import MemoryStore

SQL_BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'history.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=SQL_BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each SQL backend, as DATABASE_URL takes it."""
    return _url(request, request.param, tmp_path)


@pytest.fixture(params=["memory", *SQL_BACKENDS])
def any_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """DATABASE_URL for every backend, `memory` included."""
    return "memory" if request.param == "memory" else _url(request, request.param, tmp_path)


@pytest.fixture
async def history(any_database_url: str, tmp_path: Path) -> AsyncIterator[History]:
    """A started history of each backend (memory keeps up to 1,000 messages per study)."""
    store = MemoryStore("node-a")
    backend = open_history(any_database_url, tmp_path, store, chat_cap=1000)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
