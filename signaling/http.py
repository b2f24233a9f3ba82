"""HTTP routes (docs/protocol.md section 7): health, metrics, rooms, backend API, web client."""

from __future__ import annotations

import functools
import hmac
import logging
import resource
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError

from signaling.config import Settings
from signaling.domain import GuideRoom, Notification, VideoRoom
from signaling.errors import NotFound
from signaling.history import History, HistoryUnavailable, utcnow
from signaling.models import MessagesQuery, NotificationIn, RoomHistoryQuery, StudyEventIn
from signaling.ports import Connections, Emitter, MediaPort
from signaling.store import Store

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
SOCKET_IO_CLIENT = WEB_ROOT / "node_modules" / "socket.io-client" / "dist"


def _memory() -> dict[str, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    rss = peak
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * resource.getpagesize()
    except OSError:
        pass
    return {"rss": rss, "maxRss": peak}


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


Route = Callable[[web.Request], Awaitable[web.Response]]


@dataclass(frozen=True)
class Api:
    """What the HTTP routes use, handed in by the application root."""

    settings: Settings
    node_id: str
    store: Store
    history: History
    connections: Connections
    emitter: Emitter
    media: MediaPort | None
    push: Callable[[Notification], Awaitable[None]]
    """Stores a notification and delivers it if its user is online."""
    close_room: Callable[[str, str], Awaitable[bool]]
    """`close_room(room_id, reason)`: closes the video or guide room; False if none."""
    uptime: Callable[[], float]


def history_guard(route: Route) -> Route:
    """A database that fails answers 503 with the contract's error body, not a traceback."""

    @functools.wraps(route)
    async def guarded(request: web.Request) -> web.Response:
        try:
            return await route(request)
        except HistoryUnavailable as exc:
            return _error(503, exc.code.value, exc.message)

    return guarded


def setup_routes(app: web.Application, api: Api) -> None:
    history = api.history
    settings = api.settings
    store = api.store

    async def health(_: web.Request) -> web.Response:
        redis = "disabled"
        if store.shared:
            redis = "ok" if await store.ping() else "error"
        database = "memory"
        if history.name != "memory":
            database = "ok" if await history.ping() else "error"
        healthy = "error" not in (redis, database)
        body = {
            "status": "ok" if healthy else "degraded",
            "connections": api.connections.count,
            "uptime": api.uptime(),
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "node": api.node_id,
            "auth": settings.auth_mode,
            "redis": redis,
            "database": database,
            "workers": [] if api.media is None else api.media.stats().get("workers", []),
        }
        return web.json_response(body, status=200 if healthy else 503)

    async def list_rooms() -> list[dict[str, Any]]:
        video = [r.summary() for r in await store.load_all(VideoRoom)]
        guide = [r.summary() for r in await store.load_all(GuideRoom)]
        return sorted(video + guide, key=lambda r: (r["createdAt"], r["name"]))

    async def metrics_json(_: web.Request) -> web.Response:
        rooms = await list_rooms()
        body: dict[str, Any] = {
            "connections": api.connections.count,
            "rooms": len(rooms),
            "roomDetails": [
                {"name": r["name"], "participants": r["userCount"], "mode": r["mode"]}
                for r in rooms
            ],
            "memory": _memory(),
            "uptime": api.uptime(),
        }
        if api.media is not None:
            body["sfu"] = api.media.stats()
        return web.json_response(body)

    async def metrics_prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def rooms(_: web.Request) -> web.Response:
        return web.json_response({"rooms": await list_rooms()})

    def authorized(request: web.Request) -> web.Response | None:
        if not settings.api_key:
            return _error(403, "FORBIDDEN", "the HTTP API is disabled: set API_KEY")
        header = request.headers.get("Authorization", "")
        expected = f"Bearer {settings.api_key}"
        if not hmac.compare_digest(header.encode(), expected.encode()):
            return _error(401, "FORBIDDEN", "missing or wrong API key")
        return None

    async def body_of(request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    async def notify(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        try:
            note = NotificationIn.model_validate(await body_of(request))
        except ValidationError as exc:
            return _error(400, "INVALID_PAYLOAD", str(exc.errors()[0]["msg"]))
        stored = Notification(
            userId=note.userId,
            type=note.type,
            message=note.message,
            studyId=note.studyId,
            data=note.data,
        )
        await api.push(stored)
        return web.json_response({"ok": True, "id": stored.id}, status=202)

    def path_id(request: web.Request, name: str) -> str | None:
        value = request.match_info[name]
        return value if 0 < len(value) <= 256 else None

    async def study_messages(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        if (study_id := path_id(request, "studyId")) is None:
            return _error(400, "INVALID_PAYLOAD", "bad study id")
        try:
            query = MessagesQuery.model_validate(dict(request.query))
            page = await history.study_messages(study_id, query.before, query.limit)
        except ValidationError as exc:
            return _error(400, "INVALID_PAYLOAD", str(exc.errors()[0]["msg"]))
        except NotFound as exc:
            return _error(404, "NOT_FOUND", exc.message)
        messages = [{**m.wire(), "readBy": page.read_by.get(m.id, [])} for m in page.messages]
        return web.json_response(
            {"studyId": study_id, "messages": messages, "hasMore": page.has_more}
        )

    async def room_history(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        if (room_id := path_id(request, "roomId")) is None:
            return _error(400, "INVALID_PAYLOAD", "bad room id")
        try:
            query = RoomHistoryQuery.model_validate(dict(request.query))
        except ValidationError as exc:
            return _error(400, "INVALID_PAYLOAD", str(exc.errors()[0]["msg"]))
        now = utcnow()
        calls = await history.room_history(room_id, query.limit, settings.chat_history)
        return web.json_response({"roomId": room_id, "calls": [c.wire(now) for c in calls]})

    async def study_event(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        study_id = request.match_info["studyId"]
        if not study_id or len(study_id) > 256:
            return _error(400, "INVALID_PAYLOAD", "bad study id")
        try:
            event = StudyEventIn.model_validate(await body_of(request))
        except ValidationError as exc:
            return _error(400, "INVALID_PAYLOAD", str(exc.errors()[0]["msg"]))
        await api.emitter.emit_group(event.event, event.data, f"study:{study_id}")
        return web.json_response({"ok": True}, status=202)

    async def close_room(request: web.Request) -> web.Response:
        if (refused := authorized(request)) is not None:
            return refused
        room_id = request.match_info["roomId"]
        if not await api.close_room(room_id, "closed-by-server"):
            return _error(404, "NOT_FOUND", "no such room")
        return web.json_response({"ok": True, "roomId": room_id})

    async def index(_: web.Request) -> web.StreamResponse:
        page = WEB_ROOT / "index.html"
        if not page.exists():
            return web.Response(
                text="<!doctype html><title>studycall</title><p>Web client not built.</p>",
                content_type="text/html",
            )
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def vendor(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = (SOCKET_IO_CLIENT / name).resolve()
        if path.parent != SOCKET_IO_CLIENT.resolve() or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def static(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        path = (WEB_ROOT / relative).resolve()
        root = WEB_ROOT.resolve()
        if root not in path.parents or "node_modules" in path.parts or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_json)
    app.router.add_get("/metrics/prometheus", metrics_prometheus)
    app.router.add_get("/rooms", rooms)
    app.router.add_post("/api/notifications", history_guard(notify))
    app.router.add_post("/api/studies/{studyId}/events", study_event)
    app.router.add_delete("/api/rooms/{roomId}", close_room)
    app.router.add_get("/api/studies/{studyId}/messages", history_guard(study_messages))
    app.router.add_get("/api/rooms/{roomId}/history", history_guard(room_history))
    app.router.add_get("/", index)
    app.router.add_get("/vendor/{name}", vendor)
    app.router.add_get("/{path:(?!socket\\.io/).+}", static)
