"""Alembic environment: migrations run on the connection `signaling.history.migrate` hands
over (start-up and `python -m signaling migrate`), or on `sqlalchemy.url` from the alembic CLI."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from signaling.history.tables import metadata

config = context.config


def run(connection: Connection) -> None:
    # render_as_batch: SQLite alters a table by copying it; Alembic does that when asked.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


shared = config.attributes.get("connection")
if shared is not None:
    run(shared)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url, or run `python -m signaling migrate`")
    asyncio.run(run_from_url(url))
