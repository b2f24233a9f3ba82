"""The persistence port: what must survive a restart, behind one typed async interface.

Handlers call this port and nothing else for history: study chat and read marks, in-call chat,
notifications with their delivered/read state, and call history. Live state (who is connected,
media flags) stays in the `Store`. Two implementations pass the same behavioural tests:
`SqlHistory` (SQLite by default, PostgreSQL for several nodes) and `MemoryHistory`
(`DATABASE_URL=memory`, nothing survives the process).

Durability: the `async` writes that return (chat messages, read marks, notifications, delivery
claims) return only once the row is committed. Call-history events are write-behind: they are
queued in order and committed within milliseconds, and `close()` flushes what is queued.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from signaling.domain import ChatMessage, Notification, Topology, User
from signaling.errors import ErrorCode, SignalingError


class HistoryUnavailable(SignalingError):
    """The database refused or lost a write: the client is told nothing was saved."""

    code = ErrorCode.INTERNAL


def utcnow() -> datetime:
    """Naive UTC, the one form every backend stores (SQLite keeps no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def parse_iso(value: str) -> datetime:
    """An ISO 8601 timestamp of the wire (`...Z`) as naive UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def iso(value: datetime) -> str:
    """Naive UTC back to the wire's form, milliseconds and `Z`."""
    return value.isoformat(timespec="milliseconds") + "Z"


@dataclass
class MessagePage:
    """Messages oldest first; `hasMore` says whether older ones exist before the first."""

    messages: list[ChatMessage]
    has_more: bool
    read_by: dict[str, list[str]] = field(default_factory=dict)
    """message id -> ids of the users who marked it read"""


def _seconds(start: datetime, end: datetime | None, now: datetime) -> float:
    return round(max(0.0, ((end or now) - start).total_seconds()), 3)


@dataclass
class ParticipantRecord:
    socket_id: str
    user_id: str
    user_name: str
    joined_at: datetime
    left_at: datetime | None = None

    def wire(self, now: datetime) -> dict[str, Any]:
        return {
            "socketId": self.socket_id,
            "userId": self.user_id,
            "name": self.user_name,
            "joinedAt": iso(self.joined_at),
            "leftAt": iso(self.left_at) if self.left_at else None,
            "durationS": _seconds(self.joined_at, self.left_at, now),
        }


@dataclass
class ModeRecord:
    mode: Topology
    at: datetime


@dataclass
class CallRecord:
    """One call of a room: from the first join until the room emptied (or was closed)."""

    id: str
    room_id: str
    study_id: str | None
    started_at: datetime
    ended_at: datetime | None = None
    modes: list[ModeRecord] = field(default_factory=list)
    participants: list[ParticipantRecord] = field(default_factory=list)
    chat: list[ChatMessage] = field(default_factory=list)
    """the call's in-call chat (`video:chat`), oldest first"""

    def wire(self, now: datetime) -> dict[str, Any]:
        """`durationS` of a call or participant still going on counts up to `now`."""
        return {
            "id": self.id,
            "roomId": self.room_id,
            "studyId": self.study_id,
            "startedAt": iso(self.started_at),
            "endedAt": iso(self.ended_at) if self.ended_at else None,
            "durationS": _seconds(self.started_at, self.ended_at, now),
            "modes": [{"mode": m.mode, "at": iso(m.at)} for m in self.modes],
            "participants": [p.wire(now) for p in self.participants],
            "chat": [m.wire() for m in self.chat],
        }


class History(ABC):
    """The port. Every timestamp argument and result is naive UTC (`utcnow()`)."""

    name: str = "history"

    async def start(self) -> None:  # noqa: B027
        """Connects and migrates; the memory backend has nothing to do."""

    @abstractmethod
    async def close(self) -> None:
        """Flushes queued write-behind events, then releases connections."""

    async def ping(self) -> bool:
        return True

    # -- chat -----------------------------------------------------------------------------------

    @abstractmethod
    async def add_message(self, message: ChatMessage, call_id: str | None = None) -> None:
        """Stores a study message (`studyId`) or an in-call message (`roomId`, `call_id`);
        returns once it is durable."""

    @abstractmethod
    async def recent_messages(self, study_id: str, limit: int) -> list[ChatMessage]:
        """The study's last `limit` messages, oldest first."""

    @abstractmethod
    async def study_messages(self, study_id: str, before: str | None, limit: int) -> MessagePage:
        """A page of the study's messages older than message `before` (or the newest ones).

        Raises `NotFound` when `before` is not a message of this study."""

    @abstractmethod
    async def has_message(self, study_id: str, message_id: str) -> bool: ...

    @abstractmethod
    async def mark_read(self, message_id: str, user_id: str) -> None:
        """Records that `user_id` read the message (idempotent); returns once durable."""

    # -- notifications --------------------------------------------------------------------------

    @abstractmethod
    async def add_notification(self, note: Notification, delivered: bool) -> None:
        """Stores a pushed notification, already delivered or not; returns once durable."""

    @abstractmethod
    async def claim(self, notification_id: str) -> bool:
        """Marks one notification delivered; True for exactly one caller (atomic)."""

    @abstractmethod
    async def claim_undelivered(self, user_id: str, limit: int) -> list[Notification]:
        """Marks the user's undelivered notifications delivered and returns them, oldest first.

        Atomic: two sockets of the user connecting at once never both get one."""

    @abstractmethod
    async def mark_notification_read(self, notification_id: str, user_id: str) -> bool:
        """False when the user has no such notification."""

    # -- call history (write-behind) -------------------------------------------------------------

    @abstractmethod
    def call_started(
        self, call_id: str, room_id: str, study_id: str | None, mode: Topology, at: datetime
    ) -> None: ...

    @abstractmethod
    def participant_joined(self, call_id: str, socket_id: str, user: User, at: datetime) -> None:
        """A socket joined the call (a rejoin of a socket already in it is not a join)."""

    @abstractmethod
    def participant_left(self, call_id: str, socket_id: str, at: datetime) -> None: ...

    @abstractmethod
    def mode_changed(self, call_id: str, mode: Topology, at: datetime) -> None: ...

    @abstractmethod
    def call_ended(self, call_id: str, at: datetime) -> None:
        """Ends the call and every participant still in it."""

    @abstractmethod
    async def room_history(self, room_id: str, limit: int, chat: int) -> list[CallRecord]:
        """The room's last `limit` calls, newest first, each with its last `chat` messages.

        Includes every call event this node queued before the call (read your own writes)."""

    @abstractmethod
    async def end_open_calls(self) -> int:
        """Ends calls still open, at their last recorded event: run by a node whose live state
        died with it (no Redis), where no call can still be going on. Returns how many."""

    # -- retention ------------------------------------------------------------------------------

    @abstractmethod
    async def purge(self, older_than: datetime) -> int:
        """Deletes messages, notifications and ended calls older than `older_than`; how many."""


__all__ = [
    "CallRecord",
    "History",
    "HistoryUnavailable",
    "MessagePage",
    "ModeRecord",
    "ParticipantRecord",
    "iso",
    "parse_iso",
    "utcnow",
]
