"""The media plane: rooms of participants, each forwarded to every other, packet by packet.

An SFU-aware participant has one `RTCPeerConnection` with the SFU, and the SFU makes every
offer on it: its tracks are forwarded once its answer shows it sends them, and only then
are the others renegotiated; leaving recycles the departed publisher's m-lines at the others
as inactive. A mesh participant (a client that does not know the SFU, `sfu.mesh`) has one
connection per other participant, on which the SFU plays that participant. A room owns its
participants; closing it closes each of them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from . import _aiortc, metrics
from .mesh import MeshLink, MeshParticipant, MeshSink, offered_kinds
from .negotiation import NegotiationError, ssrcs_by_mid
from .participant import FailedCallback, MediaLoss, Participant, SignalSink
from .pipes import Address, PipedSource, PipeEndpoint, RemoteParticipant, pipe_leg, piped
from .source import Source, SourceConfig
from .stats import Totals, counts_of, source_counts

logger = logging.getLogger(__name__)

__all__ = [
    "FailedCallback",
    "MediaConfig",
    "MediaError",
    "MediaLoss",
    "MediaPlane",
    "MeshSink",
    "SignalSink",
]

LINK_RETRIES = 3
"""Times a mesh client's lost link to one peer is offered again before the SFU gives up."""
Member = Participant | MeshParticipant | RemoteParticipant
PublishedCallback = Callable[[str, str, list[PipedSource]], Awaitable[None]]
"""``(room, participant, tracks)``: a local participant's published tracks changed."""


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
        self.participants: dict[str, Member] = {}

    def others(self, p: Member) -> list[Member]:
        return [o for o in self.participants.values() if o is not p and not o.closed]


