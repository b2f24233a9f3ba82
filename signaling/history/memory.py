"""`DATABASE_URL=memory`: the history of a throwaway run, gone with the process.

Study chat stays where it always was, in the store's bounded lists (shared by every node when
the store is Redis); read marks, notifications and call history live in this process, bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from signaling.domain import ChatMessage, Notification, Topology, User
from signaling.errors import NotFound
from signaling.history.base import (
    CallRecord,
    History,
    MessagePage,
    ModeRecord,
    ParticipantRecord,
    parse_iso,
    utcnow,
)
from signaling.store.base import Store

STUDY_CHAT = "study-chat"
MAX_NOTIFICATIONS = 10_000
MAX_CALLS = 10_000


class MemoryHistory(History):
    name = "memory"

    def __init__(self, store: Store, chat_cap: int) -> None:
        self.store = store
        self.chat_cap = chat_cap
        self._reads: dict[str, dict[str, datetime]] = {}
        self._notes: OrderedDict[str, tuple[Notification, bool, bool]] = OrderedDict()
        """id -> (notification, delivered, read), oldest first"""
        self._calls: OrderedDict[str, CallRecord] = OrderedDict()

    async def close(self) -> None:
        """Nothing to flush."""

    # -- chat -----------------------------------------------------------------------------------

    async def add_message(self, message: ChatMessage, call_id: str | None = None) -> None:
        if message.studyId is None:
            call = self._calls.get(call_id or "")
            if call is not None:
                call.chat.append(message)
                del call.chat[: -self.chat_cap]
            return
        await self.store.append_capped(
            STUDY_CHAT, message.studyId, message.model_dump_json(), self.chat_cap
        )

    async def _study(self, study_id: str) -> list[ChatMessage]:
        raw = await self.store.read_list(STUDY_CHAT, study_id)
        return [ChatMessage.model_validate_json(item) for item in raw]

    async def recent_messages(self, study_id: str, limit: int) -> list[ChatMessage]:
        return (await self._study(study_id))[-limit:]

    async def study_messages(self, study_id: str, before: str | None, limit: int) -> MessagePage:
        kept = await self._study(study_id)
        end = len(kept)
        if before is not None:
            end = next((i for i, m in enumerate(kept) if m.id == before), -1)
            if end < 0:
                raise NotFound("no such message in this study")
        page = kept[max(0, end - limit) : end]
        read_by = {m.id: list(self._reads[m.id]) for m in page if m.id in self._reads}
        return MessagePage(page, has_more=end - limit > 0, read_by=read_by)

    async def has_message(self, study_id: str, message_id: str) -> bool:
        return any(m.id == message_id for m in await self._study(study_id))

    async def mark_read(self, message_id: str, user_id: str) -> None:
        self._reads.setdefault(message_id, {}).setdefault(user_id, utcnow())
        while len(self._reads) > MAX_NOTIFICATIONS:
            self._reads.pop(next(iter(self._reads)))

    # -- notifications --------------------------------------------------------------------------

    async def add_notification(self, note: Notification, delivered: bool) -> None:
        self._notes[note.id] = (note, delivered, False)
        while len(self._notes) > MAX_NOTIFICATIONS:
            self._notes.popitem(last=False)

    async def claim(self, notification_id: str) -> bool:
        entry = self._notes.get(notification_id)
        if entry is None or entry[1]:
            return False
        self._notes[notification_id] = (entry[0], True, entry[2])
        return True

    async def claim_undelivered(self, user_id: str, limit: int) -> list[Notification]:
        claimed: list[Notification] = []
        for note_id, (note, delivered, read) in list(self._notes.items()):
            if len(claimed) >= limit:
                break
            if note.userId == user_id and not delivered:
                self._notes[note_id] = (note, True, read)
                claimed.append(note)
        return claimed

    async def mark_notification_read(self, notification_id: str, user_id: str) -> bool:
        entry = self._notes.get(notification_id)
        if entry is None or entry[0].userId != user_id:
            return False
        self._notes[notification_id] = (entry[0], True, True)
        return True

    # -- call history ---------------------------------------------------------------------------

    def call_started(
        self, call_id: str, room_id: str, study_id: str | None, mode: Topology, at: datetime
    ) -> None:
        self._calls[call_id] = CallRecord(
            call_id, room_id, study_id, at, None, [ModeRecord(mode, at)]
        )
        while len(self._calls) > MAX_CALLS:
            self._calls.popitem(last=False)

    def participant_joined(self, call_id: str, socket_id: str, user: User, at: datetime) -> None:
        call = self._calls.get(call_id)
        if call is not None:
            call.participants.append(ParticipantRecord(socket_id, user.id, user.name, at))

    def participant_left(self, call_id: str, socket_id: str, at: datetime) -> None:
        call = self._calls.get(call_id)
        for participant in call.participants if call is not None else ():
            if participant.socket_id == socket_id and participant.left_at is None:
                participant.left_at = at

    def mode_changed(self, call_id: str, mode: Topology, at: datetime) -> None:
        call = self._calls.get(call_id)
        if call is not None:
            call.modes.append(ModeRecord(mode, at))

    def call_ended(self, call_id: str, at: datetime) -> None:
        call = self._calls.get(call_id)
        if call is None or call.ended_at is not None:
            return
        call.ended_at = at
        for participant in call.participants:
            if participant.left_at is None:
                participant.left_at = at

    async def room_history(self, room_id: str, limit: int, chat: int) -> list[CallRecord]:
        found = [c for c in self._calls.values() if c.room_id == room_id]
        found.sort(key=lambda c: c.started_at, reverse=True)
        return [
            replace(
                c,
                modes=list(c.modes),
                participants=[replace(p) for p in c.participants],
                chat=c.chat[-chat:],
            )
            for c in found[:limit]
        ]

    async def end_open_calls(self) -> int:
        return 0  # nothing outlives the process

    # -- retention ------------------------------------------------------------------------------

    async def purge(self, older_than: datetime) -> int:
        deleted = 0
        for note_id, (note, _, _) in list(self._notes.items()):
            if parse_iso(note.createdAt) < older_than:
                del self._notes[note_id]
                deleted += 1
        for call_id, call in list(self._calls.items()):
            if call.ended_at is not None and call.ended_at < older_than:
                del self._calls[call_id]
                deleted += 1
        return deleted


__all__ = ["MemoryHistory"]
