"""The application root: builds one node's parts and wires each handler with its ports.

Nothing else constructs a part or reaches another's internals: the edge (`Sockets` over
`signaling.edge`), the dispatcher, the store, the history and the media pool are built
here, and each handler is handed only the ports it uses (`signaling.ports`). The order of
the concerns on connect and disconnect is declared here too, with why.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import aiohttp
from aiohttp import web

from signaling.auth import Authenticator, MembershipChecker
from signaling.config import Settings
from signaling.dispatch import Dispatcher
from signaling.handlers import GuideRooms, InCall, Notifications, Pairing, Studies, VideoRooms
from signaling.handlers.guide_media import GuideMedia
from signaling.history import open_history, utcnow
from signaling.http import Api, setup_routes
from signaling.media import MediaRouter
from signaling.models import Limits
from signaling.ports import MediaPort
from signaling.sockets import Lifecycle, Sockets, build_server
from signaling.store import MemoryStore, Store
from signaling.tasks import Tasks

log = logging.getLogger("signaling")

APP_KEY = web.AppKey("application", object)


def build_media(settings: Settings) -> MediaPort | None:
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
            pipe_advertise=settings.media_pipe_advertise,
            placement=settings.media_placement,
            capacity_pps=settings.media_worker_capacity_pps,
        ),
        unrouted,
    )


def build_store(settings: Settings, node_id: str) -> Store:
    if settings.redis_url:
        from signaling.store.redis import RedisStore

        return RedisStore(node_id, settings.redis_url, settings.redis_prefix)
    return MemoryStore(node_id)


class Application:
    """One node: its parts, started and stopped together, and root first on the way out."""

    def __init__(self, settings: Settings, media: MediaPort | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id or uuid.uuid4().hex[:12]
        self.started_at = time.monotonic()
        self.store = build_store(settings, self.node_id)
        self.media = media if media is not None else build_media(settings)
        self.http: aiohttp.ClientSession | None = None
        self.auth = Authenticator(settings, None)
        self.checker = MembershipChecker(settings.membership_url, None)
        self.tasks = Tasks()
        self.sockets = Sockets(settings, build_server(settings), self.auth, self.tasks)
        self.dispatcher = Dispatcher(self.sockets.server, self.sockets, self.sockets)
        self.history = open_history(
            settings.database_url,
            settings.data_dir,
            self.store,
            settings.chat_history,
            settings.sqlite_synchronous,
        )
        self._wire_handlers()
        self.web = web.Application(middlewares=[cors_middleware(settings)])
        self.web[APP_KEY] = self
        self.sockets.server.attach(self.web)
        setup_routes(
            self.web,
            Api(
                settings=settings,
                node_id=self.node_id,
                store=self.store,
                history=self.history,
                connections=self.sockets,
                emitter=self.sockets,
                media=self.media,
                push=self.notifications.push,
                close_room=self.close_room,
                uptime=self.uptime,
            ),
        )
        self.web.on_startup.append(self._on_startup)
        self.web.on_shutdown.append(self._on_shutdown)

    def _wire_handlers(self) -> None:
        settings, store, events, sockets = self.settings, self.store, self.dispatcher, self.sockets
        node = self.node_id
        limits = Limits(
            sdp_chars=settings.max_sdp_chars,
            room_id_chars=settings.max_room_id_chars,
            chat_chars=settings.max_chat_chars,
        )
        # The video rooms answer the router's questions about their rooms (late-bound: the
        # router is built first, since the rooms drive it).
        self.router = MediaRouter(
            self.media,
            sockets,
            self.tasks,
            sockets,
            store,
            settings,
            node,
            lambda room_id, sid: self.video.wants_media(room_id, sid),
            lambda room_id, sid, peer: self.video.peer_replaced(room_id, sid, peer),
            lambda room_id: self.video.call_of(room_id),
        )
        self.video = VideoRooms(
            events, sockets, store, self.history, self.checker, limits, self.router, settings, node
        )
        self.in_call = InCall(
            events,
            sockets,
            store,
            self.history,
            limits,
            self.video.members,
            self.router,
            chat_history=settings.chat_history,
        )
        guide_media = GuideMedia(
            sockets,
            store,
            self.router,
            lambda sid: self.guide.members.room_of(sid),  # late-bound: the rooms own the seam
            node_id=node,
            sfu=settings.guide_room_mode == "sfu",
            id_chars=settings.max_room_id_chars,
        )
        self.guide = GuideRooms(
            events,
            sockets,
            store,
            self.checker,
            limits,
            guide_media,
            node_id=node,
            max_participants=settings.max_participants,
        )
        self.studies = Studies(
            events,
            sockets,
            sockets,
            store,
            self.history,
            self.checker,
            limits,
            node_id=node,
            chat_history=settings.chat_history,
        )
        self.notifications = Notifications(events, sockets, store, self.history, node)
        self.pairing = Pairing(events, sockets, store, sockets, self.video, node)
        sockets.lifecycle = Lifecycle(
            # Before the client is told it is connected: a client that sees `connect` is
            # online, and a notification pushed from then on is delivered live.
            connect=[self.notifications.on_connect],
            connected=[self.notifications.on_connected],
            # Pairing first: a socket being moved into its pair room is marked as moving
            # (PairingQueue.moving) before the video rooms look for it, so that either the
            # video rooms see it in the room and take it out, or pairing takes it out itself
            # once the move ends; never a ghost in the pair room.
            disconnect=[
                self.pairing.on_disconnect,
                self.video.on_disconnect,
                self.guide.on_disconnect,
                self.studies.on_disconnect,
                self.notifications.on_disconnect,
            ],
        )

    def uptime(self) -> float:
        return round(time.monotonic() - self.started_at, 3)

    async def close_room(self, room_id: str, reason: str) -> bool:
        """Closes the video room and the guide room of that id (DELETE /api/rooms/:id)."""
        closed_video = await self.video.close_room(room_id, reason)
        closed_guide = await self.guide.close_room(room_id, reason)
        return closed_video or closed_guide

    async def purge_node(self, node_id: str) -> None:
        """A dead node's sockets leave everything (pairing first, as on a disconnect)."""
        await self.pairing.purge_node(node_id)
        await self.video.purge_node(node_id)
        await self.guide.purge_node(node_id)
        await self.studies.purge_node(node_id)
        await self.notifications.purge_node(node_id)

    async def _on_startup(self, _: web.Application) -> None:
        await self.history.start()
        await self.store.start()
        self.http = aiohttp.ClientSession()
        self.auth.http = self.http
        self.checker.http = self.http
        self.sockets.start()
        await self.router.start()
        if self.settings.auth_mode == "open":
            log.warning(
                "AUTH IS OPEN: any userId may connect. Set JWT_SECRET or AUTH_VERIFY_URL "
                "before exposing this server."
            )
        if not self.store.shared:
            # Without Redis the rooms died with the previous process: so did their calls.
            ended = await self.history.end_open_calls()
            if ended:
                log.info("ended %d calls left open by the previous run", ended)
        if self.settings.history_days > 0:
            self.tasks.spawn(self._cleanup(), "history-cleanup")
        if self.store.shared:
            # A node restarted under the same NODE_ID before its heartbeat expired would
            # otherwise never be seen dead, and its old participants would stay as ghosts.
            await self.purge_node(self.store.node_id)
            await self.store.heartbeat(self.settings.node_ttl_s)
            self.tasks.spawn(self._liveness(), "node-liveness")

    async def _on_shutdown(self, _: web.Application) -> None:
        await self.stop()  # everyone leaves: their call-history events are queued
        await self.history.close()  # ... and committed

    async def stop(self) -> None:
        """Graceful shutdown, root first.

        This node's media closes at once (`MediaRouter.close_node`: the other nodes drop what
        it held with one notice, and every room seated here closes once), then its clients
        are told (`server:shutdown`), then each socket's disconnect steps take it out of its
        rooms (people on other nodes are told), finding no media left to renegotiate: nobody
        is renegotiated one leave at a time on the way down.
        """
        self.sockets.refuse_new()
        await self.router.close_node()
        await self.sockets.emit("server:shutdown", {"reconnect": True}, to=list(self.sockets.conns))
        await self.sockets.disconnect_all()
        await self.sockets.close()
        await self.tasks.cancel_all()
        if self.media is not None:
            await self.media.close()
        if self.http is not None:
            await self.http.close()
        await self.store.close()

    async def _cleanup(self) -> None:
        """Deletes history older than HISTORY_DAYS; one node of several does it per period."""
        period = self.settings.history_cleanup_s
        while True:
            try:
                if await self.store.claim("history-cleanup", period * 0.9):
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
        store = self.store
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_s)
            try:
                await store.heartbeat(self.settings.node_ttl_s)
                for node in await store.dead_nodes():
                    if node == store.node_id:
                        continue
                    if await store.claim(f"sweep:{node}", self.settings.node_ttl_s):
                        log.warning("node %s is gone; removing its participants", node)
                        await self.purge_node(node)
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
