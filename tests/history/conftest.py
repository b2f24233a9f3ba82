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
    if backend.startswith("sqlite"):
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


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "sqlite-full",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[History]:
    """A started history of each backend; `sqlite-full` is SQLite with SQLITE_SYNCHRONOUS=full
    (its writer runs in a thread). Memory keeps up to 1,000 messages per study."""
    backend_name = request.param
    url = "memory" if backend_name == "memory" else _url(request, backend_name, tmp_path)
    synchronous = "full" if backend_name == "sqlite-full" else "normal"
    backend = open_history(url, tmp_path, MemoryStore("node-a"), 1000, synchronous)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
