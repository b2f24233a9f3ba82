"""Alembic's migrations build exactly the schema of `signaling/history/tables.py`, once, even
when several nodes start at the same time on one database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from benchmarks._postgres import create_database, drop_database
from signaling.history.database import create_engine, migrate, resolve_url
from signaling.history.tables import metadata
from tests.history.conftest import SQL_BACKENDS


@pytest.fixture(params=SQL_BACKENDS)
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database of each SQL backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = await create_database(request.getfixturevalue("postgres"))
    try:
        yield url
    finally:
        await drop_database(url)


async def test_nodes_migrating_at_once_build_the_schema_of_tables_py(
    fresh_url: str, tmp_path: Path
) -> None:
    url = resolve_url(fresh_url, tmp_path)
    assert url is not None
    engines = [create_engine(url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        await migrate(engines[0])  # and again: nothing to do

        def differences(connection: Any) -> list[Any]:
            context = MigrationContext.configure(connection)
            assert context.get_current_revision() == "0001"
            tables = set(inspect(connection).get_table_names())
            assert set(metadata.tables) <= tables
            return list(compare_metadata(context, metadata))

        async with engines[0].connect() as conn:
            assert await conn.run_sync(differences) == []
    finally:
        for engine in engines:
            await engine.dispose()
