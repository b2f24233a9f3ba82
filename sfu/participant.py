"""One participant of a media room: its connection, what it publishes, what it receives.

The participant owns its `RTCPeerConnection` (aiortc: ICE, DTLS, SDP, transceivers), the
`MediaTransport` that carries its RTP/RTCP, the `Negotiator` of its offers, one
`Publication` per track it sends (microphone, camera, screen) and one `Subscription` per
m-line the SFU sends on. Closing it closes all of these once, in that order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from . import _aiortc
from .leg import Leg
from .negotiation import Negotiator
from .rtp import URI_AUDIO_LEVEL, URI_MID
from .source import Codec, Source, SourceConfig
from .transport import MediaTransport

SignalSink = Callable[[str, dict[str, Any] | None], Awaitable[None]]
MediaLoss = Literal["failed", "closed", "unanswered"]
"""Why the plane let a participant's connection go: ICE/DTLS failed, the client closed it,
or the client left the SFU's offer unanswered (after one re-offer)."""
FailedCallback = Callable[[MediaLoss], Awaitable[None]]


def codec_preferences(kind: str, video_codec: str) -> list[Any]:
    """Opus for audio, the configured video codec plus RTX: every leg of a room agrees."""
    caps = RTCRtpSender.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in caps if c.mimeType.lower() == "audio/opus"]
    wanted = f"video/{video_codec}".lower()
    return [c for c in caps if c.mimeType.lower() in (wanted, "video/rtx")]


class Publication:
    """A receiving m-line of the participant's own (mic, camera or screen) and its source."""

    def __init__(self, key: str, transceiver: RTCRtpTransceiver, source: Source) -> None:
        self.key = key
        self.transceiver = transceiver
        self.source = source

    def sending(self) -> bool:
        """The participant's answer says it sends on this m-line."""
        return self.transceiver.currentDirection in ("recvonly", "sendrecv")

    def configure(self, transport: MediaTransport, ssrcs: tuple[int | None, int | None]) -> None:
        """Reads the negotiated codecs and extension ids into the source; routes its SSRCs."""
        codecs, extensions = _aiortc.negotiated(self.transceiver)
        media: dict[int, Codec] = {}
        rtx: dict[int, int] = {}
        for codec in codecs:
            name = codec.mimeType.split("/")[-1].upper()
            if name == "RTX":
                apt = codec.parameters.get("apt")
                if isinstance(apt, int):
                    rtx[codec.payloadType] = apt
            else:
                media[codec.payloadType] = Codec(name, codec.clockRate)
        ids = {ext.uri: ext.id for ext in extensions}
        self.source.configure(media, rtx, ids.get(URI_AUDIO_LEVEL))
        if URI_MID in ids:
            transport.mid_extension_id = ids[URI_MID]
        assert self.transceiver.mid is not None
        transport.add_source(self.source, self.transceiver.mid, ssrcs)


class Subscription:
    """A sending m-line on the participant's connection and the leg that fills it."""

    def __init__(self, transceiver: RTCRtpTransceiver, leg: Leg) -> None:
        self.transceiver = transceiver
        self.leg = leg
        self.reusable = False
        """Recycled as inactive and confirmed so by an answer: may carry another source."""

    def sending(self) -> bool:
        return self.transceiver.currentDirection in ("sendonly", "sendrecv")

    def configure(self) -> None:
        codecs, extensions = _aiortc.negotiated(self.transceiver)
        self.leg.configure(self.transceiver.mid or "", codecs, extensions)


