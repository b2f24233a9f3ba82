"""Studies (docs/protocol.md section 4): presence, study chat and its history, typing, receipts."""

from __future__ import annotations

from typing import Any

from signaling.auth import MembershipChecker
from signaling.domain import ChatMessage, Study, StudyMember
from signaling.errors import Forbidden, NotFound, NotInRoom
from signaling.history import History
from signaling.membership import Membership
from signaling.models import Limits, ReadReceipt, StudyMessage, StudyRef, model_parser
from signaling.ports import Conn, Emitter, Events, Groups
from signaling.store import Store


def study_room(study_id: str) -> str:
    return f"study:{study_id}"


class Studies:
    """Study rooms; a socket may be in several (its node alone keeps which: `members`)."""

    def __init__(
        self,
        events: Events,
        emitter: Emitter,
        groups: Groups,
        store: Store,
        history: History,
        checker: MembershipChecker,
        limits: Limits,
        *,
        node_id: str,
        chat_history: int,
    ) -> None:
        self.emitter = emitter
        self.groups = groups
        self.store = store
        self.history = history
        self.checker = checker
        self.limits = limits
        self.node_id = node_id
        self.chat_history = chat_history
        self.members = Membership(store, Study, _members, self.leave, index=None)
        # Documents 000 and 003 name the same events with and without the `presence:` prefix.
        for name in ("presence:join-study", "join-study"):
            events.on(name, model_parser(StudyRef))(self.join)
        for name in ("presence:leave-study", "leave-study"):
            events.on(name, model_parser(StudyRef))(self.leave_study)
        events.on("message", model_parser(StudyMessage))(self.message)
        events.on("typing", model_parser(StudyRef))(self.typing)
        events.on("read", model_parser(ReadReceipt))(self.read)

    async def _emit_both(self, name: str, data: Any, to: list[str] | str) -> None:
        await self.emitter.emit(f"presence:{name}", data, to=to)
        await self.emitter.emit(name, data, to=to)

    async def join(self, conn: Conn, payload: StudyRef) -> dict[str, Any]:
        study_id = payload.studyId
        if not await self.checker.is_member(conn.identity, study_id=study_id):
            raise Forbidden("not a member of this study")
        user = conn.identity.user
        member = StudyMember(socketId=conn.sid, userId=user.id, user=user, node=self.node_id)
        async with self.store.edit(Study, study_id) as slot:
            study = slot.value or Study(id=study_id)
            already = conn.sid in study.members
            came_online = study.join(member)
            slot.value = study
        await self.members.enter(conn.sid, study_id)
        others = [sid for sid in study.members if sid != conn.sid]
        await self.groups.enter_group(conn.sid, study_room(study_id))
        if came_online and not already:
            await self._emit_both(
                "user-online", {"userId": user.id, "user": user.model_dump()}, others
            )
            await self.emitter.emit(
                "member-joined",
                {"studyId": study_id, "userId": user.id, "userName": user.name},
                to=others,
            )
        history = [
            m.wire() for m in await self.history.recent_messages(study_id, self.chat_history)
        ]
        await self.emitter.emit(
            "chat-history", {"studyId": study_id, "messages": history}, to=conn.sid
        )
        return {
            "ok": True,
            "studyId": study_id,
            "online": [u.model_dump() for u in study.online_users()],
            "messages": history,
        }

    async def leave_study(self, conn: Conn, payload: StudyRef) -> dict[str, Any]:
        if not self.members.holds(conn.sid, payload.studyId):
            raise NotInRoom("not in this study")
        await self.leave(conn.sid, payload.studyId)
        await self.groups.leave_group(conn.sid, study_room(payload.studyId))
        return {"ok": True}

    async def leave(self, sid: str, study_id: str) -> None:
        async with self.store.edit(Study, study_id) as slot:
            study = slot.value
            gone = study.leave(sid) if study is not None else None
            if study is not None and study.empty:
                slot.value = None
        await self.members.forget([sid], study_id)
        if study is None or gone is None:
            return
        remaining = list(study.members)
        await self._emit_both("user-offline", {"userId": gone.userId}, remaining)
        await self.emitter.emit(
            "member-left", {"studyId": study_id, "userId": gone.userId}, to=remaining
        )

    async def on_disconnect(self, conn: Conn) -> None:
        await self.members.leave(conn.sid)

    async def purge_node(self, node_id: str) -> None:
        await self.members.purge_node(node_id)

    def _member_of(self, conn: Conn, study_id: str) -> None:
        if not self.members.holds(conn.sid, study_id):
            raise NotInRoom("join the study first")

    async def message(self, conn: Conn, payload: StudyMessage) -> dict[str, Any]:
        self._member_of(conn, payload.studyId)
        content = self.limits.chat(payload.content)
        message = ChatMessage(
            studyId=payload.studyId, content=content, fileId=payload.fileId, user=conn.identity.user
        )
        await self.history.add_message(message)  # the ack promises it is stored
        await self.emitter.emit_group("message", message.wire(), study_room(payload.studyId))
        return {"ok": True, "id": message.id}

    async def typing(self, conn: Conn, payload: StudyRef) -> None:
        self._member_of(conn, payload.studyId)
        user = conn.identity.user
        await self.emitter.emit_group(
            "typing",
            {"userId": user.id, "userName": user.name, "studyId": payload.studyId},
            study_room(payload.studyId),
            skip=conn.sid,
        )

    async def read(self, conn: Conn, payload: ReadReceipt) -> dict[str, Any]:
        studies = await self.members.rooms_of(conn.sid)
        candidates = [payload.studyId] if payload.studyId else studies
        for study_id in candidates:
            if study_id not in studies:
                raise NotInRoom("join the study first")
            if await self.history.has_message(study_id, payload.messageId):
                await self.history.mark_read(payload.messageId, conn.user_id)
                await self.emitter.emit_group(
                    "read",
                    {"messageId": payload.messageId, "userId": conn.user_id, "studyId": study_id},
                    study_room(study_id),
                )
                return {"ok": True}
        raise NotFound("no such message in your studies")


def _members(study: Study) -> list[tuple[str, str]]:
    return [(m.socketId, m.node) for m in study.members.values()]
