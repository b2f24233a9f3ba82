"""Studies (docs/protocol.md section 4): presence, study chat and its history, typing, receipts."""

from __future__ import annotations

from typing import Any

from signaling.domain import ChatMessage, Study, StudyMember
from signaling.errors import Forbidden, NotFound, NotInRoom
from signaling.history import History
from signaling.hub import Conn, Hub, model_parser
from signaling.models import ReadReceipt, StudyMessage, StudyRef


def study_room(study_id: str) -> str:
    return f"study:{study_id}"


class Studies:
    def __init__(self, hub: Hub, history: History) -> None:
        self.hub = hub
        self.store = hub.store
        self.history = history
        # Documents 000 and 003 name the same events with and without the `presence:` prefix.
        for name in ("presence:join-study", "join-study"):
            hub.on(name, model_parser(StudyRef))(self.join)
        for name in ("presence:leave-study", "leave-study"):
            hub.on(name, model_parser(StudyRef))(self.leave_study)
        hub.on("message", model_parser(StudyMessage))(self.message)
        hub.on("typing", model_parser(StudyRef))(self.typing)
        hub.on("read", model_parser(ReadReceipt))(self.read)
        hub.on_disconnect_hooks.append(self.on_disconnect)
        self.joined: dict[str, set[str]] = {}  # local socket -> studies, for disconnects

    async def _emit_both(self, name: str, data: Any, to: list[str] | str) -> None:
        await self.hub.emit(f"presence:{name}", data, to=to)
        await self.hub.emit(name, data, to=to)

    async def join(self, conn: Conn, payload: StudyRef) -> dict[str, Any]:
        study_id = payload.studyId
        if not await self.hub.membership.is_member(conn.identity, study_id=study_id):
            raise Forbidden("not a member of this study")
        user = conn.identity.user
        member = StudyMember(socketId=conn.sid, userId=user.id, user=user, node=self.hub.node_id)
        async with self.store.edit(Study, study_id) as slot:
            study = slot.value or Study(id=study_id)
            already = conn.sid in study.members
            came_online = study.join(member)
            slot.value = study
        self.joined.setdefault(conn.sid, set()).add(study_id)
        others = [sid for sid in study.members if sid != conn.sid]
        await self.hub.sio.enter_room(conn.sid, study_room(study_id))
        if came_online and not already:
            await self._emit_both(
                "user-online", {"userId": user.id, "user": user.model_dump()}, others
            )
            await self.hub.emit(
                "member-joined",
                {"studyId": study_id, "userId": user.id, "userName": user.name},
                to=others,
            )
        history = [
            m.wire()
            for m in await self.history.recent_messages(study_id, self.hub.settings.chat_history)
        ]
        await self.hub.emit("chat-history", {"studyId": study_id, "messages": history}, to=conn.sid)
        return {
            "ok": True,
            "studyId": study_id,
            "online": [u.model_dump() for u in study.online_users()],
            "messages": history,
        }

    async def leave_study(self, conn: Conn, payload: StudyRef) -> dict[str, Any]:
        if payload.studyId not in self.joined.get(conn.sid, set()):
            raise NotInRoom("not in this study")
        await self.leave(conn.sid, payload.studyId)
        await self.hub.sio.leave_room(conn.sid, study_room(payload.studyId))
        return {"ok": True}

    async def leave(self, sid: str, study_id: str) -> None:
        async with self.store.edit(Study, study_id) as slot:
            study = slot.value
            gone = study.leave(sid) if study is not None else None
            if study is not None and study.empty:
                slot.value = None
        studies = self.joined.get(sid)
        if studies is not None:
            studies.discard(study_id)
            if not studies:
                del self.joined[sid]
        if study is None or gone is None:
            return
        remaining = list(study.members)
        await self._emit_both("user-offline", {"userId": gone.userId}, remaining)
        await self.hub.emit(
            "member-left", {"studyId": study_id, "userId": gone.userId}, to=remaining
        )

    async def on_disconnect(self, conn: Conn) -> None:
        for study_id in list(self.joined.get(conn.sid, ())):
            await self.leave(conn.sid, study_id)

    async def purge_node(self, node_id: str) -> None:
        for study in await self.store.load_all(Study):
            for member in list(study.members.values()):
                if member.node == node_id:
                    await self.leave(member.socketId, study.id)

    def _member_of(self, conn: Conn, study_id: str) -> None:
        if study_id not in self.joined.get(conn.sid, set()):
            raise NotInRoom("join the study first")

    async def message(self, conn: Conn, payload: StudyMessage) -> dict[str, Any]:
        self._member_of(conn, payload.studyId)
        content = self.hub.limits.chat(payload.content)
        message = ChatMessage(
            studyId=payload.studyId, content=content, fileId=payload.fileId, user=conn.identity.user
        )
        await self.history.add_message(message)  # the ack promises it is stored
        await self.hub.sio.emit("message", message.wire(), to=study_room(payload.studyId))
        return {"ok": True, "id": message.id}

    async def typing(self, conn: Conn, payload: StudyRef) -> None:
        self._member_of(conn, payload.studyId)
        user = conn.identity.user
        await self.hub.sio.emit(
            "typing",
            {"userId": user.id, "userName": user.name, "studyId": payload.studyId},
            to=study_room(payload.studyId),
            skip_sid=conn.sid,
        )

    async def read(self, conn: Conn, payload: ReadReceipt) -> dict[str, Any]:
        studies = self.joined.get(conn.sid, set())
        candidates = [payload.studyId] if payload.studyId else sorted(studies)
        for study_id in candidates:
            if study_id not in studies:
                raise NotInRoom("join the study first")
            if await self.history.has_message(study_id, payload.messageId):
                await self.history.mark_read(payload.messageId, conn.user_id)
                await self.hub.sio.emit(
                    "read",
                    {"messageId": payload.messageId, "userId": conn.user_id, "studyId": study_id},
                    to=study_room(study_id),
                )
                return {"ok": True}
        raise NotFound("no such message in your studies")
