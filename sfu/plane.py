"""The media plane: rooms of participants, each forwarded to every other, packet by packet.

An SFU-aware participant has one `RTCPeerConnection` with the SFU, and the SFU makes every
offer on it: its tracks are forwarded once its answer shows it sends them, and only then
are the others renegotiated; leaving recycles the departed publisher's m-lines at the others
as inactive. A mesh participant (a client that does not know the SFU) has one connection per
other participant (`meshlinks`), and a remote one publishes from another worker (`pipes`).
The plane owns its rooms, a room its participants; closing either closes each child once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection

from . import _aiortc, metrics
from .config import MediaConfig
from .errors import MediaError
from .leg import Leg
from .mesh import MeshParticipant, MeshSink
from .meshlinks import MeshAnswer, MeshLinks
from .negotiation import NegotiationError, parse_candidate, ssrcs_by_mid
from .participant import FailedCallback, MediaLoss, Participant, SignalSink
from .pipes import Address, PipedSource, PipeEndpoint, PipeRoutes, RemoteParticipant, piped
from .room import Member, Room, tracks
from .source import Source
from .stats import Totals, counts_of, leg_counts, pipe_counts, room_entry, source_counts

logger = logging.getLogger(__name__)

PublishedCallback = Callable[[str, str, list[PipedSource]], Awaitable[None]]
"""``(room, participant, tracks)``: a local participant's published tracks changed."""


