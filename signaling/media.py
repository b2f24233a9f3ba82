"""Routes an sfu room's media signals to the one node whose SFU carries the room.

Each sfu room's media runs on a single node (`VideoRoom.mediaNode`): the media workers
there hold every participant's peer connections, whichever node their socket is on.
Commands for a remote node travel over the store's pub/sub; what the SFU says to a client
(an offer, an answer as a peer) reaches it through the Socket.IO manager, which crosses
nodes by itself. Every refusal from the plane becomes `InvalidPayload` here, once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sfu.commands import (
    Answer,
    Answered,
    Candidate,
    CloseRoom,
    Command,
    Event,
    Join,
    JoinMesh,
    Leave,
    MediaLost,
    Offer,
    OfferToClient,
    Refused,
    Screen,
)
from signaling.config import Settings
from signaling.errors import InvalidPayload, NotFound, error_event
from signaling.ports import Emitter, MediaPort, Spawner
from signaling.store import Store

log = logging.getLogger(__name__)

SFU = "sfu"
MAX_MEDIA_RETRIES = 3
MEDIA_RETRY_RESET_S = 60.0
"""A connection that lasted this long since the last failure starts the count afresh."""

DATA_CHANNELS_DECLINED = (
    "data channels are not available in sfu rooms: the SFU declined the data channel "
    "(audio and video are connected)"
)
"""Said to a mesh client whose offer carried a data channel (the SFU forwards media only)."""

Op = Literal["join", "leave", "offer", "answer", "candidate", "screen", "close"]
EVENT_OF_OP = {"offer": "video:offer", "answer": "video:answer", "candidate": "video:ice-candidate"}


@dataclass(frozen=True)
class Seat:
    """How a participant takes part in its sfu room's media."""

    mesh: bool = False
    """A client that does not know the SFU: the SFU plays each of its peers."""
    offers_to_newcomers: bool = True
    offer_existing: bool = False

    def command(self, room_id: str, sid: str) -> Command:
        if not self.mesh:
            return Join(room_id, sid)
        return JoinMesh(room_id, sid, self.offers_to_newcomers, self.offer_existing)

    def wire(self) -> dict[str, bool]:
        return {
            "mesh": self.mesh,
            "newcomers": self.offers_to_newcomers,
            "existing": self.offer_existing,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Seat:
        if not isinstance(data, dict):
            return cls()
        return cls(
            bool(data.get("mesh")), bool(data.get("newcomers", True)), bool(data.get("existing"))
        )


class MediaRouter:
    def __init__(
        self,
        port: MediaPort | None,
        emitter: Emitter,
        spawner: Spawner,
        store: Store,
        settings: Settings,
        node_id: str,
        still_wanted: Callable[[str, str], Awaitable[bool]],
    ) -> None:
        """`still_wanted(room_id, sid)`: whether the participant still belongs to an sfu room."""
        self.emitter = emitter
        self.spawner = spawner
        self.store = store
        self.settings = settings
        self.node_id = node_id
        self.still_wanted = still_wanted
        self.port = port
        self.channel = f"media:{node_id}"
        self._seats: dict[tuple[str, str], Seat] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # sid -> (in a row, last at)
        if self.port is not None:
            self.port.on_event = self._on_event

    async def start(self) -> None:
        if self.port is not None:
            await self.port.start()
            await self.store.subscribe(self.channel, self._on_command)

    @property
    def available(self) -> bool:
        return self.port is not None

    async def join(self, node: str, room_id: str, sid: str, seat: Seat | None = None) -> None:
        await self._route(node, "join", room_id, sid, (seat or Seat()).wire())

    async def leave(self, node: str, room_id: str, sid: str) -> None:
        self._failures.pop(sid, None)
        await self._route(node, "leave", room_id, sid)

    async def offer(self, node: str, room_id: str, sid: str, peer: str, sdp: str) -> None:
        """A mesh client's offer to ``peer``: the SFU answers as ``peer`` (`video:answer`)."""
        await self._route(node, "offer", room_id, sid, {"peer": peer, "sdp": sdp})

    async def answer(self, node: str, room_id: str, sid: str, peer: str, sdp: str) -> None:
        await self._route(node, "answer", room_id, sid, {"peer": peer, "sdp": sdp})

    async def candidate(
        self, node: str, room_id: str, sid: str, peer: str, candidate: dict[str, Any] | None
    ) -> None:
        await self._route(node, "candidate", room_id, sid, {"peer": peer, "candidate": candidate})

    async def screen_share(self, node: str, room_id: str, sid: str, sharing: bool) -> None:
        await self._route(node, "screen", room_id, sid, sharing)

    async def close_room(self, node: str, room_id: str) -> None:
        await self._route(node, "close", room_id, "")

    async def _route(self, node: str, op: Op, room_id: str, sid: str, data: Any = None) -> None:
        if node == self.node_id:
            await self._run(op, room_id, sid, data)
            return
        message = orjson.dumps({"op": op, "room": room_id, "sid": sid, "data": data}).decode()
        await self.store.publish(f"media:{node}", message)

    async def _on_command(self, message: str) -> None:
        command = orjson.loads(message)
        sid = command["sid"]
        try:
            await self._run(command["op"], command["room"], sid, command["data"])
        except InvalidPayload as exc:
            event = EVENT_OF_OP.get(command["op"], "video:join-room")
            await self.emitter.emit("error", error_event(exc, event), to=sid)
        except Exception:
            log.exception("media command %s failed", command["op"])

    async def _run(self, op: Op, room_id: str, sid: str, data: Any) -> None:
        if self.port is None:
            raise NotFound("this server has no SFU")
        if op == "join":
            seat = Seat.from_wire(data)
            self._seats[(room_id, sid)] = Seat(seat.mesh, seat.offers_to_newcomers)
            await self._call(seat.command(room_id, sid))
        elif op == "leave":
            self._seats.pop((room_id, sid), None)
            await self._call(Leave(room_id, sid))
        elif op == "offer":
            await self._offer(room_id, sid, str(data["peer"]), str(data["sdp"]))
        elif op == "answer":
            await self._call(Answer(room_id, sid, str(data["peer"]), str(data["sdp"])))
        elif op == "candidate":
            await self._call(Candidate(room_id, sid, str(data["peer"]), data["candidate"]))
        elif op == "screen":
            await self._call(Screen(room_id, sid, bool(data)))
        elif op == "close":
            for key in [k for k in self._seats if k[0] == room_id]:
                del self._seats[key]
            await self._call(CloseRoom(room_id))

    async def _call(self, command: Command) -> Any:
        assert self.port is not None
        reply = await self.port.run(command)
        if isinstance(reply, Refused):
            raise InvalidPayload(reply.message)
        return reply

    async def _offer(self, room_id: str, sid: str, peer: str, sdp: str) -> None:
        reply = await self._call(Offer(room_id, sid, peer, sdp))
        if not isinstance(reply, Answered):
            raise InvalidPayload("the SFU did not answer this offer")
        answer = {"type": "answer", "sdp": reply.sdp}
        await self.emitter.emit("video:answer", {"from": peer, "answer": answer}, to=sid)
        if reply.declined:
            error = error_event(InvalidPayload(DATA_CHANNELS_DECLINED), "video:offer")
            await self.emitter.emit("error", error, to=sid)

    # -- what the plane says --------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        room_id, sid = event.room, event.participant
        if isinstance(event, OfferToClient):
            # A renegotiation started before the room went back to mesh must not reach
            # the client after `video:mode-changed`.
            if await self.still_wanted(room_id, sid):
                offer = {"type": "offer", "sdp": event.sdp}
                await self.emitter.emit("video:offer", {"from": event.peer, "offer": offer}, to=sid)
        elif isinstance(event, MediaLost):
            await self._lost(room_id, sid, event.reason)

    async def _lost(self, room_id: str, sid: str, reason: str) -> None:
        if reason == "unanswered":
            # Re-offered once already: the client is not answering. Its signaling stays;
            # joining the room again gets it a fresh connection.
            timeout = self.settings.sfu_answer_timeout_s
            error = InvalidPayload(
                f"no answer to the SFU's offer within {timeout:g} s: media dropped; "
                "join the room again to retry"
            )
            await self.emitter.emit("error", error_event(error, "video:answer"), to=sid)
            return
        # The connection failed (ICE/DTLS), the client closed it while staying in the room,
        # or its media worker died: offer a fresh one, a few times, backing off.
        now = time.monotonic()
        failures, last = self._failures.get(sid, (0, now))
        failures = 1 if now - last > MEDIA_RETRY_RESET_S else failures + 1
        self._failures[sid] = (failures, now)
        if failures <= MAX_MEDIA_RETRIES:
            delay = self.settings.sfu_retry_backoff_s * 2 ** (failures - 1)
            self.spawner.spawn(self._rejoin(room_id, sid, delay), f"sfu-rejoin-{sid}")

    async def _rejoin(self, room_id: str, sid: str, delay: float) -> None:
        await asyncio.sleep(delay)  # the back-off itself
        seat = self._seats.get((room_id, sid))
        if seat is not None and await self.still_wanted(room_id, sid):
            # A fresh connection to everyone: the old ones went with the lost media.
            fresh = Seat(seat.mesh, seat.offers_to_newcomers, offer_existing=True)
            await self._run("join", room_id, sid, fresh.wire())
