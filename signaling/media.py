"""This node's media: the local worker pool, for the sockets this node holds.

A client's media terminates on the node that holds its socket (a load balancer needs no
UDP stickiness beyond the socket's): every command goes to the local `sfu.WorkerPool`,
typed (`sfu.commands`), and its reply comes straight back to the caller, a `Refused`
becoming `InvalidPayload` here, once, so that it reaches the ack.

With Redis the nodes' pools talk over one pub/sub channel (`media`, under REDIS_PREFIX):
who of a room each node holds, what they publish and where its pipes listen (`sfu.pool`);
the pipes themselves are UDP between the nodes (`MEDIA_PIPE_HOST`). Signaling adds four
room notices on the same channel, for what one node decides for sockets held elsewhere:
a room that became sfu (each node seats its own sockets), a leave decided on another node
(pairing moves a socket), a room closed or back to mesh (each node closes its part once),
and a node gone (each pool drops its participants and pipes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

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
from signaling.ports import Connections, Emitter, MediaPort, Spawner
from signaling.store import Store

log = logging.getLogger(__name__)

SFU = "sfu"
BUS = "media"
"""The pub/sub channel the nodes' media share (the store prefixes it with REDIS_PREFIX)."""
MAX_MEDIA_RETRIES = 3
MEDIA_RETRY_RESET_S = 60.0
"""A connection that lasted this long since the last failure starts the count afresh."""

DATA_CHANNELS_DECLINED = (
    "data channels are not available in sfu rooms: the SFU declined the data channel "
    "(audio and video are connected)"
)
"""Said to a mesh client whose offer carried a data channel (the SFU forwards media only)."""


@dataclass(frozen=True)
class Dialect:
    """How the SFU's words reach the clients of one kind of room: video rooms (`video:`
    events, the default) or another kind that registered with `MediaRouter.speak`."""

    owns: Callable[[str], bool]
    """Whether a media room id is one of this dialect's rooms."""
    prefix: str
    """Event names are ``prefix`` + offer / answer / ice-candidate / join-room."""
    still_wanted: Callable[[str, str], Awaitable[bool]]
    replaced: Callable[[str, str, str], Awaitable[None]] | None = None
    """``(room_id, sid, peer)``, before the SFU offers ``sid`` a connection to ``peer`` in
    place of one it still holds: the client is made to close the old one (a documents'
    client keeps it otherwise, and its stale `failed` handler later drops the new one)."""

    def event(self, name: str) -> str:
        """``name``: offer, answer, ice-candidate or join-room."""
        return self.prefix + name


@dataclass(frozen=True)
class Seat:
    """How a participant takes part in its sfu room's media."""

    mesh: bool = False
    """A client that does not know the SFU: the SFU plays each of its peers."""
    offers_to_newcomers: bool = True
    offer_existing: bool = False

    @classmethod
    def fresh(cls, mesh: bool) -> Seat:
        """The seat of someone nobody will offer to on their own (a room that switched to
        sfu, a lost connection): the SFU offers to a mesh client as everyone there."""
        return cls(mesh=True, offer_existing=True) if mesh else cls()

    def command(self, room_id: str, sid: str) -> Command:
        if not self.mesh:
            return Join(room_id, sid)
        return JoinMesh(room_id, sid, self.offers_to_newcomers, self.offer_existing)


