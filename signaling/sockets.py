"""The sockets this node holds: their lifecycle, and emits to sockets on any node.

`Sockets` is the `Emitter`, `Groups` and `Connections` ports over the edge server
(`signaling.edge`, where every python-socketio/engine.io private lives). The lifecycle of
one connection:

1. CONNECT: the auth payload is checked (a refusal is the client's `connect_error`); the
   `Conn` enters the table and its `user:<id>` group, and the `Lifecycle.connect` steps
   run in order, before the client is told it is connected (a client that sees `connect`
   is already counted online).
2. connected: the CONNECT was answered; the `Lifecycle.connected` steps run, each in a
   task of its own (what the client missed, which it can only take once connected).
3. gone (transport closed, client disconnect, node shutdown): the `Conn` leaves the table
   first, so that no event of it is dispatched any more, then the `Lifecycle.disconnect`
   steps run in the order the application root declares; a failing step is logged and the
   next one runs anyway. Shutdown waits for the cleanups that have begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import socketio

from signaling import metrics
from signaling.auth import Authenticator, AuthError
from signaling.config import Settings
from signaling.edge import EdgePolicy, EdgeServer
from signaling.ports import Conn, Spawner
from signaling.ratelimit import TokenBucket

log = logging.getLogger("signaling")

Step = Callable[[Conn], Awaitable[None]]

CLEANUP_WAIT_S = 10.0
"""How long shutdown waits for disconnects that began before it."""


@dataclass
class Lifecycle:
    """What each concern does as a socket connects and goes, in the order they run."""

    connect: list[Step] = field(default_factory=list)
    connected: list[Step] = field(default_factory=list)
    disconnect: list[Step] = field(default_factory=list)


def build_server(settings: Settings) -> EdgeServer:
    """The Socket.IO server; with Redis its message queue carries emits across nodes."""
    manager = None
    if settings.redis_url:
        manager = socketio.AsyncRedisManager(
            settings.redis_url, channel=f"{settings.redis_prefix}:socketio"
        )
    return EdgeServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=settings.cors_origins,
        max_http_buffer_size=settings.max_http_buffer_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        http_compression=False,
        logger=False,
        engineio_logger=False,
        edge_policy=EdgePolicy(
            send_queue_max_bytes=settings.send_queue_max_bytes,
            send_queue_max_age_s=settings.send_queue_max_age_s,
            reject_budget=settings.reject_budget,
            reject_refill_per_s=settings.reject_refill_per_s,
            reject_log_interval_s=settings.reject_log_interval_s,
        ),
    )


class Sockets:
    def __init__(
        self, settings: Settings, server: EdgeServer, auth: Authenticator, spawner: Spawner
    ) -> None:
        self.settings = settings
        self.server = server
        self.auth = auth
        self.spawner = spawner
        self.conns: dict[str, Conn] = {}
        self.lifecycle = Lifecycle()
        self._closing = False
        self._cleanups = 0
        self._cleanups_done = asyncio.Event()
        self._cleanups_done.set()
        server.on("connect", self._on_connect)
        server.after_connect = self._after_connect
        server.on("disconnect", self._on_disconnect)

    # -- Connections -------------------------------------------------------------------------

    def local(self, sid: str) -> bool:
        return sid in self.conns

    def conn(self, sid: str) -> Conn | None:
        return self.conns.get(sid)

    @property
    def count(self) -> int:
        return len(self.conns)

    # -- Emitter and Groups ----------------------------------------------------------------

    async def emit(
        self, event: str, data: Any, to: str | Iterable[str], skip: str | None = None
    ) -> None:
        """Sockets held by this node skip the message queue's round trip."""
        if isinstance(to, str):
            if to in self.conns and await self.server.send_local(to, event, data):
                return
            await self.server.emit(event, data, to=to)
            return
        targets = [sid for sid in to if sid != skip]
        if not targets:
            return
        local = all(sid in self.conns for sid in targets)
        await self.server.emit(event, data, to=targets, ignore_queue=local)

    async def emit_group(self, event: str, data: Any, group: str, skip: str | None = None) -> None:
        await self.server.emit(event, data, to=group, skip_sid=skip)

    async def enter_group(self, sid: str, group: str) -> None:
        await self.server.enter_room(sid, group)

    async def leave_group(self, sid: str, group: str) -> None:
        await self.server.leave_room(sid, group)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.settings.redis_url:
            self.server.start_queue()

    def refuse_new(self) -> None:
        """Shutdown begins: new connections are refused."""
        self._closing = True

    async def disconnect_all(self) -> None:
        """Every socket goes (its disconnect steps run), and cleanups that began finish."""
        for conn in list(self.conns.values()):
            await self._cleanup(conn)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cleanups_done.wait(), CLEANUP_WAIT_S)

    async def close(self) -> None:
        await self.server.close_transports()
        await self.server.shutdown()

    async def _on_connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        if self._closing:
            raise socketio.exceptions.ConnectionRefusedError("Server shutting down")
        try:
            identity = await self.auth.authenticate(auth, sid)
        except AuthError as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        settings = self.settings
        conn = Conn(sid, identity, TokenBucket(settings.rate_per_second, settings.rate_burst))
        self.conns[sid] = conn
        metrics.CONNECTIONS.inc()
        await self.server.enter_room(sid, f"user:{identity.user.id}")
        for step in self.lifecycle.connect:
            await step(conn)

    def _after_connect(self, sid: str) -> None:
        conn = self.conns.get(sid)
        if conn is None:
            return
        for step in self.lifecycle.connected:
            self.spawner.spawn(step(conn), "after-connect")

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.get(sid)
        if conn is not None:
            await self._cleanup(conn)

    async def _cleanup(self, conn: Conn) -> None:
        if self.conns.pop(conn.sid, None) is None:
            return
        metrics.CONNECTIONS.dec()
        self._cleanups += 1
        self._cleanups_done.clear()
        try:
            for step in self.lifecycle.disconnect:
                try:
                    await step(conn)
                except Exception:
                    log.exception("disconnect cleanup failed for %s", conn.sid)
        finally:
            self._cleanups -= 1
            if self._cleanups == 0:
                self._cleanups_done.set()
