"""The media plane: one RTCPeerConnection per participant, the server makes every offer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp

from . import metrics
from ._aiortc_patch import (
    hook_keyframe_requests,
    install_fast_sender,
    sent_packets,
    set_stream_id,
)
from .forward import ForwardTrack, Source

logger = logging.getLogger(__name__)

SignalSink = Callable[[str, dict[str, Any] | None], Awaitable[None]]
FailedCallback = Callable[[], Awaitable[None]]


class MediaError(Exception):
    """Bad SDP, bad candidate or unknown participant (a client error, not a crash)."""


@dataclass(frozen=True)
class MediaConfig:
    """Settings of the media plane."""

    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    """RTCIceServer dicts ``{urls, username?, credential?}`` for the server's gathering."""
    video_codec: Literal["VP8", "H264"] = "VP8"
    keyframe_interval_s: float = 0.5
    """Minimum spacing of PLIs sent to one publisher's track."""
    video_queue_frames: int = 30
    """Per-subscriber backlog (frames) before a slow subscriber drops to a keyframe."""
    audio_queue_frames: int = 50
    fast_sender: bool = True
    """Forwarding senders use the leaner send loop of ``sfu._aiortc_patch``."""


def _ice_servers(config: MediaConfig) -> list[RTCIceServer]:
    servers = []
    for entry in config.ice_servers:
        try:
            servers.append(
                RTCIceServer(
                    urls=entry["urls"],
                    username=entry.get("username"),
                    credential=entry.get("credential"),
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad ICE server entry {entry!r}") from exc
    return servers


def _codec_preferences(kind: str, video_codec: str) -> list[Any]:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    if kind == "audio":
        return [c for c in caps if c.mimeType.lower() == "audio/opus"]
    wanted = f"video/{video_codec}".lower()
    return [c for c in caps if c.mimeType.lower() in (wanted, "video/rtx")]


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_SENDS = {"sendrecv": True, "sendonly": True, "recvonly": False, "inactive": False}
_RECVS = {"sendrecv": True, "sendonly": False, "recvonly": True, "inactive": False}


def _direction(send: bool, recv: bool) -> str:
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive"
    )


def _clamp_answer_directions(answer_sdp: str, offer_sdp: str) -> str:
    """Make each answered direction a subset of what we offered (RFC 3264 section 6).

    A non-compliant ``sendrecv`` answer to our recvonly m-line would otherwise start an
    aiortc sender without a track, which polls every 20 ms forever.
    """
    offered = [
        next((line[2:] for line in section if line[2:] in _DIRECTIONS), "sendrecv")
        for section in _sections(offer_sdp)
    ]
    lines = answer_sdp.splitlines()
    index = -1
    for i, line in enumerate(lines):
        if line.startswith("m="):
            index += 1
        elif index >= 0 and line.startswith("a=") and line[2:] in _DIRECTIONS:
            ours = offered[index] if index < len(offered) else "inactive"
            theirs = line[2:]
            clamped = _direction(_SENDS[theirs] and _RECVS[ours], _RECVS[theirs] and _SENDS[ours])
            lines[i] = "a=" + clamped
    return "\r\n".join(lines) + "\r\n"


def _sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        if sections:
            sections[-1].append(line)
    return sections


def _key(source: Source) -> str:
    if source.kind == "audio":
        return "audio"
    return "screen" if source.stream_id.endswith(":screen") else "video"


class _Slot:
    """A sending transceiver on a subscriber's connection and its long-lived track."""

    def __init__(self, transceiver: RTCRtpTransceiver, track: ForwardTrack) -> None:
        self.transceiver = transceiver
        self.track = track
        self.reusable = False


class _Participant:
    def __init__(
        self,
        room_id: str,
        participant_id: str,
        pc: RTCPeerConnection,
        sink: SignalSink,
        on_failed: FailedCallback | None,
    ) -> None:
        self.room_id = room_id
        self.id = participant_id
        self.pc = pc
        self.sink = sink
        self.on_failed = on_failed
        self.lock = asyncio.Lock()
        self.in_flight = False
        self.pending = False
        self.closed = False
        self.sources: dict[str, Source] = {}  # "audio" | "video" | "screen"
        self.own: dict[Source, RTCRtpTransceiver] = {}
        self.live: set[Source] = set()  # sources forwarded to the others
        self.screen_transceiver: RTCRtpTransceiver | None = None
        self.slots: dict[Source, _Slot] = {}
        self.free: list[_Slot] = []
        self.packets_closed = 0

    def forwarded_packets(self) -> int:
        total = 0
        for slot in [*self.slots.values(), *self.free]:
            total += sent_packets(slot.transceiver.sender)
        return total


class _Room:
    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.participants: dict[str, _Participant] = {}
        self.keyframe_requests_closed = 0
        self.packets_closed = 0

    def sources(self) -> list[Source]:
        return [s for p in self.participants.values() for s in p.sources.values()]


class MediaPlane:
    """Forwards every participant's encoded audio/video to every other participant."""

    def __init__(self, config: MediaConfig) -> None:
        self.config = config
        self._ice_servers = _ice_servers(config)
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._totals = {"packets": 0, "keyframe_requests": 0}

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("sfu background task failed", exc_info=task.exception())

    def _get(self, room_id: str, participant_id: str) -> _Participant:
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is None:
            raise MediaError(f"{participant_id!r} is not in media room {room_id!r}")
        return p

    def _new_source(self, p: _Participant, key: str, transceiver: RTCRtpTransceiver) -> Source:
        kind = "audio" if key == "audio" else "video"
        stream_id = f"{p.id}:screen" if key == "screen" else p.id
        source = Source(kind, stream_id, self.config.keyframe_interval_s, self._spawn)
        source.bind(transceiver.receiver)
        p.sources[key] = source
        p.own[source] = transceiver
        return source

    def _add_recv(self, p: _Participant, key: str) -> RTCRtpTransceiver:
        kind = "audio" if key == "audio" else "video"
        t = p.pc.addTransceiver(kind, direction="recvonly")
        t.setCodecPreferences(_codec_preferences(kind, self.config.video_codec))
        self._new_source(p, key, t)
        return t

    def _subscribe(self, sub: _Participant, source: Source) -> None:
        """Give ``sub`` a sending m-line for ``source`` (reusing a recycled one)."""
        if source in sub.slots:
            return
        slot = next((s for s in sub.free if s.reusable and s.track.kind == source.kind), None)
        if slot is not None:
            sub.free.remove(slot)
            slot.transceiver.direction = "sendonly"
            slot.reusable = False
        else:
            queue = (
                self.config.video_queue_frames
                if source.kind == "video"
                else self.config.audio_queue_frames
            )
            track = ForwardTrack(source.kind, queue)
            t = sub.pc.addTransceiver(track, direction="sendonly")
            t.setCodecPreferences(_codec_preferences(source.kind, self.config.video_codec))
            slot = _Slot(t, track)
            hook_keyframe_requests(t.sender, self._pli_handler(slot))
            if self.config.fast_sender:
                install_fast_sender(t.sender)
        set_stream_id(slot.transceiver.sender, source.stream_id)
        slot.track.attach(source)
        sub.slots[source] = slot
        metrics.FORWARDED_STREAMS.labels(sub.room_id).inc()

    @staticmethod
    def _pli_handler(slot: _Slot) -> Callable[[], None]:
        def on_pli() -> None:
            source = slot.track.source
            if source is not None:
                source.request_keyframe()

        return on_pli

    def _unsubscribe(self, sub: _Participant, source: Source) -> None:
        """Recycle ``sub``'s m-line for ``source`` as inactive (aiortc has no removeTrack)."""
        slot = sub.slots.pop(source, None)
        if slot is None:
            return
        slot.track.detach()
        slot.transceiver.direction = "inactive"
        slot.reusable = False  # only once an answer has confirmed "inactive"
        sub.free.append(slot)
        metrics.FORWARDED_STREAMS.labels(sub.room_id).dec()

    async def _send(self, p: _Participant, kind: str, payload: dict[str, Any] | None) -> None:
        try:
            await p.sink(kind, payload)
        except Exception:
            logger.exception("sfu: signal sink of %s failed", p.id)

    async def _negotiate(self, p: _Participant) -> None:
        """Send a new offer, or coalesce into the next one if an offer is outstanding."""
        if p.closed:
            return
        if p.in_flight:
            p.pending = True
            return
        p.in_flight = True
        p.pending = False
        async with p.lock:
            if p.closed:
                return
            offer = await p.pc.createOffer()
            await p.pc.setLocalDescription(offer)
            sdp = p.pc.localDescription.sdp
        await self._send(p, "offer", {"type": "offer", "sdp": sdp})

    def _watch(self, p: _Participant) -> None:
        pc = p.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "failed" and not p.closed:
                self._spawn(self._failed(p))

    async def _failed(self, p: _Participant) -> None:
        room = self._rooms.get(p.room_id)
        if room is None or room.participants.get(p.id) is not p:
            return
        logger.info("sfu: connection of %s in %s failed", p.id, p.room_id)
        await self.leave(p.room_id, p.id)
        if p.on_failed is not None:
            await p.on_failed()

    async def _release(self, room: _Room, p: _Participant) -> None:
        """Close ``p``'s connection; its sources and slots are already detached."""
        p.closed = True
        for slot in [*p.slots.values(), *p.free]:
            slot.track.detach()
        room.packets_closed += p.forwarded_packets()
        metrics.FORWARDED_STREAMS.labels(room.id).dec(len(p.slots))
        p.slots.clear()
        p.free.clear()
        for source in p.sources.values():
            room.keyframe_requests_closed += source.keyframe_requests
            source.close()
        async with p.lock:
            await p.pc.close()
        metrics.PEER_CONNECTIONS.labels(room.id).dec()

    def _drop_room_if_empty(self, room: _Room) -> None:
        if not room.participants and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            self._totals["packets"] += room.packets_closed
            self._totals["keyframe_requests"] += room.keyframe_requests_closed
            metrics.forget_room(room.id)

    # ------------------------------------------------------------------ API

    async def join(
        self,
        room_id: str,
        participant_id: str,
        sink: SignalSink,
        on_failed: FailedCallback | None = None,
    ) -> None:
        """Create the participant's connection and offer it every live track of the room.

        The others are renegotiated when this participant's answer shows it publishes.
        """
        room = self._rooms.get(room_id)
        if room is not None and participant_id in room.participants:
            await self.leave(room_id, participant_id)
            room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        p = _Participant(room_id, participant_id, pc, sink, on_failed)
        # Own m-lines first (mic, camera), so a client that added its tracks before
        # applying the offer gets them associated with these recvonly m-lines.
        self._add_recv(p, "audio")
        self._add_recv(p, "video")
        for other in room.participants.values():
            for source in other.live:
                self._subscribe(p, source)
        room.participants[participant_id] = p
        metrics.PEER_CONNECTIONS.labels(room_id).inc()
        self._watch(p)
        # The others get m-lines for p's tracks once p's answer says it sends them.
        await self._negotiate(p)

    async def leave(self, room_id: str, participant_id: str) -> None:
        """Release the participant's connection and recycle its m-lines at the others."""
        room = self._rooms.get(room_id)
        p = room.participants.pop(participant_id, None) if room else None
        if room is None or p is None:
            return
        p.closed = True
        others = [o for o in room.participants.values() if any(s in o.slots for s in p.live)]
        for other in others:
            for source in p.live:
                self._unsubscribe(other, source)
        p.live.clear()
        await self._release(room, p)
        self._drop_room_if_empty(room)
        await asyncio.gather(*(self._negotiate(o) for o in others))

    async def answer(self, room_id: str, participant_id: str, answer: dict[str, Any]) -> None:
        """Apply the client's answer; send the coalesced next offer if one is due."""
        p = self._get(room_id, participant_id)
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise MediaError("answer must be {type: 'answer', sdp: string}")
        if answer.get("type", "answer") != "answer":
            raise MediaError("the SFU only accepts answers (it makes every offer)")
        async with p.lock:
            if p.closed:
                return
            if not p.in_flight or p.pc.signalingState != "have-local-offer":
                raise MediaError("no offer from the SFU is waiting for an answer")
            try:
                sdp = _clamp_answer_directions(answer["sdp"], p.pc.localDescription.sdp)
                await p.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise MediaError(f"bad answer: {exc}") from exc
        p.in_flight = False
        for slot in p.slots.values():
            if slot.transceiver.currentDirection in ("sendonly", "sendrecv"):
                slot.track.activate()
        for slot in p.free:
            if slot.transceiver.currentDirection == "inactive":
                slot.reusable = True
        others = self._update_publishing(p)
        await asyncio.gather(
            *(self._negotiate(o) for o in others), *([self._negotiate(p)] if p.pending else [])
        )

    def _update_publishing(self, p: _Participant) -> list[_Participant]:
        """(Un)forward p's tracks as its answer starts/stops sending them; who changed."""
        room = self._rooms.get(p.room_id)
        if room is None or p.closed:
            return []
        changed: list[_Participant] = []
        # A participant whose connection is closing is on its way out: it gets no new m-lines.
        others = [o for o in room.participants.values() if o is not p and not o.closed]
        for source, transceiver in p.own.items():
            if p.sources.get(_key(source)) is not source:
                continue  # a stopped screen share
            sending = transceiver.currentDirection in ("recvonly", "sendrecv")
            if sending and source not in p.live:
                p.live.add(source)
                for other in others:
                    try:
                        self._subscribe(other, source)
                    except InvalidStateError:
                        # Its connection closed under us (ICE/DTLS failure in flight): the
                        # failure path releases it; the publisher must not fail with it.
                        logger.info("sfu: %s closed while subscribing it", other.id)
            elif not sending and source in p.live:
                p.live.discard(source)
                for other in others:
                    self._unsubscribe(other, source)
            else:
                continue
            changed += [o for o in others if o not in changed]
        return changed

    async def candidate(
        self, room_id: str, participant_id: str, candidate: dict[str, Any] | None
    ) -> None:
        """Add a trickled browser candidate; None or an empty one ends the candidates."""
        p = self._get(room_id, participant_id)
        if candidate is not None and not isinstance(candidate, dict):
            raise MediaError("candidate must be an object or null")
        text = candidate.get("candidate") if candidate else None
        if not text:
            async with p.lock:
                if not p.closed and p.pc.remoteDescription is not None:
                    await p.pc.addIceCandidate(None)
            return
        if not isinstance(text, str):
            raise MediaError("candidate.candidate must be a string")
        try:
            ice = candidate_from_sdp(text.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError) as exc:
            raise MediaError(f"bad candidate: {text[:100]!r}") from exc
        # Everything is bundled on the first m-line's transport, whatever mid the client
        # names (aiortc only feeds candidates to unbundled transceivers).
        ice.sdpMLineIndex = 0
        ice.sdpMid = None
        async with p.lock:
            if p.closed:
                return
            try:
                await p.pc.addIceCandidate(ice)
            except Exception as exc:
                raise MediaError(f"candidate rejected: {exc}") from exc

    async def screen_share(self, room_id: str, participant_id: str, sharing: bool) -> None:
        """Offer (or recycle) the publisher's screen m-line and (un)forward it to all."""
        p = self._get(room_id, participant_id)
        room = self._rooms[room_id]
        others = [o for o in room.participants.values() if o is not p]
        if sharing:
            if "screen" in p.sources:
                return
            if p.screen_transceiver is None:
                p.screen_transceiver = self._add_recv(p, "screen")
            else:
                p.screen_transceiver.direction = "recvonly"
                old = [s for s, t in p.own.items() if t is p.screen_transceiver]
                for stale in old:
                    del p.own[stale]
                self._new_source(p, "screen", p.screen_transceiver).restart()
            # the others get it once p's answer shows it sends on the screen m-line
            await self._negotiate(p)
            return
        stopped = p.sources.pop("screen", None)
        if stopped is None:
            return
        affected = [o for o in others if stopped in o.slots]
        for other in affected:
            self._unsubscribe(other, stopped)
        p.live.discard(stopped)
        room.keyframe_requests_closed += stopped.keyframe_requests
        stopped.close()
        if p.screen_transceiver is not None:
            p.screen_transceiver.direction = "inactive"
        await asyncio.gather(self._negotiate(p), *(self._negotiate(o) for o in affected))

    async def close_room(self, room_id: str) -> None:
        """Release every connection, task and track of the room."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        participants = list(room.participants.values())
        room.participants.clear()
        for p in participants:
            p.closed = True
        await asyncio.gather(*(self._release(room, p) for p in participants))
        self._drop_room_if_empty(room)

    async def close(self) -> None:
        """Release all rooms and background tasks."""
        for room_id in list(self._rooms):
            await self.close_room(room_id)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def stats(self) -> dict[str, Any]:
        """Per-room and total counts (packets = RTP packets forwarded to subscribers)."""
        rooms: dict[str, Any] = {}
        total = {
            "peer_connections": 0,
            "forwarded_streams": 0,
            "packets": self._totals["packets"],
            "keyframe_requests": self._totals["keyframe_requests"],
        }
        for room in self._rooms.values():
            ps = list(room.participants.values())
            entry = {
                "participants": len(ps),
                "peer_connections": len(ps),
                "sources": len(room.sources()),
                "forwarded_streams": sum(len(p.slots) for p in ps),
                "packets": room.packets_closed + sum(p.forwarded_packets() for p in ps),
                "received_packets": sum(s.packets for s in room.sources()),
                "keyframe_requests": room.keyframe_requests_closed
                + sum(s.keyframe_requests for s in room.sources()),
            }
            rooms[room.id] = entry
            for key in ("peer_connections", "forwarded_streams", "packets", "keyframe_requests"):
                total[key] += entry[key]
        return {"rooms": rooms, "total": total}
