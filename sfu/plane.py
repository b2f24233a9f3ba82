"""The media plane: rooms of participants, each forwarded to every other, packet by packet.

One `RTCPeerConnection` per participant and the server makes every offer. A participant's
tracks are forwarded once its answer shows it sends them; only then are the others
renegotiated. Leaving recycles the departed publisher's m-lines at the others as
inactive. A room owns its participants; closing it closes each of them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from . import _aiortc, metrics
from .negotiation import NegotiationError, ssrcs_by_mid
from .participant import FailedCallback, MediaLoss, Participant, SignalSink
from .source import Source, SourceConfig

logger = logging.getLogger(__name__)

__all__ = ["FailedCallback", "MediaConfig", "MediaError", "MediaLoss", "MediaPlane", "SignalSink"]


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
    answer_timeout_s: float = 15.0
    """An offer unanswered this long is sent again once; then the participant is dropped."""
    source: SourceConfig | None = None
    """Loss-repair bounds; defaults follow ``keyframe_interval_s``."""

    def source_config(self) -> SourceConfig:
        return self.source or SourceConfig(keyframe_interval_s=self.keyframe_interval_s)


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


class _Room:
    def __init__(self, room_id: str) -> None:
        self.id = room_id
        self.participants: dict[str, Participant] = {}


class MediaPlane:
    """Forwards every participant's RTP to every other participant, without decoding it."""

    def __init__(self, config: MediaConfig) -> None:
        _aiortc.install()
        self.config = config
        self._source_config = config.source_config()
        self._ice_servers = _ice_servers(config)
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._closed_peers = 0
        self._joining: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        metrics.register(self)

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("sfu background task failed", exc_info=task.exception())

    def _get(self, room_id: str, participant_id: str) -> Participant:
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is None:
            raise MediaError(f"{participant_id!r} is not in media room {room_id!r}")
        return p

    def _subscribe(self, sub: Participant, source: Source) -> None:
        if source not in sub.subscriptions:
            sub.subscribe(source, self.config.video_codec)
            metrics.FORWARDED_STREAMS.labels(sub.room_id).inc()

    def _unsubscribe(self, sub: Participant, source: Source) -> None:
        if sub.unsubscribe(source):
            metrics.FORWARDED_STREAMS.labels(sub.room_id).dec()

    async def _send_offer(self, p: Participant) -> None:
        """Send a new offer, or coalesce into the next one if an offer is outstanding.

        A connection that closed or failed under us (the client closed its end) is never
        renegotiated: it is let go, and nobody else's request fails because of it.
        """
        if p.closed:
            return
        if not p.usable or p.pc.connectionState in ("closed", "failed"):
            self._spawn(self._lost(p, "failed" if p.pc.connectionState == "failed" else "closed"))
            return
        try:
            await p.negotiator.negotiate()
        except Exception:
            if not p.closed:
                logger.exception("sfu: offer to %s failed", p.id)
        if not p.usable and not p.closed:  # aiortc refused: the connection closed meanwhile
            self._spawn(self._lost(p, "closed"))

    def _watch(self, p: Participant) -> None:
        pc = p.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            # "closed" while the plane did not close it: the client closed its end (DTLS).
            state = pc.connectionState
            if state == "failed" and not p.closed:
                self._spawn(self._lost(p, "failed"))
            elif state == "closed" and not p.closed:
                self._spawn(self._lost(p, "closed"))

    async def _lost(self, p: Participant, reason: MediaLoss) -> None:
        """Let go of a connection that failed, closed or never answered; tell signaling."""
        room = self._rooms.get(p.room_id)
        if room is None or room.participants.get(p.id) is not p:
            return
        logger.info("sfu: connection of %s in %s %s", p.id, p.room_id, reason)
        await self.leave(p.room_id, p.id)
        if p.on_failed is not None:
            await p.on_failed(reason)

    async def _unanswered(self, p: Participant) -> None:
        logger.info("sfu: %s never answered its offer; its media is dropped", p.id)
        await self._lost(p, "unanswered")

    async def _release(self, room: _Room, p: Participant) -> None:
        """Close ``p``; the others are already unsubscribed from its sources."""
        metrics.FORWARDED_STREAMS.labels(room.id).dec(len(p.subscriptions))
        self._count_closed(p)
        await p.close()
        metrics.PEER_CONNECTIONS.labels(room.id).dec()

    def _count_closed(self, p: Participant) -> None:
        for name, by_kind in self._counts_of([p]).items():
            for kind, value in by_kind.items():
                self._closed_counts[name][kind] += value
        self._closed_peers += 1

    def _drop_room_if_empty(self, room: _Room) -> None:
        if not room.participants and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
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
        Joins of one participant run one at a time (a rejoin, a mode switch and a retry
        may race): the last one's connection is the one that stays.
        """
        key = (room_id, participant_id)
        lock, users = self._joining.get(key, (asyncio.Lock(), 0))
        self._joining[key] = (lock, users + 1)
        try:
            async with lock:
                await self._join(room_id, participant_id, sink, on_failed)
        finally:
            lock, users = self._joining[key]
            if users == 1:
                del self._joining[key]
            else:
                self._joining[key] = (lock, users - 1)

    async def _join(
        self,
        room_id: str,
        participant_id: str,
        sink: SignalSink,
        on_failed: FailedCallback | None,
    ) -> None:
        room = self._rooms.get(room_id)
        if room is not None and participant_id in room.participants:
            await self.leave(room_id, participant_id)
            room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        p = Participant(
            room_id,
            participant_id,
            pc,
            sink,
            on_failed,
            self.config.answer_timeout_s,
            lambda: self._unanswered(p),
        )
        # Own m-lines first (mic, camera), so a client that added its tracks before
        # applying the offer gets them associated with these recvonly m-lines.
        for key in ("audio", "video"):
            p.add_publication(key, self.config.video_codec, self._source_config, None)
        for other in room.participants.values():
            for source in other.live:
                self._subscribe(p, source)
        room.participants[participant_id] = p
        metrics.PEER_CONNECTIONS.labels(room_id).inc()
        self._watch(p)
        await self._send_offer(p)

    async def leave(self, room_id: str, participant_id: str) -> None:
        """Release the participant's connection and recycle its m-lines at the others."""
        room = self._rooms.get(room_id)
        p = room.participants.pop(participant_id, None) if room else None
        if room is None or p is None:
            return
        p.closed = True
        others = [
            o for o in room.participants.values() if any(s in o.subscriptions for s in p.live)
        ]
        for other in others:
            for source in p.live:
                self._unsubscribe(other, source)
        p.live.clear()
        await self._release(room, p)
        self._drop_room_if_empty(room)
        await asyncio.gather(*(self._send_offer(o) for o in others))

    async def answer(self, room_id: str, participant_id: str, answer: dict[str, Any]) -> None:
        """Apply the client's answer; send the coalesced next offer if one is due."""
        p = self._get(room_id, participant_id)
        try:
            await p.negotiator.apply_answer(answer)
        except NegotiationError as exc:
            raise MediaError(str(exc)) from None
        if p.closed:
            return
        p.answered()
        others = self._update_publishing(p, ssrcs_by_mid(answer["sdp"]))
        due = [p] if p.negotiator.pending else []
        await asyncio.gather(*(self._send_offer(o) for o in [*others, *due]))

    def _update_publishing(
        self, p: Participant, ssrcs: dict[str, tuple[int | None, int | None]]
    ) -> list[Participant]:
        """(Un)forward p's tracks as its answer starts/stops sending them; who changed."""
        room = self._rooms.get(p.room_id)
        if room is None or p.closed or p.transport is None:
            return []
        changed: list[Participant] = []
        # A participant whose connection is closing is on its way out: it gets no new m-lines
        # (aiortc would refuse them), and one the client closed is let go.
        others = []
        for o in room.participants.values():
            if o is not p and o.usable:
                others.append(o)
            elif o is not p and not o.closed:
                self._spawn(self._lost(o, "closed"))
        for publication in p.publications.values():
            source = publication.source
            sending = publication.sending()
            if sending:
                publication.configure(
                    p.transport, ssrcs.get(publication.transceiver.mid or "", (None, None))
                )
            if sending and source not in p.live:
                p.live.add(source)
                for other in others:
                    self._subscribe(other, source)
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
            async with p.negotiator.lock:
                if not p.closed and p.pc.remoteDescription is not None:
                    await p.pc.addIceCandidate(None)
            return
        if not isinstance(text, str):
            raise MediaError("candidate.candidate must be a string")
        try:
            ice = candidate_from_sdp(text.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError):
            raise MediaError("the candidate is not an ICE candidate line") from None
        # Everything is bundled on the first m-line's transport, whatever mid the client
        # names (aiortc only feeds candidates to unbundled transceivers).
        ice.sdpMLineIndex = 0
        ice.sdpMid = None
        async with p.negotiator.lock:
            if p.closed:
                return
            try:
                await p.pc.addIceCandidate(ice)
            except Exception:
                raise MediaError("the candidate was refused") from None

    async def screen_share(self, room_id: str, participant_id: str, sharing: bool) -> None:
        """Offer (or recycle) the publisher's screen m-line and (un)forward it to all."""
        p = self._get(room_id, participant_id)
        room = self._rooms[room_id]
        others = [o for o in room.participants.values() if o is not p]
        if sharing:
            if "screen" in p.publications:
                return
            publication = p.add_publication(
                "screen", self.config.video_codec, self._source_config, p.screen_transceiver
            )
            p.screen_transceiver = publication.transceiver
            # the others get it once p's answer shows it sends on the screen m-line
            await self._send_offer(p)
            return
        stopped = p.publications.pop("screen", None)
        if stopped is None:
            return
        source = stopped.source
        affected = [o for o in others if source in o.subscriptions]
        for other in affected:
            self._unsubscribe(other, source)
        p.live.discard(source)
        for name, by_kind in self._source_counts([source]).items():
            for kind, value in by_kind.items():
                self._closed_counts[name][kind] += value
        source.close()
        if p.transport is not None:
            p.transport.remove_source(source)
        stopped.transceiver.direction = "inactive"
        await asyncio.gather(self._send_offer(p), *(self._send_offer(o) for o in affected))

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

    # ------------------------------------------------------------------ stats

    @staticmethod
    def _source_counts(sources: list[Source]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for s in sources:
            out["received_packets"][s.kind] += s.received
            out["nacked_packets"][s.kind] += s.nacks_sent
            out["keyframe_requests"][s.kind] += s.keyframe_requests
            out["unrepairable_losses"][s.kind] += s.lost
        return out

    def _counts_of(self, participants: list[Participant]) -> dict[str, dict[str, int]]:
        out = self._source_counts([s for p in participants for s in p.sources()])
        for p in participants:
            for leg in p.legs():
                out["forwarded_packets"][leg.kind] += leg.packets
                out["retransmitted_packets"][leg.kind] += leg.retransmits
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """Prometheus counters: what live and closed participants received and forwarded."""
        live = self._counts_of([p for r in self._rooms.values() for p in r.participants.values()])
        out: dict[str, dict[str, int]] = {}
        for name in metrics.COUNTERS:
            kinds = set(live.get(name, {})) | set(self._closed_counts.get(name, {}))
            out[name] = {
                k: live.get(name, {}).get(k, 0) + self._closed_counts.get(name, {}).get(k, 0)
                for k in kinds
            }
        return out

    def stats(self) -> dict[str, Any]:
        """Per-room and total counts (packets = RTP packets forwarded to subscribers)."""
        rooms: dict[str, Any] = {}
        totals = self.counters()
        total = {
            "peer_connections": 0,
            "forwarded_streams": 0,
            "packets": sum(totals["forwarded_packets"].values()),
            "keyframe_requests": sum(totals["keyframe_requests"].values()),
        }
        for room in self._rooms.values():
            ps = list(room.participants.values())
            counts = self._counts_of(ps)
            entry = {
                "participants": len(ps),
                "peer_connections": len(ps),
                "sources": sum(len(p.live) for p in ps),
                "forwarded_streams": sum(len(p.subscriptions) for p in ps),
                "packets": sum(counts["forwarded_packets"].values()),
                "received_packets": sum(counts["received_packets"].values()),
                "retransmitted_packets": sum(counts["retransmitted_packets"].values()),
                "keyframe_requests": sum(counts["keyframe_requests"].values()),
            }
            rooms[room.id] = entry
            total["peer_connections"] += entry["peer_connections"]
            total["forwarded_streams"] += entry["forwarded_streams"]
        return {"rooms": rooms, "total": total}