class MediaPlane:
    """Forwards every participant's RTP to every other participant, without decoding it."""

    def __init__(self, config: MediaConfig) -> None:
        _aiortc.install()
        self.config = config
        self._source_config = config.source_config()
        self._ice_servers = _ice_servers(config)
        self._rooms: dict[str, _Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._totals = Totals()
        self.pipe: PipeEndpoint | None = None
        self.on_published: PublishedCallback | None = None
        self._pipe_targets: dict[tuple[str, str], set[Address]] = {}
        self._pipe_legs: dict[tuple[str, str], dict[tuple[Address, str], Any]] = {}
        self._joining: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        metrics.register(self)

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("sfu background task failed", exc_info=task.exception())

    def _member(self, room_id: str, participant_id: str) -> Member:
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is None:
            raise MediaError(f"{participant_id!r} is not in media room {room_id!r}")
        return p

    def _get(self, room_id: str, participant_id: str) -> Participant:
        p = self._member(room_id, participant_id)
        if not isinstance(p, Participant):
            raise MediaError("this client talks to its peers, not to the SFU")
        return p

    def _mesh(self, room_id: str, participant_id: str) -> MeshParticipant:
        p = self._member(room_id, participant_id)
        if not isinstance(p, MeshParticipant):
            raise MediaError("this client talks to the SFU, not to its peers")
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

    async def _release(self, room: _Room, p: Member) -> None:
        """Close ``p``; the others are already unsubscribed from its sources."""
        if isinstance(p, Participant):
            metrics.FORWARDED_STREAMS.labels(room.id).dec(len(p.subscriptions))
        metrics.PEER_CONNECTIONS.labels(room.id).dec(p.connections())
        self._totals.fold(counts_of([p]))
        await p.close()

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
        async with self._serialised(room_id, participant_id):
            await self._join(room_id, participant_id, sink, on_failed)

    async def join_mesh(
        self,
        room_id: str,
        participant_id: str,
        sink: MeshSink,
        *,
        offers_to_newcomers: bool = True,
    ) -> None:
        """A client that does not know the SFU: it offers to the participants it was told
        about (`offer`); the SFU offers to it as each newcomer (``offers_to_newcomers``)."""
        async with self._serialised(room_id, participant_id):
            room = await self._room_for(room_id, participant_id)
            p = MeshParticipant(
                room_id, participant_id, sink, self._source_config, offers_to_newcomers
            )
            room.participants[participant_id] = p
            await self._greet(room, p)

    @contextlib.asynccontextmanager
    async def _serialised(self, room_id: str, participant_id: str) -> AsyncIterator[None]:
        key = (room_id, participant_id)
        lock, users = self._joining.get(key, (asyncio.Lock(), 0))
        self._joining[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._joining[key]
            if users == 1:
                del self._joining[key]
            else:
                self._joining[key] = (lock, users - 1)

    async def _room_for(self, room_id: str, participant_id: str) -> _Room:
        """The room, the participant's previous membership in it released."""
        room = self._rooms.get(room_id)
        if room is not None and participant_id in room.participants:
            await self.leave(room_id, participant_id)
            room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        return room

    async def _join(
        self,
        room_id: str,
        participant_id: str,
        sink: SignalSink,
        on_failed: FailedCallback | None,
    ) -> None:
        room = await self._room_for(room_id, participant_id)
        pc = RTCPeerConnection(self._rtc_config())
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
        await self._greet(room, p)

    def _rtc_config(self) -> RTCConfiguration:
        return RTCConfiguration(
            iceServers=self._ice_servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )

    async def leave(self, room_id: str, participant_id: str) -> None:
        """Release the participant's connections and recycle its m-lines at the others."""
        room = self._rooms.get(room_id)
        p = room.participants.pop(participant_id, None) if room else None
        if room is None or p is None:
            return
        p.closed = True
        live = p.live
        renegotiate = [
            o
            for o in room.participants.values()
            if isinstance(o, Participant) and any(s in o.subscriptions for s in live)
        ]
        for other in renegotiate:
            for source in live:
                self._unsubscribe(other, source)
        if isinstance(p, Participant):
            p.live.clear()
        self._drop_pipes(room_id, participant_id)
        await self._release(room, p)
        for member in list(room.participants.values()):
            if isinstance(member, MeshParticipant):
                await self._drop_link(member, participant_id)
        self._drop_room_if_empty(room)
        await asyncio.gather(*(self._send_offer(o) for o in renegotiate))

    async def answer(
        self, room_id: str, participant_id: str, answer: dict[str, Any], peer: str = "sfu"
    ) -> None:
        """Apply the client's answer to the SFU's offer (on its link to ``peer``, for a
        mesh client); send the coalesced next offer if one is due."""
        if peer != "sfu":
            await self._answer_link(self._mesh(room_id, participant_id), peer, answer)
            return
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
            if not isinstance(o, Participant) or o is p:
                continue
            if o.usable:
                others.append(o)
            elif not o.closed:
                self._spawn(self._lost(o, "closed"))
        before = set(p.live)
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
        if p.live != before:
            self._refresh_links(room, p)
            self._published(room, p)
        return changed

    async def candidate(
        self,
        room_id: str,
        participant_id: str,
        candidate: dict[str, Any] | None,
        peer: str = "sfu",
    ) -> None:
        """Add a trickled browser candidate; None or an empty one ends the candidates."""
        if candidate is not None and not isinstance(candidate, dict):
            raise MediaError("candidate must be an object or null")
        owner: Participant | MeshLink | None
        if peer == "sfu":
            owner = self._get(room_id, participant_id)
            pc, lock = owner.pc, owner.negotiator.lock
        else:
            owner = self._mesh(room_id, participant_id).links.get(peer)
            if owner is None:
                return  # a candidate of a connection already replaced: nothing to add it to
            pc, lock = owner.pc, owner.lock

        def closed() -> bool:
            return owner is None or owner.closed

        text = candidate.get("candidate") if candidate else None
        if not text:
            async with lock:
                if not closed() and pc.remoteDescription is not None:
                    await pc.addIceCandidate(None)
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
        async with lock:
            if closed():
                return
            try:
                await pc.addIceCandidate(ice)
            except Exception:
                raise MediaError("the candidate was refused") from None

    async def screen_share(self, room_id: str, participant_id: str, sharing: bool) -> None:
        """Offer (or recycle) the publisher's screen m-line and (un)forward it to all.

        A mesh client shares its screen in place of its camera (`replaceTrack`): nothing
        to negotiate."""
        member = self._member(room_id, participant_id)
        if not isinstance(member, Participant):
            return
        p = member
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
        affected = [o for o in others if isinstance(o, Participant) and source in o.subscriptions]
        for other in affected:
            self._unsubscribe(other, source)
        p.live.discard(source)
        self._refresh_links(room, p)
        self._published(room, p)
        self._totals.fold(source_counts([source]))
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

    # ------------------------------------------------------------------ mesh clients

    async def offer(
        self, room_id: str, participant_id: str, peer: str, offer: dict[str, Any]
    ) -> dict[str, Any]:
        """A mesh client's offer to ``peer``: answered by the SFU playing ``peer``."""
        p = self._mesh(room_id, participant_id)
        room = self._rooms[room_id]
        target = room.participants.get(peer)
        if target is None or target is p:
            raise MediaError(f"{peer!r} is not in media room {room_id!r}")
        if not isinstance(offer, dict) or not isinstance(offer.get("sdp"), str):
            raise MediaError("an offer is {type: 'offer', sdp: string}")
        if offer.get("type", "offer") != "offer":
            raise MediaError("expected an offer")
        sdp = offer["sdp"]
        replaced = await self._drop_link(p, peer, move_upload=False)
        upload = p.upload_link() is None or (replaced is not None and replaced.upload)
        link = self._new_link(p, peer, upload)
        link.prepare(offered_kinds(sdp), self.config.video_codec)
        try:
            answer_sdp = await link.answer_offer(sdp)
        except NegotiationError as exc:
            await self._drop_link(p, peer)
            raise MediaError(str(exc)) from None
        self._started(room, p, link, sdp)
        return {"type": "answer", "sdp": answer_sdp}

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

    def _started(self, room: _Room, p: MeshParticipant, link: MeshLink, remote_sdp: str) -> None:
        """A link is negotiated: the peer's media flows on it, and maybe the client's."""
        before = set(p.live)
        link.start(remote_sdp)
        target = room.participants.get(link.peer)
        if target is not None:
            self._attach_link(link, target)
        if p.live != before:
            for other in room.others(p):
                if isinstance(other, Participant) and other.usable:
                    for source in p.live - before:
                        self._subscribe(other, source)
                    self._spawn(self._send_offer(other))
            self._refresh_links(room, p)
        if link.upload:
            self._published(room, p)  # (a moved upload may come with other payload types)

    async def _greet(self, room: _Room, newcomer: Member) -> None:
        """The SFU offers to every mesh client that waits for newcomers, as ``newcomer``."""
        for other in room.others(newcomer):
            if isinstance(other, MeshParticipant) and other.offers_to_newcomers:
                await self._offer_link(other, newcomer.id, other.upload_link() is None)

    async def _offer_link(self, p: MeshParticipant, peer: str, upload: bool) -> None:
        """A fresh link offered by the SFU as ``peer`` (clients answer every offer with a
        new connection, so a link is replaced rather than renegotiated)."""
        await self._drop_link(p, peer, move_upload=False)
        link = self._new_link(p, peer, upload)
        link.prepare(["audio", "video"], self.config.video_codec)
        resent = False

        def unanswered() -> None:
            nonlocal resent
            if link.closed or link.established:
                return
            if not resent:
                resent = True
                self._spawn(p.sink(peer, "offer", {"type": "offer", "sdp": sdp}))
                link._timer = asyncio.get_running_loop().call_later(
                    self.config.answer_timeout_s, unanswered
                )
            else:
                self._spawn(self._drop_link(p, peer))

        sdp = await link.make_offer(self.config.answer_timeout_s, unanswered)
        await p.sink(peer, "offer", {"type": "offer", "sdp": sdp})

    async def _answer_link(self, p: MeshParticipant, peer: str, answer: dict[str, Any]) -> None:
        link = p.links.get(peer)
        if link is None:
            raise MediaError(f"no offer from {peer!r} is waiting for an answer")
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise MediaError("an answer is {type: 'answer', sdp: string}")
        try:
            await link.apply_answer(answer["sdp"])
        except NegotiationError as exc:
            raise MediaError(str(exc)) from None
        room = self._rooms.get(p.room_id)
        if room is not None and not link.closed:
            self._started(room, p, link, answer["sdp"])

    @staticmethod
    def _tracks(publisher: Member) -> dict[str, Source]:
        """A participant's published tracks by key: 'audio', 'video', 'screen'."""
        if isinstance(publisher, MeshParticipant):
            return dict(publisher.own)
        if isinstance(publisher, RemoteParticipant):
            return dict(publisher.tracks)
        live = publisher.live
        return {k: pub.source for k, pub in publisher.publications.items() if pub.source in live}

    def _mesh_view(self, publisher: Member) -> dict[str, Source | None]:
        """What a mesh client receives from ``publisher``: its microphone, and its screen
        in place of its camera while it shares one."""
        tracks = self._tracks(publisher)
        return {"audio": tracks.get("audio"), "video": tracks.get("screen") or tracks.get("video")}

    def _attach_link(self, link: MeshLink, publisher: Member) -> None:
        for kind, source in self._mesh_view(publisher).items():
            link.attach(kind, source)

    def _refresh_links(self, room: _Room, publisher: Member) -> None:
        for other in room.others(publisher):
            if isinstance(other, MeshParticipant):
                link = other.links.get(publisher.id)
                if link is not None and link.established:
                    self._attach_link(link, publisher)

    async def _drop_link(
        self, p: MeshParticipant, peer: str, move_upload: bool = True
    ) -> MeshLink | None:
        link = p.links.pop(peer, None)
        if link is None:
            return None
        self._totals.fold(counts_of([_Legs(link.legs())]))
        metrics.PEER_CONNECTIONS.labels(p.room_id).dec()
        await link.close()
        if link.upload and move_upload and not p.closed:
            await self._move_upload(p)
        return link

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
        await self._drop_link(p, link.peer, move_upload=False)
        room = self._rooms.get(p.room_id)
        tries = p.retries.get(link.peer, 0)
        if room is None or p.closed or link.peer not in room.participants or tries >= LINK_RETRIES:
            if link.upload:
                await self._move_upload(p)
            return
        p.retries[link.peer] = tries + 1
        await asyncio.sleep(0.5 * 2**tries)
        if not p.closed and link.peer in room.participants and link.peer not in p.links:
            await self._offer_link(p, link.peer, link.upload or p.upload_link() is None)

    # ------------------------------------------------------------------ pipes

    async def open_pipe(self, host: str = "127.0.0.1", advertise: str | None = None) -> Address:
        """This plane's pipe socket, for rooms spread over several workers or nodes."""
        if self.pipe is None:
            self.pipe = PipeEndpoint()
            await self.pipe.start(host, advertise)
        return self.pipe.address

    def _published(self, room: _Room, p: Member) -> None:
        """A local participant's tracks changed: pipes follow, and whoever coordinates
        the workers hears of it."""
        if isinstance(p, RemoteParticipant):
            return
        self._sync_pipes(room.id, p)
        if self.on_published is not None:
            tracks = [piped(key, source) for key, source in self._tracks(p).items()]
            self._spawn(self.on_published(room.id, p.id, tracks))

    def pipe_to(self, room_id: str, participant_id: str, address: Address) -> None:
        """Send the participant's tracks, from now on, down the pipe to ``address``."""
        self._pipe_targets.setdefault((room_id, participant_id), set()).add(tuple(address))  # type: ignore[arg-type]
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is not None:
            self._sync_pipes(room_id, p)

    def unpipe(self, room_id: str, participant_id: str, address: Address) -> None:
        self._pipe_targets.get((room_id, participant_id), set()).discard(tuple(address))
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is not None:
            self._sync_pipes(room_id, p)

    def _sync_pipes(self, room_id: str, p: Member) -> None:
        if self.pipe is None:
            return
        key = (room_id, p.id)
        legs = self._pipe_legs.setdefault(key, {})
        wanted = {
            (addr, track): source
            for addr in self._pipe_targets.get(key, set())
            for track, source in self._tracks(p).items()
        }
        for slot in list(legs):
            leg = legs[slot]
            if slot not in wanted or leg.source is not wanted[slot]:
                self._close_pipe_leg(legs.pop(slot))
        for slot, source in wanted.items():
            if slot not in legs:
                legs[slot] = pipe_leg(self.pipe, slot[0], slot[1], source)

    def _close_pipe_leg(self, leg: Any) -> None:
        self._totals.fold(counts_of([_Legs([leg])]))
        leg.deactivate()
        leg.detach()
        if self.pipe is not None:
            for slot, known in list(self.pipe.legs.items()):
                if known is leg:
                    del self.pipe.legs[slot]

    def _drop_pipes(self, room_id: str, participant_id: str) -> None:
        key = (room_id, participant_id)
        self._pipe_targets.pop(key, None)
        for leg in self._pipe_legs.pop(key, {}).values():
            self._close_pipe_leg(leg)

    async def remote_join(self, room_id: str, participant_id: str) -> None:
        """A participant whose media runs on another worker joined: mesh clients here get
        an offer as it, and its tracks arrive later (`remote_tracks`)."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = _Room(room_id)
        if participant_id in room.participants:
            return
        remote = RemoteParticipant(room_id, participant_id, self._source_config)
        room.participants[participant_id] = remote
        await self._greet(room, remote)

    async def remote_tracks(
        self, room_id: str, participant_id: str, origin: Address, tracks: list[PipedSource]
    ) -> None:
        """What a remote participant publishes now, arriving by pipe from ``origin``."""
        await self.remote_join(room_id, participant_id)
        room = self._rooms[room_id]
        remote = room.participants[participant_id]
        if not isinstance(remote, RemoteParticipant) or self.pipe is None:
            raise MediaError(f"{participant_id!r} is not a remote participant here")
        before = remote.live
        stopped = remote.update(self.pipe, tuple(origin), tracks)  # type: ignore[arg-type]
        added = remote.live - before
        renegotiate = []
        for other in room.others(remote):
            if not isinstance(other, Participant) or not other.usable:
                continue
            for source in stopped:
                self._unsubscribe(other, source)
            for source in added:
                self._subscribe(other, source)
            if stopped or added:
                renegotiate.append(other)
        self._totals.fold(source_counts(stopped))
        self._refresh_links(room, remote)
        await asyncio.gather(*(self._send_offer(o) for o in renegotiate))

    # ------------------------------------------------------------------ stats

    def counters(self) -> dict[str, dict[str, int]]:
        """Prometheus counters: what live and closed participants received and forwarded."""
        members = [p for r in self._rooms.values() for p in r.participants.values()]
        return self._totals.with_live(counts_of(members))

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
            counts = counts_of(ps)
            entry = {
                "participants": len(ps),
                "peer_connections": sum(p.connections() for p in ps),
                "sources": sum(len(p.live) for p in ps),
                "forwarded_streams": sum(
                    len(p.subscriptions) if isinstance(p, Participant) else len(p.legs())
                    for p in ps
                ),
                "packets": sum(counts["forwarded_packets"].values()),
                "received_packets": sum(counts["received_packets"].values()),
                "retransmitted_packets": sum(counts["retransmitted_packets"].values()),
                "keyframe_requests": sum(counts["keyframe_requests"].values()),
            }
            rooms[room.id] = entry
            total["peer_connections"] += entry["peer_connections"]
            total["forwarded_streams"] += entry["forwarded_streams"]
        return {"rooms": rooms, "total": total}


class _Legs:
    """Legs whose counts go to the totals (a dropped link's, a closed pipe's)."""

    def __init__(self, legs: list[Any]) -> None:
        self._legs = legs

    def sources(self) -> list[Source]:
        return []

    def legs(self) -> list[Any]:
        return self._legs
