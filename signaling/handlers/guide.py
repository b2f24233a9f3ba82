"""The guide dialect (unprefixed events, docs/protocol.md section 3): host-owned rooms, mesh
(relayed) or, with `GUIDE_ROOM_MODE=sfu`, carried by the SFU (`guide_media`)."""

from __future__ import annotations

from typing import Any

import orjson

from signaling.domain import GuideMember, GuideRoom, check_room_claim, now_iso
from signaling.errors import Forbidden, InvalidPayload, NotFound, NotInRoom, guide_ack
from signaling.handlers.guide_media import SOCKET_ROOM, GuideMedia
from signaling.hub import Conn, Hub, model_parser
from signaling.media import MediaRouter
from signaling.metrics import RELAYED, ROOM_JOINS
from signaling.models import Empty, GuideAnswer, GuideCandidate, GuideOffer

__all__ = ["SOCKET_ROOM", "GuideRooms"]


class GuideRooms:
    def __init__(self, hub: Hub, media: MediaRouter) -> None:
        self.hub = hub
        self.store = hub.store
        self.media = GuideMedia(hub, media)
        hub.on("create-room", self._room_id, ack_error=guide_ack)(self.create)
        hub.on("join-room", self._room_id, ack_error=guide_ack)(self.join)
        hub.on("leave-room", lambda _: None)(self.leave_room)
        hub.on("offer", model_parser(GuideOffer))(self.offer)
        hub.on("answer", model_parser(GuideAnswer))(self.answer)
        hub.on("ice-candidate", model_parser(GuideCandidate))(self.ice_candidate)
        hub.on_disconnect_hooks.append(self.on_disconnect)

    def _room_id(self, value: Any) -> str:
        if isinstance(value, dict):  # tolerate `{ roomId }` as the video dialect sends it
            value = value.get("roomId")
        if not isinstance(value, str) or not value.strip():
            raise InvalidPayload("room id must be a non-empty string")
        return self.hub.limits.room_id(value)

    async def _admit(self, conn: Conn, room_id: str) -> None:
        check_room_claim(conn.identity.rooms, conn.identity.role, room_id)
        if not await self.hub.membership.is_member(conn.identity, room_id=room_id):
            raise Forbidden("not a member of this room")
        (current,) = await self.store.get_index(SOCKET_ROOM, conn.sid)
        if current is not None:
            await self.leave(conn.sid, current)

    async def create(self, conn: Conn, room_id: str) -> dict[str, Any]:
        await self._admit(conn, room_id)
        node = self.media.node_for_new_room()
        async with self.store.edit(GuideRoom, room_id) as slot:
            if slot.value is not None:
                raise InvalidPayload("room already exists")
            room = slot.value = GuideRoom(
                id=room_id,
                host=conn.sid,
                members=[GuideMember(socketId=conn.sid, node=self.hub.node_id)],
                mode="mesh" if node is None else "sfu",
                mediaNode=node,
            )
        await self.store.set_index(SOCKET_ROOM, conn.sid, room_id)
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
                GuideMember(socketId=conn.sid, node=self.hub.node_id),
                self.hub.settings.max_participants,
            )
        await self.store.set_index(SOCKET_ROOM, conn.sid, room_id)
        ROOM_JOINS.labels("guide").inc()
        if room.mediaNode is not None:  # the others offer to it on `user-joined`, it on the ack
            await self.media.join(room, conn.sid)
        await self.hub.emit(
            "user-joined", {"userId": conn.sid, "timestamp": now_iso()}, to=existing
        )
        return {"success": True, "roomId": room_id, "existingUsers": existing}

    async def leave_room(self, conn: Conn, _: Empty | None) -> None:
        (current,) = await self.store.get_index(SOCKET_ROOM, conn.sid)
        if current is not None:
            await self.leave(conn.sid, current)

    async def leave(self, sid: str, room_id: str) -> None:
        """A member leaves; when the host leaves, the room closes for everyone."""
        async with self.store.edit(GuideRoom, room_id) as slot:
            room = slot.value
            if room is None or not room.leave(sid):
                room = None
            elif room.host == sid or not room.members:
                slot.value = None
        await self.store.set_index(SOCKET_ROOM, sid, None)
        if room is None:
            return
        if room.mediaNode is not None:
            if room.host == sid or not room.members:
                await self.media.closed(room)
            else:
                await self.media.leave(room, sid)
        others = room.socket_ids
        if room.host == sid:
            for other in others:
                await self.store.set_index(SOCKET_ROOM, other, None)
            await self.hub.emit(
                "room-closed",
                {
                    "reason": "host-left",
                    "message": "The host left the room",
                    "timestamp": now_iso(),
                },
                to=others,
            )
        else:
            await self.hub.emit("user-left", {"userId": sid, "timestamp": now_iso()}, to=others)

    async def close_room(self, room_id: str, reason: str) -> bool:
        async with self.store.edit(GuideRoom, room_id) as slot:
            room = slot.value
            slot.value = None
        if room is None:
            return False
        for sid in room.socket_ids:
            await self.store.set_index(SOCKET_ROOM, sid, None)
        if room.mediaNode is not None:
            await self.media.closed(room)
        await self.hub.emit(
            "room-closed",
            {"reason": reason, "message": "The room was closed", "timestamp": now_iso()},
            to=room.socket_ids,
        )
        return True

    async def on_disconnect(self, conn: Conn) -> None:
        await self.leave_room(conn, None)

    async def purge_node(self, node_id: str) -> None:
        for room in await self.store.load_all(GuideRoom):
            if room.mediaNode == node_id:
                # Its media went with the node; the guide's clients know no way to move it.
                await self.close_room(room.id, "closed-by-server")
                continue
            for member in room.members:
                if member.node == node_id:
                    await self.leave(member.socketId, room.id)

    async def _relay(self, conn: Conn, event: str, target: str, key: str, value: Any) -> None:
        try:
            encoded = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            # Binary attachments or nesting deeper than JSON encoders go: not a description.
            raise InvalidPayload(f"{key} is not plain JSON") from None
        self.hub.limits.guide_description(len(encoded))
        mine, theirs = await self.store.get_index(SOCKET_ROOM, conn.sid, target)
        if mine is None:
            raise NotInRoom("join a room first")
        if theirs != mine:
            raise NotFound("no such user in your room")
        node = await self.media.node_of(mine)
        if node is not None:
            await self.media.signal(node, mine, conn.sid, event, target, value)
            return
        RELAYED.labels(event).inc()
        await self.hub.emit(event, {"from": conn.sid, key: value}, to=target)

    async def offer(self, conn: Conn, payload: GuideOffer) -> None:
        await self._relay(conn, "offer", payload.target, "offer", payload.offer)

    async def answer(self, conn: Conn, payload: GuideAnswer) -> None:
        await self._relay(conn, "answer", payload.target, "answer", payload.answer)

    async def ice_candidate(self, conn: Conn, payload: GuideCandidate) -> None:
        await self._relay(conn, "ice-candidate", payload.target, "candidate", payload.candidate)
