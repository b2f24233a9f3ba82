"""A python-socketio client that records every event, for bounded waits in tests."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import socketio

TIMEOUT = 5.0


class Client:
    def __init__(self, url: str, user_id: str | None, **auth: Any) -> None:
        """`user_id` None: a client that sends no `auth` (an anonymous guest in open mode)."""
        self.url = url
        self.auth: dict[str, Any] = {} if user_id is None else {"userId": user_id, **auth}
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, asyncio.Queue[Any]] = defaultdict(asyncio.Queue)
        self.sio.on("*", self._record)

    async def _record(self, event: str, *args: Any) -> None:
        await self.events[event].put(args[0] if len(args) == 1 else list(args))

    @property
    def sid(self) -> str:
        sid = self.sio.get_sid()
        assert sid is not None
        return str(sid)

    async def connect(self, transports: list[str] | None = None) -> Client:
        await self.sio.connect(
            self.url, auth=self.auth, transports=transports or ["websocket"], wait_timeout=TIMEOUT
        )
        return self

    async def close(self) -> None:
        await self.sio.disconnect()

    async def emit(self, event: str, *data: Any) -> None:
        await self.sio.emit(event, data[0] if len(data) == 1 else data or None)

    async def call(self, event: str, data: Any = None, timeout: float = TIMEOUT) -> Any:
        return await self.sio.call(event, data, timeout=timeout)

    async def next(self, event: str, timeout: float = TIMEOUT) -> Any:
        return await asyncio.wait_for(self.events[event].get(), timeout)

    async def next_where(
        self, event: str, predicate: Callable[[Any], bool], timeout: float = TIMEOUT
    ) -> Any:
        async def find() -> Any:
            while True:
                item = await self.events[event].get()
                if predicate(item):
                    return item

        return await asyncio.wait_for(find(), timeout)

    def pending(self, event: str) -> list[Any]:
        """Events of this name received and not yet consumed (no waiting)."""
        queue = self.events[event]
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items


async def first_of(clients: list[Client], event: str, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """(index, payload) of whichever client receives `event` first; the others' waits end."""
    waits = {asyncio.ensure_future(c.next(event, timeout)): i for i, c in enumerate(clients)}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    task = done.pop()
    return waits[task], task.result()


@asynccontextmanager
async def connected(url: str, *user_ids: str, **auth: Any) -> AsyncIterator[list[Client]]:
    clients = [await Client(url, uid, **auth).connect() for uid in user_ids]
    try:
        yield clients
    finally:
        for client in clients:
            await client.close()


async def http_json(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON body."""
    import aiohttp

    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None)
