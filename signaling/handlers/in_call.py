"""What participants do once in a video room (`video:` events): media flags, screen share
and the room's chat. Membership itself (joins, leaves, modes, signals) is `handlers.video`.
"""

from __future__ import annotations

from typing import Any

from signaling.domain import ChatMessage, VideoRoom
from signaling.errors import NotInRoom
from signaling.handlers.video import CHAT
from signaling.history import History
from signaling.media import MediaRouter
from signaling.membership import Membership
from signaling.models import Limits, RoomRef, ToggleAudio, ToggleVideo, VideoChat, model_parser
from signaling.ports import Conn, Emitter, Events
from signaling.store import Store


class InCall:
    def __init__(
        self,
        events: Events,
        emitter: Emitter,
        store: Store,
        history: History,
        limits: Limits,
        members: Membership[VideoRoom],
        media: MediaRouter,
        *,
        chat_history: int,
    ) -> None:
        self.emitter = emitter
        self.store = store
        self.history = history
        self.limits = limits
        self.members = members
        self.media = media
        self.chat_history = chat_history
        on = events.on
        on("video:toggle-audio", model_parser(ToggleAudio))(self.toggle_audio)
        on("video:toggle-video", model_parser(ToggleVideo))(self.toggle_video)
        on("video:start-screen-share", model_parser(RoomRef))(self.start_screen_share)
        on("video:stop-screen-share", model_parser(RoomRef))(self.stop_screen_share)
        on("video:chat", model_parser(VideoChat))(self.chat)

    async def _check(self, conn: Conn, room_id: str) -> None:
        self.limits.room_id(room_id)
        await self.members.check(conn.sid, room_id)

    async def _set_media(self, conn: Conn, room_id: str, **flags: bool) -> VideoRoom:
        await self._check(conn, room_id)
        async with self.store.edit(VideoRoom, room_id) as slot:
            room = slot.value
            if room is None:
                raise NotInRoom("not in this room")
            participant = room.set_media(conn.sid, **flags)
        await self.emitter.emit(
            "video:media-state-changed",
            participant.media_state(),
            to=[p.socketId for p in room.others(conn.sid)],
        )
        return room

    async def toggle_audio(self, conn: Conn, payload: ToggleAudio) -> dict[str, Any]:
        await self._set_media(conn, payload.roomId, is_muted=payload.isMuted)
        return {"ok": True}

    async def toggle_video(self, conn: Conn, payload: ToggleVideo) -> dict[str, Any]:
        await self._set_media(conn, payload.roomId, is_video_off=payload.isVideoOff)
        return {"ok": True}

    async def start_screen_share(self, conn: Conn, payload: RoomRef) -> dict[str, Any]:
        return await self._screen_share(conn, payload.roomId, True)

    async def stop_screen_share(self, conn: Conn, payload: RoomRef) -> dict[str, Any]:
        return await self._screen_share(conn, payload.roomId, False)

    async def _screen_share(self, conn: Conn, room_id: str, sharing: bool) -> dict[str, Any]:
        await self._set_media(conn, room_id, is_sharing_screen=sharing)
        if self.media.seated(room_id, conn.sid):  # sfu: this node's SFU renegotiates
            await self.media.screen_share(room_id, conn.sid, sharing)
        return {"ok": True}

    async def chat(self, conn: Conn, payload: VideoChat) -> dict[str, Any]:
        await self._check(conn, payload.roomId)
        content = self.limits.chat(payload.content)
        message = ChatMessage(roomId=payload.roomId, content=content, user=conn.identity.user)
        room = await self.store.load(VideoRoom, payload.roomId)
        if room is None:
            raise NotInRoom("not in this room")
        # The ack promises the message is stored; the room's live chat is in the store.
        await self.history.add_message(message, call_id=room.callId)
        await self.store.append_capped(
            CHAT, payload.roomId, message.model_dump_json(), self.chat_history
        )
        await self.emitter.emit("video:chat", message.wire(), to=list(room.participants))
        return {"ok": True, "id": message.id}
