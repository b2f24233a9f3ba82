"""Wires the hub, the handlers, the HTTP routes and the optional SFU into one aiohttp app."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from signaling.config import Settings
from signaling.handlers import Handlers
from signaling.history import open_history, utcnow
from signaling.http import setup_routes
from signaling.hub import Hub, MediaPortLike

log = logging.getLogger("signaling")

APP_KEY = web.AppKey("application", object)


def build_media(settings: Settings) -> MediaPortLike | None:
    """The SFU runs where a room may become sfu: modes `sfu` and `auto`, or sfu guide rooms.

    `MEDIA_WORKERS` processes share the peer connections (one runs in this process, with
    no extra process); a room that outgrows a worker spans several, joined by pipes.
    """
    if settings.room_mode == "mesh" and settings.guide_room_mode == "mesh":
        return None
    from sfu import MediaConfig, PoolConfig, WorkerPool

    async def unrouted(event: object) -> None:
        log.warning("media event before the media router started: %s", event)

    return WorkerPool(
        PoolConfig(
            workers=settings.media_workers,
            media=MediaConfig(
                ice_servers=settings.ice_servers,
                video_codec=settings.sfu_video_codec,
                answer_timeout_s=settings.sfu_answer_timeout_s,
            ),
            pipe_host=settings.media_pipe_host,
            placement=settings.media_placement,
        ),
        unrouted,
    )


class Application:
    """One node: its hub, history, handlers and background tasks, started and stopped together."""

    def __init__(self, settings: Settings, media: MediaPortLike | None = None) -> None:
        self.settings = settings
        self.hub = Hub(settings, media=media if media is not None else build_media(settings))
        self.history = open_history(
            settings.database_url,
            settings.data_dir,
            self.hub.store,
            settings.chat_history,
            settings.sqlite_synchronous,
        )
        self.handlers = Handlers(self.hub, self.history)
        self.web = web.Application(middlewares=[cors_middleware(settings)])
        self.web[APP_KEY] = self
        self.hub.sio.attach(self.web)
        setup_routes(self.web, self)
        self.web.on_startup.append(self._on_startup)
        self.web.on_shutdown.append(self._on_shutdown)

    async def _on_startup(self, _: web.Application) -> None:
        await self.history.start()
        await self.hub.start()
        if not self.hub.store.shared:
            # Without Redis the rooms died with the previous process: so did their calls.
            ended = await self.history.end_open_calls()
            if ended:
                log.info("ended %d calls left open by the previous run", ended)
        if self.settings.history_days > 0:
            self.hub.spawn(self._cleanup(), "history-cleanup")
        if self.hub.store.shared:
            # A node restarted under the same NODE_ID before its heartbeat expired would
            # otherwise never be seen dead, and its old participants would stay as ghosts.
            await self.handlers.purge_node(self.hub.store.node_id)
            await self.hub.store.heartbeat(self.settings.node_ttl_s)
            self.hub.spawn(self._liveness(), "node-liveness")

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.hub.stop()  # everyone leaves: their call-history events are queued
        await self.history.close()  # ... and committed

    async def _cleanup(self) -> None:
        """Deletes history older than HISTORY_DAYS; one node of several does it per period."""
        period = self.settings.history_cleanup_s
        while True:
            try:
                if await self.hub.store.claim("history-cleanup", period * 0.9):
                    cutoff = utcnow() - timedelta(days=self.settings.history_days)
                    deleted = await self.history.purge(cutoff)
                    if deleted:
                        log.info("history cleanup: %d rows older than %s deleted", deleted, cutoff)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("history cleanup failed")
            await asyncio.sleep(period)

    async def _liveness(self) -> None:
        """Heartbeats this node and removes the participants of nodes that stopped beating."""
        store = self.hub.store
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_s)
            try:
                await store.heartbeat(self.settings.node_ttl_s)
                for node in await store.dead_nodes():
                    if node == store.node_id:
                        continue
                    if await store.claim(f"sweep:{node}", self.settings.node_ttl_s):
                        log.warning("node %s is gone; removing its participants", node)
                        await self.handlers.purge_node(node)
                        await store.forget_node(node)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("liveness round failed")


def cors_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    """CORS for the HTTP routes from ALLOWED_ORIGINS (Socket.IO applies its own)."""
    allowed = settings.allowed_origins
    any_origin = "*" in allowed

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/socket.io"):
            return await handler(request)
        origin = request.headers.get("Origin")
        permitted = origin is not None and (any_origin or origin in allowed)
        if request.method == "OPTIONS" and origin is not None:
            response: web.StreamResponse = web.Response(status=204 if permitted else 403)
        else:
            response = await handler(request)
        if permitted and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
        return response

    return middleware