class Participant:
    """Everything the SFU holds for one SFU-aware client in one room: one connection."""

    kind = "sfu"

    def __init__(
        self,
        room_id: str,
        participant_id: str,
        pc: RTCPeerConnection,
        sink: SignalSink,
        on_failed: FailedCallback | None,
        answer_timeout_s: float,
        on_unanswered: Callable[[], Awaitable[None]],
    ) -> None:
        self.room_id = room_id
        self.id = participant_id
        self.pc = pc
        self.sink = sink
        self.on_failed = on_failed
        self.closed = False
        """Released by the plane (or on its way out): nothing new is done for it."""
        self._released = False
        self.transport: MediaTransport | None = None
        self.negotiator = Negotiator(pc, self._send_offer, answer_timeout_s, on_unanswered)
        self.publications: dict[str, Publication] = {}
        """'audio' | 'video' | 'screen' -> the m-line this participant publishes on."""
        self.screen_transceiver: RTCRtpTransceiver | None = None
        self.live: set[Source] = set()
        """Sources forwarded to the others (the answer showed they are sent)."""
        self.subscriptions: dict[Source, Subscription] = {}
        self.free: list[Subscription] = []

    async def _send_offer(self, offer: dict[str, Any]) -> None:
        await self.sink("offer", offer)

    def add_publication(
        self, key: str, video_codec: str, config: SourceConfig, reuse: RTCRtpTransceiver | None
    ) -> Publication:
        """A recvonly m-line (new, or the old screen m-line again) and a fresh source on it."""
        kind = "audio" if key == "audio" else "video"
        if reuse is None:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            _aiortc.take_over(transceiver)
            transceiver.setCodecPreferences(codec_preferences(kind, video_codec))
        else:
            transceiver = reuse
            transceiver.direction = "recvonly"
        if self.transport is None:
            dtls = transceiver.receiver.transport
            self.transport = MediaTransport(dtls, _aiortc.cname(self.pc))
        stream_id = f"{self.id}:screen" if key == "screen" else self.id
        source = Source(kind, stream_id, config, self.transport)
        publication = Publication(key, transceiver, source)
        self.publications[key] = publication
        return publication

    def subscribe(self, source: Source, video_codec: str) -> Subscription:
        """A sending m-line for ``source``: a recycled one of its kind, or a new one."""
        existing = self.subscriptions.get(source)
        if existing is not None:
            return existing
        assert self.transport is not None
        sub = next((s for s in self.free if s.reusable and s.leg.kind == source.kind), None)
        if sub is not None:
            self.free.remove(sub)
            sub.transceiver.direction = "sendonly"
            sub.reusable = False
        else:
            transceiver = self.pc.addTransceiver(source.kind, direction="sendonly")
            _aiortc.take_over(transceiver)
            transceiver.setCodecPreferences(codec_preferences(source.kind, video_codec))
            ssrc, rtx_ssrc = _aiortc.sender_ssrcs(transceiver.sender)
            leg = Leg(source.kind, self.transport, ssrc, rtx_ssrc)
            self.transport.add_leg(leg)
            sub = Subscription(transceiver, leg)
        _aiortc.set_stream_id(sub.transceiver.sender, source.stream_id)
        sub.leg.deactivate()
        sub.leg.attach(source)
        self.subscriptions[source] = sub
        return sub

    def unsubscribe(self, source: Source) -> bool:
        """Recycles the m-line of ``source`` as inactive (aiortc has no removeTrack)."""
        sub = self.subscriptions.pop(source, None)
        if sub is None:
            return False
        sub.leg.deactivate()
        sub.leg.detach()
        sub.transceiver.direction = "inactive"
        sub.reusable = False  # only once an answer confirmed "inactive"
        self.free.append(sub)
        return True

    def answered(self) -> None:
        """After an answer: legs the answer accepted start; recycled m-lines become free."""
        for sub in self.subscriptions.values():
            if sub.sending():
                sub.configure()
                sub.leg.activate()
        for sub in self.free:
            if sub.transceiver.currentDirection == "inactive":
                sub.reusable = True

    @property
    def usable(self) -> bool:
        """Neither released by the plane nor closed under it (the client closed its end:
        aiortc then closes ours, and any renegotiation of it would raise)."""
        return not self.closed and not self.negotiator.closed and self.pc.signalingState != "closed"

    def legs(self) -> list[Leg]:
        return [s.leg for s in (*self.subscriptions.values(), *self.free)]

    def connections(self) -> int:
        return 1

    def sources(self) -> list[Source]:
        return [p.source for p in self.publications.values()]

    async def close(self) -> None:
        """Closes legs, sources, transport, negotiator and connection, once each.

        The plane marks a leaving participant ``closed`` before it gets here (so that
        nothing renegotiates it meanwhile): that mark must not skip the release itself."""
        if self._released:
            return
        self._released = True
        self.closed = True
        self.negotiator.close()
        for sub in (*self.subscriptions.values(), *self.free):
            sub.leg.deactivate()
            sub.leg.detach()
        for publication in self.publications.values():
            publication.source.close()
        if self.transport is not None:
            self.transport.close()
        async with self.negotiator.lock:
            await _aiortc.close_connection(self.pc)