class StoreBus:
    """`sfu.pool.Bus` over the store's pub/sub: every node hears every message."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def publish(self, message: dict[str, Any]) -> None:
        await self.store.publish(BUS, orjson.dumps(message).decode())


class MediaRouter:
    def __init__(
        self,
        port: MediaPort | None,
        emitter: Emitter,
        spawner: Spawner,
        connections: Connections,
        store: Store,
        settings: Settings,
        node_id: str,
        still_wanted: Callable[[str, str], Awaitable[bool]],
        replaced: Callable[[str, str, str], Awaitable[None]] | None = None,
        call_of: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        """`still_wanted(room_id, sid)`: whether the participant still belongs to an sfu room;
        `replaced`: see `Dialect.replaced` (video rooms); `call_of(room_id)`: the room's
        current call id (None: no such room), see `close_room`."""
        self.emitter = emitter
        self.spawner = spawner
        self.connections = connections
        self.store = store
        self.settings = settings
        self.still_wanted = still_wanted
        self.call_of = call_of
        self.port = port
        self.node = node_id
        self.bus = StoreBus(store) if store.shared and self.port is not None else None
        self._seats: dict[tuple[str, str], Seat] = {}
        self._failures: dict[str, tuple[int, float]] = {}  # sid -> (in a row, last at)
        self._video = Dialect(lambda _: True, "video:", still_wanted, replaced)
        self._dialects: list[Dialect] = []
        if self.port is not None:
            self.port.on_event = self._on_event
            if self.bus is not None:
                self.port.use_bus(self.node, self.bus)

    async def start(self) -> None:
        if self.port is None:
            return
        if self.bus is not None:
            # Subscribed first: the pool's start asks the other nodes what they hold.
            await self.store.subscribe(BUS, self._on_bus)
        await self.port.start()

    @property
    def available(self) -> bool:
        return self.port is not None

    def speak(self, dialect: Dialect) -> None:
        """The SFU's offers and answers for ``dialect``'s rooms go out as its events."""
        self._dialects.append(dialect)

    def _dialect(self, room_id: str) -> Dialect:
        return next((d for d in self._dialects if d.owns(room_id)), self._video)

    def seated(self, room_id: str, sid: str) -> bool:
        """Whether this node runs ``sid``'s media in ``room_id`` (the room is sfu)."""
        return (room_id, sid) in self._seats

    async def join(self, room_id: str, sid: str, seat: Seat | None = None) -> None:
        """Seats a socket of this node in its sfu room's media."""
        seat = seat or Seat()
        self._seats[(room_id, sid)] = Seat(seat.mesh, seat.offers_to_newcomers)
        await self._call(seat.command(room_id, sid))

    async def join_all(self, room_id: str, seats: list[tuple[str, str, bool]]) -> None:
        """A room that became sfu: every ``(sid, node, mesh)``, in this order, gets a fresh
        seat on the node that holds its socket."""
        far: list[list[Any]] = []
        for sid, node, mesh in seats:
            if node == self.node:
                await self.join(room_id, sid, Seat.fresh(mesh))
            else:
                far.append([sid, mesh])
        if far:
            await self._notice({"t": "room-join", "room": room_id, "seats": far})

    async def leave(self, room_id: str, sid: str, node: str) -> None:
        """``sid`` left its sfu room; its media leaves on ``node``, which holds it."""
        if node != self.node:
            await self._notice({"t": "room-leave", "room": room_id, "sid": sid})
            return
        self._failures.pop(sid, None)
        await self._leave_here(room_id, sid)

    async def offer(self, room_id: str, sid: str, peer: str, sdp: str) -> None:
        """A mesh client's offer to ``peer``: the SFU answers as ``peer`` (`video:answer`)."""
        reply = await self._call(Offer(room_id, sid, peer, sdp))
        if not isinstance(reply, Answered):
            raise InvalidPayload("the SFU did not answer this offer")
        answer = {"type": "answer", "sdp": reply.sdp}
        dialect = self._dialect(room_id)
        await self.emitter.emit(dialect.event("answer"), {"from": peer, "answer": answer}, to=sid)
        if reply.declined:
            error = error_event(InvalidPayload(DATA_CHANNELS_DECLINED), dialect.event("offer"))
            await self.emitter.emit("error", error, to=sid)

    async def answer(self, room_id: str, sid: str, peer: str, sdp: str) -> None:
        await self._call(Answer(room_id, sid, peer, sdp))

    async def candidate(
        self, room_id: str, sid: str, peer: str, candidate: dict[str, Any] | None
    ) -> None:
        await self._call(Candidate(room_id, sid, peer, candidate))

    async def screen_share(self, room_id: str, sid: str, sharing: bool) -> None:
        await self._call(Screen(room_id, sid, sharing))

    async def close_room(self, room_id: str, call: str | None = None) -> None:
        """The room's media ends on every node, once (closed, emptied, or back to mesh).

        ``call`` is the call that ends: a node that already holds the next call of the same
        room id (opened there in the meantime) keeps it."""
        await self._close_here(room_id)
        await self._notice({"t": "room-close", "room": room_id, "call": call})

    async def node_gone(self, node: str) -> None:
        """``node`` is dead: every pool drops its participants and its pipes. This node's
        own id: it restarted under it, and the others forget what its last run held."""
        if self.port is None:
            return
        if node != self.node:
            await self.port.node_gone(node)
        await self._notice({"t": "node-gone", "dead": node})

    async def close_node(self) -> None:
        """This node stops (shutdown), root first: the other nodes drop what it held (one
        `node-gone` notice), then every room seated here closes once. The leaves that follow
        find nothing seated, so nobody is renegotiated one departure at a time."""
        if self.port is None:
            return
        await self._notice({"t": "node-gone", "dead": self.node})
        for room_id in sorted({room for room, _ in self._seats}):
            await self._close_here(room_id)

    async def _leave_here(self, room_id: str, sid: str) -> None:
        self._seats.pop((room_id, sid), None)
        if self.port is not None:
            await self.port.run(Leave(room_id, sid))  # a refusal: nothing of it ran here

    async def _close_here(self, room_id: str) -> None:
        for key in [k for k in self._seats if k[0] == room_id]:
            del self._seats[key]
        if self.port is not None:
            await self.port.run(CloseRoom(room_id))

    async def _call(self, command: Command) -> Any:
        """The one place the plane's refusals become the wire's error."""
        if self.port is None:
            raise NotFound("this server has no SFU")
        reply = await self.port.run(command)
        if isinstance(reply, Refused):
            raise InvalidPayload(reply.message)
        return reply

    # -- the other nodes ------------------------------------------------------------------

    async def _notice(self, message: dict[str, Any]) -> None:
        if self.bus is not None:
            await self.bus.publish({**message, "node": self.node})

    async def _on_bus(self, raw: str) -> None:
        """A message of another node: a room notice here, anything else for the pool."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("unreadable message on the media bus")
            return
        if not isinstance(message, dict) or message.get("node") == self.node:
            return
        if self.port is None:
            return
        kind, room = message.get("t"), message.get("room")
        if kind == "node-gone":
            dead = message.get("dead")
            if isinstance(dead, str):
                await self.port.node_gone(dead)
        elif kind == "room-join" and isinstance(room, str):
            await self._seat_here(room, message.get("seats"))
        elif kind == "room-leave" and isinstance(room, str):
            sid = message.get("sid")
            if isinstance(sid, str) and self.connections.local(sid):
                await self._leave_here(room, sid)
        elif kind == "room-close" and isinstance(room, str):
            call = message.get("call")
            current = await self.call_of(room) if call and self.call_of is not None else None
            if current in (None, call):
                await self._close_here(room)
        else:
            await self.port.on_bus(message)

    async def _seat_here(self, room_id: str, seats: Any) -> None:
        for item in seats if isinstance(seats, list) else []:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                continue
            sid, mesh = item[0], bool(item[1])
            wanted = self._dialect(room_id).still_wanted
            if not self.connections.local(sid) or not await wanted(room_id, sid):
                continue
            try:
                await self.join(room_id, sid, Seat.fresh(mesh))
            except InvalidPayload as exc:
                event = self._dialect(room_id).event("join-room")
                await self.emitter.emit("error", error_event(exc, event), to=sid)

    # -- what the plane says --------------------------------------------------------------

    async def _on_event(self, event: Event) -> None:
        room_id, sid = event.room, event.participant
        if isinstance(event, OfferToClient):
            # A renegotiation started before the room went back to mesh must not reach
            # the client after `video:mode-changed`.
            dialect = self._dialect(room_id)
            if await dialect.still_wanted(room_id, sid):
                if event.replaces and dialect.replaced is not None:
                    await dialect.replaced(room_id, sid, event.peer)
                offer = {"type": "offer", "sdp": event.sdp}
                payload = {"from": event.peer, "offer": offer}
                await self.emitter.emit(dialect.event("offer"), payload, to=sid)
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
        if seat is not None and await self._dialect(room_id).still_wanted(room_id, sid):
            # A fresh connection to everyone: the old ones went with the lost media.
            fresh = Seat(seat.mesh, seat.offers_to_newcomers, offer_existing=True)
            await self.join(room_id, sid, fresh)
