"""Mesh clients: the SFU plays every other participant on its own connection.

A client that does not know the SFU (the documents' clients) keeps one connection per
participant, offers to those it finds in the room and answers those who join later. For
such a client the SFU answers as that participant (or offers as a new joiner), and sends
that participant's audio and video on the connection, under the participant's stream id.
The client's own microphone and camera are received on one of its connections only, its
*upload* link; every other link is answered so that the browser sends nothing on it.

A link is never renegotiated: any change (the upload moves, a connection was lost) is a
fresh connection offered by the SFU, which clients written from the documents handle
(they create a new `RTCPeerConnection` for every offer). A publisher's screen share
replaces its camera on the video m-line, as `replaceTrack` does in the documents.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from . import _aiortc
from .answers import answer_problem
from .leg import Leg
from .negotiation import NegotiationError, clamp_directions, describe, ssrcs_by_mid
from .participant import Publication, Subscription, codec_preferences
from .source import Source, SourceConfig
from .transport import MediaTransport

logger = logging.getLogger(__name__)

MediaKinds = ("audio", "video")

MeshSink = Callable[[str, str, dict[str, Any] | None], Awaitable[None]]
"""``sink(peer, kind, payload)``: what the SFU, playing ``peer``, sends the client (kind
"offer", or "reoffer" for a connection in place of one the client still holds)."""


def offered_kinds(sdp: str) -> list[str]:
    """The kind of every m-line of a description, in order ('audio', 'video', 'application')."""
    return [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]


class MeshLink:
    """One connection of a mesh client, on which the SFU plays ``peer``."""

    def __init__(
        self,
        owner: MeshParticipant,
        peer: str,
        pc: RTCPeerConnection,
        upload: bool,
    ) -> None:
        self.owner = owner
        self.peer = peer
        self.pc = pc
        self.upload = upload
        """The owner's microphone and camera are received on this link."""
        self.transport: MediaTransport | None = None
        self.subscriptions: dict[str, Subscription] = {}
        """'audio' | 'video' -> the m-line carrying the peer's media to the owner."""
        self.publications: list[Publication] = []
        self.established = False
        self.closed = False
        self.lock = asyncio.Lock()
        self._offer_sdp: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def _add(self, kind: str, upload: bool, video_codec: str) -> None:
        direction = "sendrecv" if upload else "sendonly"
        transceiver = self.pc.addTransceiver(kind, direction=direction)
        _aiortc.take_over(transceiver)
        transceiver.setCodecPreferences(codec_preferences(kind, video_codec))
        _aiortc.set_stream_id(transceiver.sender, self.peer)
        if self.transport is None:
            self.transport = MediaTransport(transceiver.receiver.transport, _aiortc.cname(self.pc))
        ssrc, rtx_ssrc = _aiortc.sender_ssrcs(transceiver.sender)
        leg = Leg(kind, self.transport, ssrc, rtx_ssrc)
        self.transport.add_leg(leg)
        if kind not in self.subscriptions:
            self.subscriptions[kind] = Subscription(transceiver, leg)

    def prepare(self, kinds: list[str], video_codec: str) -> None:
        """One transceiver per m-line, in order (aiortc pairs them with an offer's)."""
        uploading: set[str] = set()
        for kind in kinds:
            if kind not in MediaKinds:
                continue
            upload = self.upload and kind not in uploading
            uploading.add(kind)
            self._add(kind, upload, video_codec)

    async def answer_offer(self, offer_sdp: str) -> str:
        """The client's offer to ``peer``, answered as ``peer``."""
        async with self.lock:
            try:
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=offer_sdp, type="offer")
                )
                answer = await self.pc.createAnswer()
                await self.pc.setLocalDescription(answer)
            except Exception as exc:
                logger.info("sfu: offer of %s refused (%s)", self.owner.id, type(exc).__name__)
                raise NegotiationError(
                    "the offer is not a session description the SFU can answer"
                ) from None
            self.established = True
            return str(self.pc.localDescription.sdp)

    async def make_offer(self, answer_timeout_s: float, on_timeout: Callable[[], None]) -> str:
        async with self.lock:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._offer_sdp = str(self.pc.localDescription.sdp)
        if answer_timeout_s > 0:
            self._timer = asyncio.get_running_loop().call_later(answer_timeout_s, on_timeout)
        return self._offer_sdp

    async def apply_answer(self, answer_sdp: str) -> None:
        async with self.lock:
            if self.closed:
                return
            offer = self._offer_sdp
            if offer is None or self.established or self.pc.signalingState != "have-local-offer":
                raise NegotiationError(f"no offer from {self.peer} is waiting for an answer")
            problem = answer_problem(answer_sdp, offer)
            if problem is not None:
                raise NegotiationError(problem)
            try:
                await self.pc.setRemoteDescription(
                    RTCSessionDescription(sdp=clamp_directions(answer_sdp, offer), type="answer")
                )
            except Exception as exc:
                logger.info("sfu: answer of %s refused (%s)", self.owner.id, type(exc).__name__)
                raise NegotiationError(describe(exc)) from None
            self.established = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def start(self, remote_sdp: str) -> None:
        """Once negotiated: legs take their codecs, the owner's upload its sources."""
        assert self.transport is not None
        for sub in self.subscriptions.values():
            if sub.sending():
                sub.configure()
                sub.leg.activate()
        if not self.upload:
            return
        ssrcs = ssrcs_by_mid(remote_sdp)
        for kind in MediaKinds:
            found = self.subscriptions.get(kind)
            if found is None or found.transceiver.currentDirection not in ("sendrecv", "recvonly"):
                continue
            sub = found
            source = self.owner.source(kind, self.transport)
            publication = Publication(kind, sub.transceiver, source)
            publication.configure(
                self.transport, ssrcs.get(sub.transceiver.mid or "", (None, None))
            )
            self.publications.append(publication)

    def attach(self, kind: str, source: Source | None) -> None:
        """The peer's ``kind`` is forwarded from ``source`` now (None: nothing)."""
        sub = self.subscriptions.get(kind)
        if sub is None:
            return
        if source is None:
            sub.leg.detach()
        elif sub.leg.source is not source:
            sub.leg.attach(source)

    def legs(self) -> list[Leg]:
        return [s.leg for s in self.subscriptions.values()]

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for sub in self.subscriptions.values():
            sub.leg.deactivate()
            sub.leg.detach()
        if self.transport is not None:
            for publication in self.publications:
                self.transport.remove_source(publication.source)
            self.transport.close()
        async with self.lock:
            await _aiortc.close_connection(self.pc)


