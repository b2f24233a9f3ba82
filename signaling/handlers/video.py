"""Video rooms (`video:` events): membership, modes, mesh relay, the SFU edge.

Media flags, screen share and chat are `handlers.in_call`; call history `handlers.calls`.
"""

from __future__ import annotations

import logging
from typing import Any

from signaling.auth import MembershipChecker
from signaling.config import Settings
from signaling.domain import (
    ChatMessage,
    ModeChange,
    Participant,
    Policy,
    VideoRoom,
    check_room_claim,
)
from signaling.errors import Forbidden, InvalidPayload, NotFound, NotInRoom
from signaling.handlers.calls import record_join, record_leave
from signaling.history import History, utcnow
from signaling.media import SFU, MediaRouter, Seat
from signaling.membership import Membership
from signaling.metrics import MODE_SWITCHES, RELAYED, ROOM_JOINS
from signaling.models import Answer, IceCandidate, JoinRoom, Limits, Offer, RoomRef, model_parser
from signaling.ports import Conn, Emitter, Events
from signaling.store import Store

log = logging.getLogger(__name__)

RELAYED_OFFER = RELAYED.labels("video:offer")
RELAYED_ANSWER = RELAYED.labels("video:answer")
RELAYED_ICE_CANDIDATE = RELAYED.labels("video:ice-candidate")

SOCKET_ROOM = "video-sock"  # index: socket id -> video room id
CHAT = "video-chat"


