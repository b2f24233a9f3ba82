"""The SFU's side of mesh clients' connections: answer, offer, replace and drop links.

A mesh client (`sfu.mesh`) has a link per other participant, on which the SFU plays that
participant. Links are never renegotiated: a moved upload, a lost connection or a new
offer from the client is a fresh connection. This module knows rooms and links only; what
a mesh client's upload means for SFU-aware participants is the plane's (``uploaded``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection

from . import metrics
from .declined import put_back, take_out
from .errors import MediaError
from .leg import Leg
from .mesh import MeshLink, MeshParticipant, offered_kinds
from .negotiation import NegotiationError
from .room import Member, Room, mesh_view
from .source import Source

logger = logging.getLogger(__name__)

LINK_RETRIES = 3
"""Times a mesh client's lost link to one peer is offered again before the SFU gives up."""


@dataclass(frozen=True)
class MeshAnswer:
    """The SFU's answer as the peer, and the kinds of m-lines it declined in it."""

    sdp: str
    declined: tuple[str, ...] = ()


Uploaded = Callable[[Room, MeshParticipant, set[Source]], None]
"""``(room, client, new_sources)``: a mesh client's own media changed."""


class MeshLinks:
    """Every mesh client's links, for the plane that owns the rooms."""

    def __init__(
        self,
        *,
        room: Callable[[str], Room | None],
        rtc_config: Callable[[], RTCConfiguration],
        video_codec: str,
        answer_timeout_s: float,
        spawn: Callable[[Awaitable[Any]], None],
        fold: Callable[[list[Leg]], None],
        uploaded: Uploaded,
    ) -> None:
        self._room = room
        self._rtc_config = rtc_config
        self._video_codec = video_codec
        self._answer_timeout_s = answer_timeout_s
        self._spawn = spawn
        self._fold = fold
        self._uploaded = uploaded

    async def offer(
        self, room: Room, p: MeshParticipant, peer: str, offer: dict[str, Any]
    ) -> MeshAnswer:
        """The client's offer to ``peer``: answered by the SFU playing ``peer``."""
        target = room.participants.get(peer)
        if target is None or target is p:
            raise MediaError(f"{peer!r} is not in media room {room.id!r}")
        if not isinstance(offer, dict) or not isinstance(offer.get("sdp"), str):
            raise MediaError("an offer is {type: 'offer', sdp: string}")
        if offer.get("type", "offer") != "offer":
            raise MediaError("expected an offer")
        sdp = offer["sdp"]
        replaced = await self.drop(p, peer, move_upload=False)
        upload = p.upload_link() is None or (replaced is not None and replaced.upload)
        link = self._new_link(p, peer, upload)
        link.prepare(offered_kinds(sdp), self._video_codec)
        media_sdp, declined = take_out(sdp)
        try:
            answer_sdp = await link.answer_offer(media_sdp)
        except NegotiationError as exc:
            await self.drop(p, peer)
            raise MediaError(str(exc)) from None
        self._started(room, p, link, media_sdp)
        return MeshAnswer(put_back(answer_sdp, declined), tuple(d.kind for d in declined))

    async def answer(self, p: MeshParticipant, peer: str, answer: dict[str, Any]) -> None:
        """The client's answer to the SFU's offer as ``peer``."""
        link = p.links.get(peer)
        if link is None:
            raise MediaError(f"no offer from {peer!r} is waiting for an answer")
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise MediaError("an answer is {type: 'answer', sdp: string}")
        try:
            await link.apply_answer(answer["sdp"])
        except NegotiationError as exc:
            raise MediaError(str(exc)) from None
        room = self._room(p.room_id)
        if room is not None and not link.closed:
            self._started(room, p, link, answer["sdp"])

    async def greet(self, room: Room, newcomer: Member) -> None:
        """The SFU offers to every mesh client that waits for newcomers, as ``newcomer``."""
        for other in room.others(newcomer):
            if isinstance(other, MeshParticipant) and other.offers_to_newcomers:
                await self._offer_link(other, newcomer.id, other.upload_link() is None)

    async def offer_all(self, room: Room, p: MeshParticipant) -> None:
        """The SFU offers to ``p`` as every other participant of the room."""
        for other in room.others(p):
            if other.id not in p.links:
                await self._offer_link(p, other.id, p.upload_link() is None)

    def refresh(self, room: Room, publisher: Member) -> None:
        """``publisher``'s tracks changed: every established link playing it follows."""
        for other in room.others(publisher):
            if isinstance(other, MeshParticipant):
                link = other.links.get(publisher.id)
                if link is not None and link.established:
                    _attach(link, publisher)

    async def drop(
        self, p: MeshParticipant, peer: str, move_upload: bool = True
    ) -> MeshLink | None:
        """Close ``p``'s link to ``peer``; another link takes the upload if it had it."""
        link = p.links.pop(peer, None)
        if link is None:
            return None
        self._fold(link.legs())
        metrics.PEER_CONNECTIONS.labels(p.room_id).dec()
        await link.close()
        if link.upload and move_upload and not p.closed:
            await self._move_upload(p)
        return link

    def _new_link(self, p: MeshParticipant, peer: str, upload: bool) -> MeshLink:
        link = MeshLink(p, peer, RTCPeerConnection(self._rtc_config()), upload)
        p.links[peer] = link
        metrics.PEER_CONNECTIONS.labels(p.room_id).inc()
        pc = link.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not link.closed:
                self._spawn(self._link_lost(p, link))

        return link

    def _started(self, room: Room, p: MeshParticipant, link: MeshLink, remote_sdp: str) -> None:
        """A link is negotiated: the peer's media flows on it, and maybe the client's."""
        before = set(p.live)
        link.start(remote_sdp)
        target = room.participants.get(link.peer)
        if target is not None:
            _attach(link, target)
        if p.live != before:
            self.refresh(room, p)
        if p.live != before or link.upload:
            # (a moved upload may come with other payload types: pipes follow too)
            self._uploaded(room, p, p.live - before)

    async def _offer_link(self, p: MeshParticipant, peer: str, upload: bool) -> None:
        """A fresh link offered by the SFU as ``peer``, sent once more if unanswered.

        One that replaces a live link goes out as ``"reoffer"``: the client still holds its
        connection to ``peer``, and the documents' clients keep it (a new one for every
        offer), so signaling has them close it first (see `OfferToClient.replaces`)."""
        replaced = await self.drop(p, peer, move_upload=False)
        kind = "offer" if replaced is None else "reoffer"
        link = self._new_link(p, peer, upload)
        link.prepare(["audio", "video"], self._video_codec)
        resent = False

        def unanswered() -> None:
            nonlocal resent
            if link.closed or link.established:
                return
            if not resent:
                resent = True
                self._spawn(p.sink(peer, "offer", {"type": "offer", "sdp": sdp}))
                link._timer = asyncio.get_running_loop().call_later(
                    self._answer_timeout_s, unanswered
                )
            else:
                self._spawn(self.drop(p, peer))

        sdp = await link.make_offer(self._answer_timeout_s, unanswered)
        await p.sink(peer, kind, {"type": "offer", "sdp": sdp})

    async def _move_upload(self, p: MeshParticipant) -> None:
        """The link carrying the client's own media is gone: another link takes it over
        (a fresh offer as that peer, now accepting the client's microphone and camera)."""
        for peer, link in list(p.links.items()):
            if link.established and not link.closed:
                logger.info("sfu: %s uploads on its link to %s now", p.id, peer)
                await self._offer_link(p, peer, upload=True)
                return

    async def _link_lost(self, p: MeshParticipant, link: MeshLink) -> None:
        """The client closed (or lost) its connection to ``link.peer``: offer it again,
        a few times, while both are still in the room."""
        if p.links.get(link.peer) is not link:
            return
        await self.drop(p, link.peer, move_upload=False)
        room = self._room(p.room_id)
        tries = p.retries.get(link.peer, 0)
        if room is None or p.closed or link.peer not in room.participants or tries >= LINK_RETRIES:
            if link.upload:
                await self._move_upload(p)
            return
        p.retries[link.peer] = tries + 1
        await asyncio.sleep(0.5 * 2**tries)
        if not p.closed and link.peer in room.participants and link.peer not in p.links:
            await self._offer_link(p, link.peer, link.upload or p.upload_link() is None)


def _attach(link: MeshLink, publisher: Member) -> None:
    for kind, source in mesh_view(publisher).items():
        link.attach(kind, source)
