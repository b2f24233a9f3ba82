"""The media port: how signaling drives a media plane, wherever it runs.

`MediaPort.run` takes one `sfu.commands.Command` and returns its reply; the plane's own
initiatives (an offer to a client, a connection let go) come back as events through the
callback the port was made with. `LocalMedia` runs the plane in this process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .commands import (
    Answer,
    Answered,
    Candidate,
    CloseRoom,
    Command,
    Done,
    Event,
    Join,
    JoinMesh,
    Leave,
    MediaLost,
    Offer,
    OfferToClient,
    PipeTo,
    Published,
    Refused,
    RemoteJoin,
    RemoteLeave,
    RemoteTracks,
    Reply,
    Screen,
    Unpipe,
)
from .errors import MediaError
from .participant import MediaLoss
from .pipes import PipedSource
from .plane import MediaPlane

EventSink = Callable[[Event], Awaitable[None]]


class MediaPort(Protocol):
    async def run(self, command: Command) -> Reply:
        """Carries out one command; a client error is a `Refused` reply, never raised."""

    def stats(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class LocalMedia:
    """A media plane in this process."""

    def __init__(self, plane: MediaPlane, on_event: EventSink) -> None:
        self.plane = plane
        self.on_event = on_event
        plane.on_published = self._published

    async def _published(self, room: str, who: str, tracks: list[PipedSource]) -> None:
        await self.on_event(Published(room, who, [t.wire() for t in tracks]))

    async def run(self, command: Command) -> Reply:
        try:
            return await self._run(command)
        except MediaError as exc:
            return Refused(str(exc))

    async def _run(self, command: Command) -> Reply:
        plane, room, who = self.plane, command.room, command.participant
        match command:
            case Join():
                await plane.join(room, who, self._sink(room, who), self._lost(room, who))
            case JoinMesh(offers_to_newcomers=newcomers, offer_existing=existing):
                await plane.join_mesh(
                    room,
                    who,
                    self._mesh_sink(room, who),
                    offers_to_newcomers=newcomers,
                    offer_existing=existing,
                )
            case Leave():
                await plane.leave(room, who)
            case Offer(peer=peer, sdp=sdp):
                answer = await plane.offer(room, who, peer, {"type": "offer", "sdp": sdp})
                return Answered(answer.sdp, list(answer.declined))
            case Answer(peer=peer, sdp=sdp):
                await plane.answer(room, who, {"type": "answer", "sdp": sdp}, peer)
            case Candidate(peer=peer, candidate=candidate):
                await plane.candidate(room, who, candidate, peer)
            case Screen(sharing=sharing):
                await plane.screen_share(room, who, sharing)
            case CloseRoom():
                await plane.close_room(room)
            case RemoteJoin(greet=greet):
                await plane.remote_join(room, who, greet)
            case RemoteTracks(origin=origin, tracks=tracks):
                described = [PipedSource.from_wire(t) for t in tracks]
                await plane.remote_tracks(room, who, origin, described)
            case RemoteLeave():
                await plane.leave(room, who)
            case PipeTo(address=address):
                plane.pipe_to(room, who, address)
            case Unpipe(address=address):
                plane.unpipe(room, who, address)
            case _:
                return Refused(f"unknown command {command.name}")
        return Done()

    def _sink(self, room: str, who: str) -> Callable[[str, dict[str, Any] | None], Awaitable[None]]:
        async def sink(kind: str, payload: dict[str, Any] | None) -> None:
            if kind == "offer" and payload is not None:
                await self.on_event(OfferToClient(room, who, "sfu", payload["sdp"]))

        return sink

    def _mesh_sink(
        self, room: str, who: str
    ) -> Callable[[str, str, dict[str, Any] | None], Awaitable[None]]:
        async def sink(peer: str, kind: str, payload: dict[str, Any] | None) -> None:
            if kind in ("offer", "reoffer") and payload is not None:
                replaces = kind == "reoffer"
                await self.on_event(OfferToClient(room, who, peer, payload["sdp"], replaces))

        return sink

    def _lost(self, room: str, who: str) -> Callable[[MediaLoss], Awaitable[None]]:
        async def lost(reason: MediaLoss) -> None:
            await self.on_event(MediaLost(room, who, reason))

        return lost

    def stats(self) -> dict[str, Any]:
        return self.plane.stats()

    async def close(self) -> None:
        await self.plane.close()