class VideoRooms:
    """The owner of video rooms: who is in each, its mode, its media, and its close.

    A room closes root first: its media once (`MediaRouter.close_room`: the SFU drops every
    participant's connection together, on every node, as mediasoup's router closes its
    transports), then the participants are told; nobody is renegotiated on the way.
    """

    def __init__(
        self,
        events: Events,
        emitter: Emitter,
        store: Store,
        history: History,
        checker: MembershipChecker,
        limits: Limits,
        media: MediaRouter,
        settings: Settings,
        node_id: str,
    ) -> None:
        self.emitter = emitter
        self.store = store
        self.history = history
        self.checker = checker
        self.limits = limits
        self.media = media
        self.settings = settings
        self.node_id = node_id
        self.members = Membership(store, VideoRoom, _members, self.leave, index=SOCKET_ROOM)
        on = events.on
        on("video:join-room", model_parser(JoinRoom))(self.join)
        on("video:leave-room", model_parser(RoomRef))(self.leave_room)
        on("video:offer", model_parser(Offer))(self.offer)
        on("video:answer", model_parser(Answer))(self.answer)
        on("video:ice-candidate", model_parser(IceCandidate))(self.ice_candidate)

    # -- membership -------------------------------------------------------------------------

    async def join(self, conn: Conn, payload: JoinRoom) -> dict[str, Any]:
        room_id = self.limits.room_id(payload.roomId)
        check_room_claim(conn.identity.rooms, conn.identity.role, room_id)
        if not await self.checker.is_member(
            conn.identity, room_id=room_id, study_id=payload.studyId
        ):
            raise Forbidden("not a member of this room")
        await self.members.leave(conn.sid, keep=room_id)
        return await self.enter(conn.sid, conn, room_id, payload.studyId, sfu=payload.sfu)

    async def enter(
        self,
        sid: str,
        conn: Conn | None,
        room_id: str,
        study_id: str | None = None,
        *,
        participant: Participant | None = None,
        policy: Policy | None = None,
        sfu: bool = False,
    ) -> dict[str, Any]:
        """Puts a socket in a room and tells everyone; used by joins and by pairing."""
        settings = self.settings
        if participant is None:
            assert conn is not None
            participant = Participant(
                socketId=sid,
                userId=conn.user_id,
                user=conn.identity.user,
                node=self.node_id,
                sfu=sfu,
            )
        async with self.store.edit(VideoRoom, room_id) as slot:
            opened = slot.value is None
            room = slot.value or VideoRoom.open(
                room_id,
                policy or settings.room_mode,
                settings.mesh_max,
                study_id,
            )
            rejoin = sid in room.participants
            change = room.join(participant, settings.max_participants)
            slot.value = room
        record_join(self.history, room, participant, opened, rejoin, change)
        await self.members.enter(sid, room_id)
        ROOM_JOINS.labels("video").inc()
        other_ids = [p.socketId for p in room.others(sid)]
        if not rejoin:
            await self._emit_joined(participant, other_ids)
        if change is not None:
            await self._announce_mode(room, change, other_ids)
        # Its media runs on this node, which holds its socket (pairing may enter a socket of
        # another node, but only into mesh rooms).
        media = room.mode == "sfu" and self.media.available and participant.node == self.node_id
        if media and not participant.sfu:
            # A mesh client offers to everyone as soon as it has the room state: the SFU
            # must know it first. (A rejoin gets fresh connections too.)
            await self.media.join(room.id, sid, Seat(mesh=True))
        others = await self._send_room_state(room, sid)
        if media and participant.sfu:
            # The SFU's offer follows the room state, which the client builds its call on.
            await self.media.join(room.id, sid)
        return {"ok": True, "mode": room.mode, "self": sid, "participants": others}

    async def leave_room(self, conn: Conn, payload: RoomRef) -> dict[str, Any]:
        room_id = await self._checked_room(conn, payload.roomId)
        await self.leave(conn.sid, room_id)
        return {"ok": True}

    async def leave(self, sid: str, room_id: str, *, media: bool = True) -> None:
        """Takes a socket out of a room; the others get `video:user-left`.

        ``media=False``: its node is dead, its media went with it (`purge_node`)."""
        async with self.store.edit(VideoRoom, room_id) as slot:
            room = slot.value
            was_sfu = room is not None and room.mode == "sfu" and self.media.available
            if room is None:
                participant, change = None, None
            else:
                participant, change = room.leave(sid)
                slot.value = None if room.empty else room
        await self.members.forget([sid], room_id)
        if room is None or participant is None:
            return
        record_leave(self.history, room, sid, change)
        remaining = [p.socketId for p in room.participants.values()]
        await self._emit_left(participant, remaining)
        if room.empty:
            await self.store.delete_list(CHAT, room_id)
            if was_sfu:
                await self.media.close_room(room_id, room.callId)
        elif change is not None:
            await self._announce_mode(room, change, remaining, media_was_on=was_sfu)
        elif was_sfu and media:
            await self.media.leave(room_id, sid, participant.node)

    async def on_disconnect(self, conn: Conn) -> None:
        await self.members.leave(conn.sid)

    async def close_room(self, room_id: str, reason: str) -> bool:
        """Closes a room for everyone (HTTP API), root first; True when it existed."""
        async with self.store.edit(VideoRoom, room_id) as slot:
            room = slot.value
            slot.value = None
        if room is None:
            return False
        sids = list(room.participants)
        self.history.call_ended(room.callId, utcnow())
        await self.members.forget(sids, room_id)
        await self.store.delete_list(CHAT, room_id)
        if room.mode == "sfu" and self.media.available:
            await self.media.close_room(room_id, room.callId)  # on every node, once
        await self.emitter.emit("video:room-closed", {"roomId": room_id, "reason": reason}, to=sids)
        return True

    async def purge_node(self, node_id: str) -> None:
        """A dead node's participants leave every room; every node's media drops them and
        its pipes (the survivors keep their own media)."""
        await self.media.node_gone(node_id)
        await self.members.purge_node(node_id, lambda sid, room: self.leave(sid, room, media=False))

    async def _checked_room(self, conn: Conn, room_id: str) -> str:
        """The room id, once it is valid and the socket is in that room."""
        self.limits.room_id(room_id)
        await self.members.check(conn.sid, room_id)
        return room_id

    # -- topology -----------------------------------------------------------------------------

    async def _announce_mode(
        self,
        room: VideoRoom,
        change: ModeChange,
        to: list[str],
        media_was_on: bool = False,
    ) -> None:
        """Tells ``to`` (everyone but a newcomer) of the switch and moves their media.

        SFU-aware clients follow `video:mode-changed`. A mesh client knows no such event, so
        it is shown the switch the way its code understands: every peer leaves and joins
        again (it closes its connection to each), then the new connections are offered.
        """
        MODE_SWITCHES.labels(change.current).inc()
        log.info("room %s switches %s -> %s", room.id, change.previous, change.current)
        if change.current == "mesh" and media_was_on:
            # Root first: the media (on every node), then people.
            await self.media.close_room(room.id, room.callId)
        mesh_clients = [room.participants[sid] for sid in to if not room.participants[sid].sfu]
        for client in mesh_clients:
            peers = [room.participants[sid] for sid in to if sid != client.socketId]
            for peer in peers:
                await self._emit_left(peer, client.socketId)
            if change.current == "sfu":
                for peer in peers:  # back in its list: the SFU connects it to them
                    await self._emit_joined(peer, client.socketId)
        await self.emitter.emit(
            "video:mode-changed", {"roomId": room.id, "mode": change.current}, to=to
        )
        if change.current == "mesh":
            for client in mesh_clients:
                await self._rebuild_mesh(room, client, to)
            return
        if not self.media.available:
            return
        # SFU-aware first, then mesh clients: the SFU offers to each mesh client as everyone
        # already in its room, so each pair gets exactly one connection. Each is seated on
        # the node that holds its socket.
        seated = [room.participants[sid] for sid in to]
        seated.sort(key=lambda p: not p.sfu)
        await self.media.join_all(room.id, [(p.socketId, p.node, not p.sfu) for p in seated])

    async def _rebuild_mesh(self, room: VideoRoom, client: Participant, among: list[str]) -> None:
        """Back in mesh, a mesh client gets its peers again; in each pair the lower socket id
        offers (as the web client does after a switch): to make a mesh client offer, it is
        sent the room state listing whom it offers to (its joiner's flow)."""
        peers = [room.participants[sid] for sid in among if sid != client.socketId]
        offers_to = [p for p in peers if client.socketId < p.socketId]
        if offers_to:
            await self._send_room_state(room, client.socketId, offers_to)
        for peer in peers:
            if peer not in offers_to:
                await self._emit_joined(peer, client.socketId)

    async def _send_room_state(
        self, room: VideoRoom, sid: str, listed: list[Participant] | None = None
    ) -> list[dict[str, Any]]:
        participants = [p.wire() for p in (room.others(sid) if listed is None else listed)]
        history = await self.store.read_list(CHAT, room.id)
        await self.emitter.emit(
            "video:room-state",
            {
                "roomId": room.id,
                "mode": room.mode,
                "self": sid,
                "participants": participants,
                "iceServers": self.settings.ice_servers,
                "chat": [ChatMessage.model_validate_json(m).wire() for m in history],
            },
            to=sid,
        )
        return participants

    async def _emit_joined(self, p: Participant, to: str | list[str]) -> None:
        joined = {"socketId": p.socketId, "userId": p.userId, "user": p.user.model_dump()}
        await self.emitter.emit("video:user-joined", joined, to=to)

    async def _emit_left(self, p: Participant, to: str | list[str]) -> None:
        await self.emitter.emit(
            "video:user-left", {"socketId": p.socketId, "userId": p.userId}, to=to
        )

    async def wants_media(self, room_id: str, sid: str) -> bool:
        """Whether ``sid`` still belongs to sfu room ``room_id`` (`MediaRouter`'s check)."""
        current = await self.members.room_of(sid)
        room = await self.store.load(VideoRoom, room_id) if current == room_id else None
        return room is not None and room.mode == "sfu" and sid in room.participants

    async def peer_replaced(self, room_id: str, sid: str, peer: str) -> None:
        """The SFU offers mesh client ``sid`` a fresh connection to ``peer`` (its upload
        moves there): shown as ``peer`` leaving and joining again, the documents' client
        closes the connection it holds (it would keep it, and that connection's stale
        `failed` handler would later take the new one out of its map)."""
        room = await self.store.load(VideoRoom, room_id)
        p = room.participants.get(peer) if room is not None else None
        if p is not None:
            await self._emit_left(p, sid)
            await self._emit_joined(p, sid)

    async def call_of(self, room_id: str) -> str | None:
        """The room's current call (a room closed on one node and opened again is another)."""
        room = await self.store.load(VideoRoom, room_id)
        return room.callId if room is not None else None

    # -- signals ---------------------------------------------------------------------------------

    async def _destination(self, conn: Conn, to: str) -> tuple[str, bool]:
        """The sender's room, and whether its signals go to this node's SFU.

        In an sfu room every signal goes to the SFU: an SFU-aware client's (``to`` "sfu"),
        and a mesh client's to a participant, which the SFU plays. Only mesh rooms relay.
        A sender has a seat in this node's media exactly while its room is sfu (seated on
        joining or on the switch, unseated on leaving, closing, or the switch back), so the
        room's mode costs no read of the store.
        """
        mine, shared = await self.members.peers(conn.sid, to)
        if mine is None:
            raise NotInRoom("join a video room first")
        if to != SFU and not shared:
            raise NotFound("no such participant in your room")
        sfu = self.media.seated(mine, conn.sid)
        if to == SFU and not sfu:
            raise NotFound("this room has no SFU peer")
        return mine, sfu

    async def offer(self, conn: Conn, payload: Offer) -> None:
        self.limits.sdp(payload.offer)
        if payload.to == SFU:
            await self._destination(conn, payload.to)
            raise InvalidPayload("the SFU makes the offers; answer them instead")
        room_id, sfu = await self._destination(conn, payload.to)
        if sfu:
            if payload.offer.type != "offer":
                raise InvalidPayload("offer.type must be 'offer'")
            await self.media.offer(room_id, conn.sid, payload.to, payload.offer.sdp)
            return
        RELAYED_OFFER.inc()
        await self.emitter.emit(
            "video:offer", {"from": conn.sid, "offer": payload.verbatim("offer")}, to=payload.to
        )

    async def answer(self, conn: Conn, payload: Answer) -> None:
        self.limits.sdp(payload.answer)
        room_id, sfu = await self._destination(conn, payload.to)
        if sfu:
            if payload.answer.type != "answer":
                raise InvalidPayload("answer.type must be 'answer'")
            await self.media.answer(room_id, conn.sid, payload.to, payload.answer.sdp)
            return
        RELAYED_ANSWER.inc()
        await self.emitter.emit(
            "video:answer", {"from": conn.sid, "answer": payload.verbatim("answer")}, to=payload.to
        )

    async def ice_candidate(self, conn: Conn, payload: IceCandidate) -> None:
        room_id, sfu = await self._destination(conn, payload.to)
        if sfu:
            candidate = payload.candidate.wire() if payload.candidate is not None else None
            await self.media.candidate(room_id, conn.sid, payload.to, candidate)
            return
        RELAYED_ICE_CANDIDATE.inc()
        await self.emitter.emit(
            "video:ice-candidate",
            {"from": conn.sid, "candidate": payload.verbatim("candidate")},
            to=payload.to,
        )


def _members(room: VideoRoom) -> list[tuple[str, str]]:
    return [(p.socketId, p.node) for p in room.participants.values()]
