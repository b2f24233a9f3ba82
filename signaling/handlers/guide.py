"""The guide dialect (unprefixed events, docs/protocol.md section 3): host-owned rooms, mesh
(relayed) or, with `GUIDE_ROOM_MODE=sfu`, carried by the SFU (`guide_media`)."""

from __future__ import annotations

from typing import Any

import orjson

from signaling.auth import MembershipChecker
from signaling.domain import GuideMember, GuideRoom, check_room_claim, now_iso
from signaling.errors import Forbidden, InvalidPayload, NotFound, NotInRoom, guide_ack
from signaling.handlers.guide_media import SOCKET_ROOM, GuideMedia
from signaling.membership import Membership
from signaling.metrics import RELAYED, ROOM_JOINS
from signaling.models import Empty, GuideAnswer, GuideCandidate, GuideOffer, Limits, model_parser
from signaling.ports import Conn, Emitter, Events
from signaling.store import Store

__all__ = ["SOCKET_ROOM", "GuideRooms"]


class GuideRooms:
    """The owner of guide rooms (their media through `GuideMedia`); the host's leave or a
    close ends the room root first: its media, then the members are told."""

    def __init__(
        self,
        events: Events,
        emitter: Emitter,
        store: Store,
        checker: MembershipChecker,
        limits: Limits,
        media: GuideMedia,
        *,
        node_id: str,
        max_participants: int,
    ) -> None:
        self.emitter = emitter
        self.store = store
        self.checker = checker
        self.limits = limits
        self.media = media
        self.node_id = node_id
        self.max_participants = max_participants
        self.members = Membership(store, GuideRoom, _members, self.leave, index=SOCKET_ROOM)
        events.on("create-room", self._room_id, ack_error=guide_ack)(self.create)
        events.on("join-room", self._room_id, ack_error=guide_ack)(self.join)
        events.on("leave-room", lambda _: None)(self.leave_room)
        events.on("offer", model_parser(GuideOffer))(self.offer)
        events.on("answer", model_parser(GuideAnswer))(self.answer)
        events.on("ice-candidate", model_parser(GuideCandidate))(self.ice_candidate)

    def _room_id(self, value: Any) -> str:
        if isinstance(value, dict):  # tolerate `{ roomId }` as the video dialect sends it
            value = value.get("roomId")
        if not isinstance(value, str) or not value.strip():
            raise InvalidPayload("room id must be a non-empty string")
        return self.limits.room_id(value)

    async def _admit(self, conn: Conn, room_id: str) -> None:
        check_room_claim(conn.identity.rooms, conn.identity.role, room_id)
        if not await self.checker.is_member(conn.identity, room_id=room_id):
            raise Forbidden("not a member of this room")
        await self.members.leave(conn.sid)

    async def create(self, conn: Conn, room_id: str) -> dict[str, Any]:
        await self._admit(conn, room_id)
        node = self.media.node_for_new_room()
        async with self.store.edit(GuideRoom, room_id) as slot:
            if slot.value is not None:
                raise InvalidPayload("room already exists")
            room = slot.value = GuideRoom(
                id=room_id,
                host=conn.sid,
                members=[GuideMember(socketId=conn.sid, node=self.node_id)],
                mode="mesh" if node is None else "sfu",
                mediaNode=node,
            )
        await self.members.enter(conn.sid, room_id)
        if room.mediaNode is not None:
            await self.media.opened(room)
        ROOM_JOINS.labels("guide").inc()
        return {"success": True, "roomId": room_id}

    async def join(self, conn: Conn, room_id: str) -> dict[str, Any]:
        await self._admit(conn, room_id)
        async with self.store.edit(GuideRoom, room_id) as slot:
            room = slot.value
            if room is None:
                raise NotFound("room does not exist")
            existing = room.join(
                GuideMember(socketId=conn.sid, node=self.node_id), self.max_participants
            )
        await self.members.enter(conn.sid, room_id)
        ROOM_JOINS.labels("guide").inc()
        if room.mediaNode is not None:  # the others offer to it on `user-joined`, it on the ack
            await self.media.join(room, conn.sid)
        await self.emitter.emit(
            "user-joined", {"userId": conn.sid, "timestamp": now_iso()}, to=existing
        )
        return {"success": True, "roomId": room_id, "existingUsers": existing}

    async def leave_room(self, conn: Conn, _: Empty | None) -> None:
        await self.members.leave(conn.sid)

    async def leave(self, sid: str, room_id: str) -> None:
        """A member leaves; when the host leaves, the room closes for everyone."""
        async with self.store.edit(GuideRoom, room_id) as slot:
            room = slot.value
            if room is None or not room.leave(sid):
                room = None
            elif room.host == sid or not room.members:
                slot.value = None
        await self.members.forget([sid], room_id)
        if room is None:
            return
        if room.mediaNode is not None:
            if room.host == sid or not room.members:
                await self.media.closed(room)
            else:
                await self.media.leave(room, sid)
        others = room.socket_ids
        if room.host == sid:
            await self.members.forget(others, room_id)
            await self.emitter.emit(
                "room-closed",
                {
                    "reason": "host-left",
                    "message": "The host left the room",
                    "timestamp": now_iso(),
                },
                to=others,
            )
        else:
            await self.emitter.emit("user-left", {"userId": sid, "timestamp": now_iso()}, to=others)

    async def close_room(self, room_id: str, reason: str) -> bool:
        async with self.store.edit(GuideRoom, room_id) as slot:
            room = slot.value
            slot.value = None
        if room is None:
            return False
        await self.members.forget(room.socket_ids, room_id)
        if room.mediaNode is not None:
            await self.media.closed(room)
        await self.emitter.emit(
            "room-closed",
            {"reason": reason, "message": "The room was closed", "timestamp": now_iso()},
            to=room.socket_ids,
        )
        return True

    async def on_disconnect(self, conn: Conn) -> None:
        await self.members.leave(conn.sid)

    async def purge_node(self, node_id: str) -> None:
        for room in await self.store.load_all(GuideRoom):
            if room.mediaNode == node_id:
                # Its media went with the node; the guide's clients know no way to move it.
                await self.close_room(room.id, "closed-by-server")
        await self.members.purge_node(node_id)

    async def _relay(self, conn: Conn, event: str, target: str, key: str, value: Any) -> None:
        try:
            encoded = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            # Binary attachments or nesting deeper than JSON encoders go: not a description.
            raise InvalidPayload(f"{key} is not plain JSON") from None
        self.limits.guide_description(len(encoded))
        mine, shared = await self.members.peers(conn.sid, target)
        if mine is None:
            raise NotInRoom("join a room first")
        if not shared:
            raise NotFound("no such user in your room")
        node = await self.media.node_of(mine)
        if node is not None:
            await self.media.signal(node, mine, conn.sid, event, target, value)
            return
        RELAYED.labels(event).inc()
        await self.emitter.emit(event, {"from": conn.sid, key: value}, to=target)

    async def offer(self, conn: Conn, payload: GuideOffer) -> None:
        await self._relay(conn, "offer", payload.target, "offer", payload.offer)

    async def answer(self, conn: Conn, payload: GuideAnswer) -> None:
        await self._relay(conn, "answer", payload.target, "answer", payload.answer)

    async def ice_candidate(self, conn: Conn, payload: GuideCandidate) -> None:
        await self._relay(conn, "ice-candidate", payload.target, "candidate", payload.candidate)


def _members(room: GuideRoom) -> list[tuple[str, str]]:
    return [(m.socketId, m.node) for m in room.members]
