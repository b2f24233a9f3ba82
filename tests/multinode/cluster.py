"""Two real server processes on one Redis, and clients spread over them.

Built on the shared helpers: `tests.server.running_server` (the real `python -m signaling`
process, killable) and `tests.clients.Client` (records every event for bounded waits).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.clients import Client, http_json
from tests.server import ServerProcess, running_server


def node(
    redis_url: str, prefix: str, name: str, ttl_s: float = 1.5, mode: str = "mesh", **env: str
) -> contextlib.AbstractAsyncContextManager[ServerProcess]:
    """Node `{prefix}-{name}` (mesh by default), sharing state under the key prefix `prefix`;
    `env` adds settings (a shared `DATABASE_URL`, say)."""
    settings: dict[str, Any] = {
        "REDIS_URL": redis_url,
        "REDIS_PREFIX": prefix,
        "NODE_ID": f"{prefix}-{name}",
        "ROOM_MODE": mode,
        # Short liveness timers so a dead node is noticed quickly (defaults 2 s / 6 s).
        "NODE_HEARTBEAT_S": "0.5",
        "NODE_TTL_S": str(ttl_s),
        **env,
    }
    return running_server(**settings)


@contextlib.asynccontextmanager
async def two_nodes(
    redis_url: str, prefix: str, ttl_s: float = 1.5, mode: str = "mesh", **env: str
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Nodes `{prefix}-a` and `{prefix}-b` on one Redis."""
    async with (
        node(redis_url, prefix, "a", ttl_s, mode, **env) as a,
        node(redis_url, prefix, "b", ttl_s, mode, **env) as b,
    ):
        yield a, b


@contextlib.asynccontextmanager
async def clients(*specs: tuple[str, str]) -> AsyncIterator[list[Client]]:
    """Connects `(userId, url)` clients, each to its own node; closes them at the end."""
    made: list[Client] = []
    try:
        for user_id, url in specs:
            made.append(await Client(url, user_id, name=user_id.title()).connect())
        yield made
    finally:
        for client in made:
            with contextlib.suppress(Exception):
                await client.close()


async def rooms_of(node: ServerProcess) -> dict[str, int]:
    """`GET /rooms` of one node as {room id: user count}."""
    status, body = await http_json("GET", f"{node.url}/rooms")
    assert status == 200, body
    rooms: list[dict[str, Any]] = body["rooms"]
    return {room["id"]: room["userCount"] for room in rooms}
