"""Routes an sfu room's media signals to the one node whose SFU carries the room.

Each sfu room's media runs on a single node (`VideoRoom.mediaNode`): the plane there holds every
participant's peer connection, whichever node their socket is on. Commands for a remote plane
travel over the store's pub/sub; the plane's offers and candidates reach the client through the
Socket.IO manager, which crosses nodes by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from signaling.errors import InvalidPayload, NotFound, error_event
from signaling.hub import Hub

log = logging.getLogger(__name__)

SFU = "sfu"
MAX_MEDIA_RETRIES = 3
MEDIA_RETRY_RESET_S = 60.0
"""A connection that lasted this long since the last failure starts the count afresh."""


class MediaRouter:
    def __init__(self, hub: Hub, still_wanted: Callable[[str, str], Awaitable[bool]]) -> None:
        """`still_wanted(room_id, sid)`: whether the participant still belongs to an sfu room."""
        self.hub = hub
        self.still_wanted = still_wanted
        self.plane = hub.media
        self.channel = f"media:{hub.node_id}"
        self._failures: dict[str, tuple[int, float]] = {}  # sid -> (in a row, last at)
        hub.on_start_hooks.append(self.start)

    async def start(self) -> None:
        if self.plane is not None:
            await self.hub.store.subscribe(self.channel, self._on_command)

    @property
    def available(self) -> bool:
        return self.plane is not None

    async def join(self, node: str, room_id: str, sid: str) -> None:
        await self._route(node, "join", room_id, sid)

    async def leave(self, node: str, room_id: str, sid: str) -> None:
        self._failures.pop(sid, None)
        await self._route(node, "leave", room_id, sid)

    async def answer(self, node: str, room_id: str, sid: str, answer: dict[str, Any]) -> None:
        await self._route(node, "answer", room_id, sid, answer)

    async def candidate(
        self, node: str, room_id: str, sid: str, candidate: dict[str, Any] | None
    ) -> None:
        await self._route(node, "candidate", room_id, sid, candidate)

    async def screen_share(self, node: str, room_id: str, sid: str, sharing: bool) -> None:
        await self._route(node, "screen", room_id, sid, sharing)

    async def close_room(self, node: str, room_id: str) -> None:
        await self._route(node, "close", room_id, "")

    async def _route(self, node: str, op: str, room_id: str, sid: str, data: Any = None) -> None:
        if node == self.hub.node_id:
            await self._run(op, room_id, sid, data)
            return
        message = orjson.dumps({"op": op, "room": room_id, "sid": sid, "data": data}).decode()
        await self.hub.store.publish(f"media:{node}", message)

    async def _on_command(self, message: str) -> None:
        command = orjson.loads(message)
        sid = command["sid"]
        try:
            await self._run(command["op"], command["room"], sid, command["data"])
        except InvalidPayload as exc:
            event = "video:answer" if command["op"] == "answer" else "video:ice-candidate"
            await self.hub.emit("error", error_event(exc, event), to=sid)
        except Exception:
            log.exception("media command %s failed", command["op"])

    async def _run(self, op: str, room_id: str, sid: str, data: Any) -> None:
        plane = self.plane
        if plane is None:
            raise NotFound("this server has no SFU")
        from sfu import MediaError

        try:
            if op == "join":
                await self._join(room_id, sid)
            elif op == "leave":
                await plane.leave(room_id, sid)
            elif op == "answer":
                await plane.answer(room_id, sid, data)
            elif op == "candidate":
                await plane.candidate(room_id, sid, data)
            elif op == "screen":
                await plane.screen_share(room_id, sid, bool(data))
            elif op == "close":
                await plane.close_room(room_id)
        except MediaError as exc:
            raise InvalidPayload(str(exc)) from None

    async def _join(self, room_id: str, sid: str) -> None:
        assert self.plane is not None
        hub = self.hub

        async def sink(kind: str, payload: dict[str, Any] | None) -> None:
            if kind == "offer":
                # A renegotiation started before the room went back to mesh must not reach
                # the client after `video:mode-changed`.
                if await self.still_wanted(room_id, sid):
                    await hub.emit("video:offer", {"from": SFU, "offer": payload}, to=sid)
            elif kind == "ice-candidate":
                await hub.emit("video:ice-candidate", {"from": SFU, "candidate": payload}, to=sid)

        async def on_failed(reason: str) -> None:
            if reason == "unanswered":
                # Re-offered once already: the client is not answering. Its signaling stays;
                # joining the room again gets it a fresh connection.
                timeout = hub.settings.sfu_answer_timeout_s
                error = InvalidPayload(
                    f"no answer to the SFU's offer within {timeout:g} s: media dropped; "
                    "join the room again to retry"
                )
                await hub.emit("error", error_event(error, "video:answer"), to=sid)
                return
            # The connection failed (ICE/DTLS) or the client closed it while staying in the
            # room: offer a fresh one, a few times, backing off.
            now = time.monotonic()
            failures, last = self._failures.get(sid, (0, now))
            failures = 1 if now - last > MEDIA_RETRY_RESET_S else failures + 1
            self._failures[sid] = (failures, now)
            if failures <= MAX_MEDIA_RETRIES:
                delay = hub.settings.sfu_retry_backoff_s * 2 ** (failures - 1)
                hub.spawn(self._rejoin(room_id, sid, delay), f"sfu-rejoin-{sid}")

        await self.plane.join(room_id, sid, sink, on_failed)

    async def _rejoin(self, room_id: str, sid: str, delay: float) -> None:
        await asyncio.sleep(delay)  # the back-off itself
        if await self.still_wanted(room_id, sid):
            await self._join(room_id, sid)
