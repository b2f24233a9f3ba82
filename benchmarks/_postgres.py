"""Throwaway PostgreSQL databases (create, drop) for the chat benchmark and the tests."""

from __future__ import annotations

import uuid

import asyncpg


async def _admin(server: str, statement: str) -> None:
    conn = await asyncpg.connect(f"{server}/postgres", timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def create_database(server: str, prefix: str = "studycall_test") -> str:
    """A new, empty database with a unique name on `server` (a URL without a database)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


async def drop_database(url: str) -> None:
    server, _, name = url.rpartition("/")
    await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
