"""The Socket.IO edge: connection auth, the event dispatcher, emits, and the node's lifecycle.

Handlers (in `signaling.handlers`) are plain coroutines `(conn, payload) -> ack | None`
registered with `Hub.on`; the dispatcher applies the rate limit, validates the payload with
its pydantic model and maps every `SignalingError` to the wire in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
import socketio
from pydantic import BaseModel, ValidationError

from signaling import metrics
from signaling.auth import Authenticator, AuthError, Identity, MembershipChecker
from signaling.config import Settings
from signaling.edge import AckError, EdgePolicy, EdgeServer, encode_event
from signaling.errors import (
    ErrorCode,
    InvalidPayload,
    RateLimited,
    SignalingError,
    error_ack,
    error_event,
)
from signaling.models import Limits
from signaling.ratelimit import TokenBucket
from signaling.store import MemoryStore, Store, StoreError

if TYPE_CHECKING:
    from sfu.commands import Command, Event, Reply
    from sfu.pool import Bus

log = logging.getLogger("signaling")

P = TypeVar("P")
Handler = Callable[["Conn", P], Awaitable[Any]]


@dataclass(eq=False)
class Conn:
    """A socket connected to this node."""

    sid: str
    identity: Identity
    bucket: TokenBucket
    connected_at: float = field(default_factory=time.monotonic)
    limited_notice_at: float = 0.0

    @property
    def user_id(self) -> str:
        return self.identity.user.id


class MediaPortLike(Protocol):
    """What signaling needs from the SFU: `sfu.WorkerPool`, driven by `sfu.commands`.

    `on_event` is where the plane's own initiatives arrive (an offer to a client, a
    connection let go); the media router sets it before `start`.
    """

    on_event: Callable[[Event], Awaitable[None]]

    async def start(self) -> None: ...

    async def run(self, command: Command) -> Reply: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    # Rooms across nodes (with Redis): the pools of the nodes talk over a bus.
    def use_bus(self, node: str, bus: Bus) -> None: ...

    async def on_bus(self, message: dict[str, Any]) -> None: ...

    async def node_gone(self, node: str) -> None: ...


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "payload"
    return f"{where}: {first.get('msg', 'invalid')}"


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        media: MediaPortLike | None = None,
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id or uuid.uuid4().hex[:12]
        self.started_at = time.monotonic()
        self.limits = Limits(
            sdp_chars=settings.max_sdp_chars,
            room_id_chars=settings.max_room_id_chars,
            chat_chars=settings.max_chat_chars,
        )
        manager = None
        if settings.redis_url:
            manager = socketio.AsyncRedisManager(
                settings.redis_url, channel=f"{settings.redis_prefix}:socketio"
            )
        self.sio = EdgeServer(
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
        if store is None:
            if settings.redis_url:
                from signaling.store.redis import RedisStore

                store = RedisStore(self.node_id, settings.redis_url, settings.redis_prefix)
            else:
                store = MemoryStore(self.node_id)
        self.store = store
        self.media = media
        self.http: aiohttp.ClientSession | None = None
        self.auth = Authenticator(settings, None)
        self.membership = MembershipChecker(settings.membership_url, None)
        self.conns: dict[str, Conn] = {}
        self.on_start_hooks: list[Callable[[], Awaitable[None]]] = []
        self.on_connect_hooks: list[Callable[[Conn], Awaitable[None]]] = []
        # Run (each in a task) once the client has been told it is connected.
        self.on_connected_hooks: list[Callable[[Conn], Awaitable[None]]] = []
        self.on_disconnect_hooks: list[Callable[[Conn], Awaitable[None]]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._cleanups = 0
        self._cleanups_done = asyncio.Event()
        self._cleanups_done.set()
        self.sio.on("connect", self._on_connect)
        self.sio.after_connect = self._after_connect
        self.sio.on("disconnect", self._on_disconnect)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.start()
        self.http = aiohttp.ClientSession()
        self.auth.http = self.http
        self.membership.http = self.http
        if self.settings.redis_url:
            # The pub/sub listener otherwise starts only with the first client (AIORTC.md).
            manager = self.sio.manager
            manager.initialize()
            # Or python-socketio initialises it again on the first connection: a second
            # pub/sub listener, and every cross-node emit delivered twice.
            self.sio.manager_initialized = True
        for hook in self.on_start_hooks:
            await hook()
        if self.settings.auth_mode == "open":
            log.warning(
                "AUTH IS OPEN: any userId may connect. Set JWT_SECRET or AUTH_VERIFY_URL "
                "before exposing this server."
            )

    async def stop(self) -> None:
        """Graceful shutdown: leave every room (others are told), then close the sockets."""
        self._closing = True
        for conn in list(self.conns.values()):
            with contextlib.suppress(Exception):
                await self.sio.emit("server:shutdown", {"reconnect": True}, to=conn.sid)
            await self._cleanup(conn)
        # Disconnects that began before the shutdown must finish before the store closes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cleanups_done.wait(), 10)
        # Close every transport (websocket and long-poll alike) so the web server stops at
        # once; socket.io clients see a transport close and reconnect by themselves.
        await self.sio.eio.close_all()
        await self.sio.shutdown()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.media is not None:
            await self.media.close()
        if self.http is not None:
            await self.http.close()
        await self.store.close()

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the hub owns and awaits on shutdown."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background task %s failed", name)

        task = asyncio.create_task(guarded(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- connections ------------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Any, auth: Any = None) -> None:
        if self._closing:
            raise socketio.exceptions.ConnectionRefusedError("Server shutting down")
        try:
            identity = await self.auth.authenticate(auth, sid)
        except AuthError as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        conn = Conn(
            sid, identity, TokenBucket(self.settings.rate_per_second, self.settings.rate_burst)
        )
        self.conns[sid] = conn
        metrics.CONNECTIONS.inc()
        await self.sio.enter_room(sid, f"user:{identity.user.id}")
        for hook in self.on_connect_hooks:
            await hook(conn)

    def _after_connect(self, sid: str) -> None:
        conn = self.conns.get(sid)
        if conn is None:
            return
        for hook in self.on_connected_hooks:
            self.spawn(hook(conn), "after-connect")

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        conn = self.conns.get(sid)
        if conn is None:
            return
        await self._cleanup(conn)

    async def _cleanup(self, conn: Conn) -> None:
        if self.conns.pop(conn.sid, None) is None:
            return
        metrics.CONNECTIONS.dec()
        self._cleanups += 1
        self._cleanups_done.clear()
        try:
            for hook in self.on_disconnect_hooks:
                try:
                    await hook(conn)
                except Exception:
                    log.exception("disconnect cleanup failed for %s", conn.sid)
        finally:
            self._cleanups -= 1
            if self._cleanups == 0:
                self._cleanups_done.set()

    # -- events ------------------------------------------------------------------------------

    def on(
        self,
        event: str,
        parse: Callable[[Any], P],
        *,
        ack_error: AckError = error_ack,
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Registers `handler` for `event` behind rate limiting, validation and error mapping."""

        def register(handler: Handler[P]) -> Handler[P]:
            received = metrics.EVENTS.labels(event)

            async def dispatch(sid: str, args: list[Any], acked: bool) -> Any:
                conn = self.conns.get(sid)
                if conn is None:
                    return None
                received.inc()
                try:
                    if not conn.bucket.take():
                        raise RateLimited("too many events; slow down")
                    try:
                        payload = parse(args[0] if args else None)
                    except ValidationError as exc:
                        raise InvalidPayload(_validation_message(exc)) from None
                    return await handler(conn, payload)
                except SignalingError as exc:
                    return await self._refuse(conn, event, exc, ack_error, acked)
                except StoreError as exc:  # storage, not the client: INTERNAL, may try again
                    busy = SignalingError(exc.message, ErrorCode.INTERNAL)
                    return await self._refuse(conn, event, busy, ack_error, acked)
                except Exception:
                    log.exception("handler for %s failed", event)
                    internal = SignalingError("internal error", ErrorCode.INTERNAL)
                    return await self._refuse(conn, event, internal, ack_error, acked)

            self.sio.register_event(event, dispatch, ack_error)
            return handler

        return register

    async def _refuse(
        self, conn: Conn, event: str, exc: SignalingError, ack_error: AckError, acked: bool
    ) -> Any:
        metrics.ERRORS.labels(exc.code.value).inc()
        if exc.code is ErrorCode.INVALID_PAYLOAD:
            # Counted against the socket's budget for bad input (signaling.edge.rejects).
            await self.sio.note_rejected(conn.sid, "invalid-payload", f"{event}: {exc.message}")
        if acked:
            return ack_error(exc)
        if exc.code is ErrorCode.RATE_LIMITED:
            # One notice a second: answering every dropped event would amplify the flood.
            now = time.monotonic()
            if now - conn.limited_notice_at < 1.0:
                return None
            conn.limited_notice_at = now
        await self.sio.emit("error", error_event(exc, event), to=conn.sid)
        return None

    async def emit(
        self,
        event: str,
        data: Any,
        to: str | Iterable[str],
        skip: str | None = None,
    ) -> None:
        """Emits to one socket or a list of sockets on any node.

        Sockets held by this node skip the Redis round trip (`ignore_queue`): with a message
        queue python-socketio otherwise publishes every emit, even to a local socket.
        """
        if isinstance(to, str):
            if to in self.conns:
                eio_sid = self.sio.manager.eio_sid_from_sid(to, "/")
                if eio_sid is not None:
                    await self.sio.eio.send(eio_sid, encode_event(event, data))
                    return
            await self.sio.emit(event, data, to=to)
            return
        targets = [sid for sid in to if sid != skip]
        if not targets:
            return
        local = all(sid in self.conns for sid in targets)
        await self.sio.emit(event, data, to=targets, ignore_queue=local)

    @property
    def connection_count(self) -> int:
        return len(self.conns)

    def uptime(self) -> float:
        return round(time.monotonic() - self.started_at, 3)


def model_parser(model: type[BaseModel]) -> Callable[[Any], Any]:
    return model.model_validate