class MeshParticipant:
    """A client that does not know the SFU: one link per other participant."""

    kind = "mesh"

    def __init__(
        self,
        room_id: str,
        participant_id: str,
        sink: MeshSink,
        config: SourceConfig,
        offers_to_newcomers: bool,
    ) -> None:
        self.room_id = room_id
        self.id = participant_id
        self.sink = sink
        self.config = config
        self.offers_to_newcomers = offers_to_newcomers
        """Whether the SFU offers to this client as each newcomer (the CoUp flow: only the
        joiner offers), or the client itself offers to newcomers (the guide's flow)."""
        self.links: dict[str, MeshLink] = {}
        self.own: dict[str, Source] = {}
        """The microphone and camera this client uploads (they outlive any one link)."""
        self.closed = False
        """Released by the plane (or on its way out): no link is offered or moved for it."""
        self._released = False
        self.retries: dict[str, int] = {}

    @property
    def live(self) -> set[Source]:
        """Own sources forwarded to the others: once uploaded, for as long as the client
        stays (while its upload moves to another link, the others keep their m-lines)."""
        return set(self.own.values())

    def connections(self) -> int:
        return len(self.links)

    def upload_link(self) -> MeshLink | None:
        return next((link for link in self.links.values() if link.upload and not link.closed), None)

    def source(self, kind: str, transport: MediaTransport) -> Source:
        """This client's ``kind`` source, now received on ``transport``."""
        source = self.own.get(kind)
        if source is None:
            source = self.own[kind] = Source(kind, self.id, self.config, transport)
        else:
            source.moved(transport)  # another browser connection: a new stream, same legs
        return source

    def sources(self) -> list[Source]:
        return list(self.own.values())

    def legs(self) -> list[Leg]:
        return [leg for link in self.links.values() for leg in link.legs()]

    async def drop(self, peer: str) -> MeshLink | None:
        link = self.links.pop(peer, None)
        if link is not None:
            await link.close()
        return link

    async def close(self) -> None:
        """Closes every link and source once (the plane marks it ``closed`` first)."""
        if self._released:
            return
        self._released = True
        self.closed = True
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        for source in self.own.values():
            source.close()


__all__ = ["MeshLink", "MeshParticipant", "MeshSink", "offered_kinds"]