class MediaPlane:
    """Forwards every participant's RTP to every other participant, without decoding it."""

    def __init__(self, config: MediaConfig) -> None:
        _aiortc.install()
        config.rtc_config()  # a malformed ICE server entry fails here, not at the first join
        self.config = config
        self._source_config = config.source_config()
        self._rooms: dict[str, Room] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._totals = Totals()
        self._joining: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self.on_published: PublishedCallback | None = None
        self.pipes = PipeRoutes(lambda legs: self._totals.fold(pipe_counts(legs)))
        self.links = MeshLinks(
            room=self._rooms.get,
            rtc_config=config.rtc_config,
            video_codec=config.video_codec,
            answer_timeout_s=config.answer_timeout_s,
            spawn=self._spawn,
            fold=self._fold_legs,
            uploaded=self._mesh_uploaded,
        )
        metrics.register(self)

    @property
    def pipe(self) -> PipeEndpoint | None:
        """This plane's pipe socket, once `open_pipe` opened it."""
        return self.pipes.endpoint

    # ------------------------------------------------------------------ helpers

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("sfu background task failed", exc_info=task.exception())

    def _fold_legs(self, legs: list[Leg]) -> None:
        self._totals.fold(leg_counts(legs))

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
            if state in ("failed", "closed") and not p.closed:
                self._spawn(self._lost(p, "failed" if state == "failed" else "closed"))

    async def _lost(self, p: Participant, reason: MediaLoss) -> None:
        """Let go of a connection that failed, closed or never answered; tell signaling."""
        room = self._rooms.get(p.room_id)
        if room is None or room.participants.get(p.id) is not p:
            return
        logger.info("sfu: connection of %s in %s %s", p.id, p.room_id, reason)
        await self.leave(p.room_id, p.id)
        if p.on_failed is not None:
            await p.on_failed(reason)

    async def _release(self, room: Room, p: Member) -> None:
        """Close ``p``; the others are already unsubscribed from its sources."""
        if isinstance(p, Participant):
            metrics.FORWARDED_STREAMS.labels(room.id).dec(len(p.subscriptions))
        metrics.PEER_CONNECTIONS.labels(room.id).dec(p.connections())
        self._totals.fold(counts_of([p]))
        await p.close()

    def _drop_room_if_empty(self, room: Room) -> None:
        if not room.participants and self._rooms.get(room.id) is room:
            del self._rooms[room.id]
            metrics.forget_room(room.id)

    def _changed(self, room: Room, p: Member) -> None:
        """A participant's tracks changed: mesh links playing it, its pipes, and whoever
        coordinates the workers follow."""
        self.links.refresh(room, p)
        if isinstance(p, RemoteParticipant):
            return
        published = tracks(p)
        self.pipes.sync((room.id, p.id), published)
        if self.on_published is not None:
            described = [piped(key, source) for key, source in published.items()]
            self._spawn(self.on_published(room.id, p.id, described))

    def _mesh_uploaded(self, room: Room, p: MeshParticipant, added: set[Source]) -> None:
        """A mesh client's own media arrived: SFU-aware participants get m-lines for it."""
        for other in room.forward(p, added):
            self._spawn(self._send_offer(other))
        self._changed(room, p)

    # ------------------------------------------------------------------ joining

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
            room = await self._room_for(room_id, participant_id)
            p = Participant(
                room_id,
                participant_id,
                RTCPeerConnection(self.config.rtc_config()),
                sink,
                on_failed,
                self.config.answer_timeout_s,
                lambda: self._lost(p, "unanswered"),
            )
            # Own m-lines first (mic, camera), so a client that added its tracks before
            # applying the offer gets them associated with these recvonly m-lines.
            for key in ("audio", "video"):
                p.add_publication(key, self.config.video_codec, self._source_config, None)
            room.subscribe(p, [s for other in room.participants.values() for s in other.live])
            room.participants[participant_id] = p
            metrics.PEER_CONNECTIONS.labels(room_id).inc()
            self._watch(p)
            await self._send_offer(p)
            await self.links.greet(room, p)

    async def join_mesh(
        self,
        room_id: str,
        participant_id: str,
        sink: MeshSink,
        *,
        offers_to_newcomers: bool = True,
        offer_existing: bool = False,
    ) -> None:
        """A client that does not know the SFU: it offers to the participants it was told
        about (`offer`); the SFU offers to it as each newcomer (``offers_to_newcomers``),
        and as everyone already there if nobody else will (``offer_existing``)."""
        async with self._serialised(room_id, participant_id):
            room = await self._room_for(room_id, participant_id)
            p = MeshParticipant(
                room_id, participant_id, sink, self._source_config, offers_to_newcomers
            )
            room.participants[participant_id] = p
            if offer_existing:
                await self.links.offer_all(room, p)
            await self.links.greet(room, p)

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

    async def _room_for(self, room_id: str, participant_id: str) -> Room:
        """The room, the participant's previous membership in it released."""
        room = self._rooms.get(room_id)
        if room is not None and participant_id in room.participants:
            await self.leave(room_id, participant_id)
            room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self.config.video_codec)
        return room

    async def leave(self, room_id: str, participant_id: str) -> None:
        """Release the participant's connections and recycle its m-lines at the others."""
        room = self._rooms.get(room_id)
        p = room.participants.pop(participant_id, None) if room else None
        if room is None or p is None:
            return
        p.closed = True
        renegotiate = room.unforward(p.live)
        if isinstance(p, Participant):
            p.live.clear()
        self.pipes.drop((room_id, participant_id))
        await self._release(room, p)
        for member in list(room.participants.values()):
            if isinstance(member, MeshParticipant):
                await self.links.drop(member, participant_id)
        self._drop_room_if_empty(room)
        await asyncio.gather(*(self._send_offer(o) for o in renegotiate))

    # ------------------------------------------------------------------ negotiation

    async def offer(
        self, room_id: str, participant_id: str, peer: str, offer: dict[str, Any]
    ) -> MeshAnswer:
        """A mesh client's offer to ``peer``: answered by the SFU playing ``peer``."""
        p = self._mesh(room_id, participant_id)
        return await self.links.offer(self._rooms[room_id], p, peer, offer)

    async def answer(
        self, room_id: str, participant_id: str, answer: dict[str, Any], peer: str = "sfu"
    ) -> None:
        """Apply the client's answer to the SFU's offer (on its link to ``peer``, for a
        mesh client); send the coalesced next offer if one is due."""
        if peer != "sfu":
            await self.links.answer(self._mesh(room_id, participant_id), peer, answer)
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
        # A participant whose connection is closing is on its way out: it gets no new m-lines
        # (aiortc would refuse them), and one the client closed is let go.
        for o in room.others(p):
            if isinstance(o, Participant) and not o.usable:
                self._spawn(self._lost(o, "closed"))
        before = set(p.live)
        for publication in p.publications.values():
            if publication.sending():
                mid = publication.transceiver.mid or ""
                publication.configure(p.transport, ssrcs.get(mid, (None, None)))
                p.live.add(publication.source)
            else:
                p.live.discard(publication.source)
        if p.live == before:
            return []
        stopped = [o for o in room.unforward(before - p.live) if o.usable]
        started = room.forward(p, p.live - before)
        self._changed(room, p)
        return [*stopped, *(o for o in started if o not in stopped)]

    async def candidate(
        self,
        room_id: str,
        participant_id: str,
        candidate: dict[str, Any] | None,
        peer: str = "sfu",
    ) -> None:
        """Add a trickled browser candidate; None or an empty one ends the candidates."""
        ice = parse_candidate(candidate)
        owner: Participant | Any
        if peer == "sfu":
            owner = self._get(room_id, participant_id)
            lock = owner.negotiator.lock
        else:
            owner = self._mesh(room_id, participant_id).links.get(peer)
            if owner is None:
                return  # a candidate of a connection already replaced: nothing to add it to
            lock = owner.lock
        async with lock:
            if owner.closed:
                return
            if ice is None:
                if owner.pc.remoteDescription is not None:
                    await owner.pc.addIceCandidate(None)
                return
            try:
                await owner.pc.addIceCandidate(ice)
            except Exception:
                raise MediaError("the candidate was refused") from None

    async def screen_share(self, room_id: str, participant_id: str, sharing: bool) -> None:
        """Offer (or recycle) the publisher's screen m-line and (un)forward it to all.

        A mesh client shares its screen in place of its camera (`replaceTrack`): nothing
        to negotiate."""
        p = self._member(room_id, participant_id)
        if not isinstance(p, Participant):
            return
        room = self._rooms[room_id]
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
        affected = room.unforward([source])
        p.live.discard(source)
        self._changed(room, p)
        self._totals.fold(source_counts([source]))
        source.close()
        if p.transport is not None:
            p.transport.remove_source(source)
        stopped.transceiver.direction = "inactive"
        await asyncio.gather(self._send_offer(p), *(self._send_offer(o) for o in affected))

    # ------------------------------------------------------------------ closing

    async def close_room(self, room_id: str) -> None:
        """Release every connection, task and track of the room."""
        room = self._rooms.get(room_id)
        if room is None:
            return
        participants = list(room.participants.values())
        room.participants.clear()
        for p in participants:
            p.closed = True
            self.pipes.drop((room_id, p.id))
        await asyncio.gather(*(self._release(room, p) for p in participants))
        self._drop_room_if_empty(room)

    async def close(self) -> None:
        """Release all rooms, pipes and background tasks."""
        for room_id in list(self._rooms):
            await self.close_room(room_id)
        self.pipes.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ pipes

    async def open_pipe(self, host: str = "127.0.0.1", advertise: str | None = None) -> Address:
        """This plane's pipe socket, for rooms spread over several workers or nodes."""
        return await self.pipes.open(host, advertise)

    def pipe_to(self, room_id: str, participant_id: str, address: Address) -> None:
        """Send the participant's tracks, from now on, down the pipe to ``address``.

        One who left meanwhile (the pool's command crossed its leave) gets no target: it
        would outlive it, and its next visit would be piped where nobody listens. A
        participant is piped again whenever it publishes."""
        room = self._rooms.get(room_id)
        if room is None or participant_id not in room.participants:
            return
        self.pipes.add_target((room_id, participant_id), (address[0], address[1]))
        self._sync_pipes(room_id, participant_id)

    def unpipe(self, room_id: str, participant_id: str, address: Address) -> None:
        self.pipes.remove_target((room_id, participant_id), (address[0], address[1]))
        self._sync_pipes(room_id, participant_id)

    def _sync_pipes(self, room_id: str, participant_id: str) -> None:
        room = self._rooms.get(room_id)
        p = room.participants.get(participant_id) if room else None
        if p is not None:
            self.pipes.sync((room_id, participant_id), tracks(p))

    async def remote_join(self, room_id: str, participant_id: str, greet: bool = True) -> None:
        """A participant whose media runs on another worker joined: mesh clients here get
        an offer as it (unless not ``greet``), and its tracks arrive later (`remote_tracks`)."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self.config.video_codec)
        if participant_id in room.participants:
            return
        remote = RemoteParticipant(room_id, participant_id, self._source_config)
        room.participants[participant_id] = remote
        if greet:
            await self.links.greet(room, remote)

    async def remote_tracks(
        self, room_id: str, participant_id: str, origin: Address, described: list[PipedSource]
    ) -> None:
        """What a remote participant publishes now, arriving by pipe from ``origin``."""
        await self.remote_join(room_id, participant_id)
        room = self._rooms[room_id]
        remote = room.participants[participant_id]
        if not isinstance(remote, RemoteParticipant) or self.pipe is None:
            raise MediaError(f"{participant_id!r} is not a remote participant here")
        before = remote.live
        stopped = remote.update(self.pipe, (origin[0], origin[1]), described)
        added = remote.live - before
        renegotiate = [o for o in room.unforward(stopped) if o.usable]
        renegotiate += [o for o in room.forward(remote, added) if o not in renegotiate]
        self._totals.fold(source_counts(stopped))
        self.links.refresh(room, remote)
        await asyncio.gather(*(self._send_offer(o) for o in renegotiate))

    # ------------------------------------------------------------------ stats

    def counters(self) -> dict[str, dict[str, int]]:
        """Prometheus counters: what live and closed participants received and forwarded."""
        members = [p for r in self._rooms.values() for p in r.participants.values()]
        live = counts_of(members)
        piped = pipe_counts(leg for legs in self.pipes.legs.values() for leg in legs.values())
        for name, by_kind in piped.items():
            for kind, value in by_kind.items():
                live[name][kind] += value
        return self._totals.with_live(live)

    def stats(self) -> dict[str, Any]:
        """Per-room and total counts (packets = RTP packets forwarded to subscribers)."""
        totals = self.counters()
        rooms = {
            room.id: room_entry(list(room.participants.values()), room.forwarded_streams())
            for room in self._rooms.values()
        }
        total = {
            "peer_connections": sum(r["peer_connections"] for r in rooms.values()),
            "forwarded_streams": sum(r["forwarded_streams"] for r in rooms.values()),
            "packets": sum(totals["forwarded_packets"].values()),
            "keyframe_requests": sum(totals["keyframe_requests"].values()),
        }
        return {"rooms": rooms, "total": total}
