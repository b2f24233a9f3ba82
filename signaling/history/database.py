"""Which database, how to connect to it, and its migrations (Alembic).

`DATABASE_URL` unset: SQLite in `DATA_DIR` (default `./data/studycall.db`). `memory`: nothing
is written anywhere. `sqlite:///path` or `postgresql://user@host/db`: that database (the async
driver, aiosqlite or asyncpg, is filled in).

SQLite runs in WAL mode (readers never block the writer). `SQLITE_SYNCHRONOUS=normal` (the
default): a commit has written the WAL to the operating system, so an acknowledged write
survives any death of the server process (SIGKILL, OOM, a crash) but not a power cut or a kernel
crash (the file stays consistent; the last commits may be missing). `full`: a commit returns once
the WAL is fsynced, which survives a power cut too. PostgreSQL keeps its own default
(`synchronous_commit=on`): fsynced, like `full`.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, func, select
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MEMORY = "memory"
SQLITE_FILE = "studycall.db"
# Two nodes starting at once on one PostgreSQL migrate one after the other.
MIGRATION_LOCK = 0x5354_4443  # "STDC"
_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
IMMEDIATE = "studycall_sqlite_immediate"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or migrated at start-up: the node must not start."""


def resolve_url(database_url: str | None, data_dir: Path) -> URL | None:
    """The SQLAlchemy URL to use, or None for the in-memory history."""
    if database_url is not None and database_url.strip().lower() == MEMORY:
        return None
    if not database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        return make_url(f"sqlite+aiosqlite:///{(data_dir / SQLITE_FILE).resolve()}")
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ValueError(f"DATABASE_URL: unsupported database {backend!r} (sqlite, postgresql)")
    if "+" not in url.drivername:
        url = url.set(drivername=_DRIVERS[backend])
    if backend == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return url


def redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=5, max_overflow=10)


def create_sqlite_writer_engine(url: URL, synchronous: str) -> Engine:
    """The same SQLite file for the node's writer, on the synchronous sqlite3 driver.

    With `normal` it writes on the event loop (a commit is a write(2) of the WAL, no fsync) and
    the WAL is checkpointed elsewhere (`checkpoint`), never in a commit."""
    engine = create_sync_engine(url.set(drivername="sqlite+pysqlite"), connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_connect)
    event.listen(engine, "begin", _sqlite_begin)

    def writer_pragmas(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        if synchronous != "full":
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    event.listen(engine, "connect", writer_pragmas)
    return engine


def checkpoint(path: str) -> None:
    """Copies committed WAL pages into the database file (PASSIVE: never blocks the writer).

    Runs in a thread of its own on its own connection: it fsyncs."""
    connection = sqlite3.connect(path, timeout=30)
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        connection.close()


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes: on SQLite it takes the write lock at BEGIN (IMMEDIATE), so
    two writers queue on the lock instead of failing when one upgrades from reading."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{IMMEDIATE: True})
        async with conn.begin():
            yield conn


def _sqlite_connect(dbapi_connection: Any, _: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, says when transactions begin (see _sqlite_begin):
    # the module's own implicit BEGIN skips DDL, which would leave migrations half-done.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=30000",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(
        "BEGIN IMMEDIATE" if conn.get_execution_options().get(IMMEDIATE) else "BEGIN"
    )


def alembic_config(url: URL | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        config.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Brings the schema to the newest revision, in one transaction."""
    async with write_transaction(engine) as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


__all__ = [
    "MEMORY",
    "DatabaseUnavailable",
    "alembic_config",
    "checkpoint",
    "create_engine",
    "create_sqlite_writer_engine",
    "migrate",
    "redacted",
    "resolve_url",
    "write_transaction",
]
