"""The history in a SQL database: SQLite (default) or PostgreSQL, through SQLAlchemy 2 async.

Every write goes through the node's `GroupWriter` (one transaction per batch); reads use the
pool. Statements are built once at import: the writer batches consecutive rows of the same
statement object into one executemany.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

from signaling.domain import ChatMessage, Notification, Topology, User
from signaling.errors import NotFound
from signaling.history.base import (
    CallRecord,
    History,
    HistoryUnavailable,
    MessagePage,
    ModeRecord,
    ParticipantRecord,
    iso,
    parse_iso,
    utcnow,
)
from signaling.history.database import (
    DatabaseUnavailable,
    create_engine,
    create_sqlite_writer_engine,
    migrate,
    redacted,
)
from signaling.history.tables import (
    call_modes,
    call_participants,
    calls,
    message_reads,
    messages,
    notifications,
)
from signaling.history.writer import (
    BatchRunner,
    ConnectionBatchRunner,
    GroupWriter,
    LoopBatchRunner,
    Op,
    ThreadBatchRunner,
)

log = logging.getLogger(__name__)

INSERT_MESSAGE = insert(messages)
INSERT_NOTIFICATION = insert(notifications)
INSERT_CALL = insert(calls)
INSERT_PARTICIPANT = insert(call_participants)
INSERT_MODE = insert(call_modes)
PARTICIPANT_LEFT = (
    update(call_participants)
    .where(
        call_participants.c.call_id == bindparam("b_call"),
        call_participants.c.socket_id == bindparam("b_socket"),
        call_participants.c.left_at.is_(None),
    )
    .values(left_at=bindparam("b_at"))
)
CALL_ENDED = (
    update(calls)
    .where(calls.c.id == bindparam("b_call"), calls.c.ended_at.is_(None))
    .values(ended_at=bindparam("b_at"))
)
EVERYONE_LEFT = (
    update(call_participants)
    .where(
        call_participants.c.call_id == bindparam("b_call"), call_participants.c.left_at.is_(None)
    )
    .values(left_at=bindparam("b_at"))
)
NOTIFICATION_COLUMNS = (
    notifications.c.seq,
    notifications.c.id,
    notifications.c.user_id,
    notifications.c.type,
    notifications.c.message,
    notifications.c.study_id,
    notifications.c.data,
    notifications.c.created_at,
)


def _message(row: Row[Any]) -> ChatMessage:
    return ChatMessage(
        id=row.id,
        studyId=row.study_id,
        roomId=row.room_id,
        content=row.content,
        fileId=row.file_id,
        user=User(id=row.user_id, name=row.user_name, avatar=row.user_avatar),
        createdAt=iso(row.created_at),
    )


def _notification(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        userId=row.user_id,
        type=row.type,
        message=row.message,
        studyId=row.study_id,
        data=row.data,
        createdAt=iso(row.created_at),
    )


class SqlHistory(History):
    name = "sql"

    def __init__(self, url: URL, sqlite_synchronous: str = "normal") -> None:
        self.url = url
        self.sqlite_synchronous = sqlite_synchronous
        self._engine: AsyncEngine | None = None
        self._writer: GroupWriter | None = None
        self._insert_read: Executable | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("SqlHistory is not started")
        return self._engine

    @property
    def writer(self) -> GroupWriter:
        if self._writer is None:
            raise RuntimeError("SqlHistory is not started")
        return self._writer

    async def start(self) -> None:
        engine = create_engine(self.url)
        try:
            await migrate(engine)
        except (SQLAlchemyError, OSError) as exc:
            await engine.dispose()
            raise DatabaseUnavailable(
                f"cannot open the database at {redacted(self.url)}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert_read = dialect.insert(message_reads).on_conflict_do_nothing()
        self._engine = engine
        runner: BatchRunner = ConnectionBatchRunner(engine)
        if engine.dialect.name == "sqlite":
            writer = create_sqlite_writer_engine(self.url, self.sqlite_synchronous)
            if self.sqlite_synchronous == "full":
                runner = ThreadBatchRunner(writer)
            else:
                runner = LoopBatchRunner(writer, str(self.url.database))
        self._writer = GroupWriter(runner)
        self._writer.start()
        log.info("history in %s", redacted(self.url), extra={"database": engine.dialect.name})

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def ping(self) -> bool:
        if self._engine is None:
            return False
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(1))
        except (SQLAlchemyError, OSError):
            return False
        return True

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection for reads; a database that fails answers HistoryUnavailable."""
        try:
            async with self.engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError) as exc:
            log.error("history read failed: %s", type(exc).__name__)
            raise HistoryUnavailable("the history is unavailable; try again") from None

    async def _rows(self, statement: Executable) -> Sequence[Row[Any]]:
        async with self._reading() as conn:
            return (await conn.execute(statement)).all()

    async def _flush(self) -> None:
        """Waits until what this node queued before (write-behind included) is committed."""

        def nothing(_: Connection) -> None:
            return None

        await self.writer.write(Op(run=nothing))

    # -- chat -----------------------------------------------------------------------------------

    async def add_message(self, message: ChatMessage, call_id: str | None = None) -> None:
        await self.writer.write(
            Op(
                INSERT_MESSAGE,
                {
                    "id": message.id,
                    "study_id": message.studyId,
                    "room_id": message.roomId,
                    "call_id": call_id,
                    "user_id": message.user.id,
                    "user_name": message.user.name,
                    "user_avatar": message.user.avatar,
                    "content": message.content,
                    "file_id": message.fileId,
                    "created_at": parse_iso(message.createdAt),
                },
            )
        )

    async def recent_messages(self, study_id: str, limit: int) -> list[ChatMessage]:
        rows = await self._rows(
            select(messages)
            .where(messages.c.study_id == study_id)
            .order_by(messages.c.seq.desc())
            .limit(limit)
        )
        return [_message(row) for row in reversed(rows)]

    async def study_messages(self, study_id: str, before: str | None, limit: int) -> MessagePage:
        query = select(messages).where(messages.c.study_id == study_id)
        async with self._reading() as conn:
            if before is not None:
                cursor = (
                    await conn.execute(
                        select(messages.c.seq).where(
                            messages.c.id == before, messages.c.study_id == study_id
                        )
                    )
                ).scalar()
                if cursor is None:
                    raise NotFound("no such message in this study")
                query = query.where(messages.c.seq < cursor)
            rows = (
                await conn.execute(query.order_by(messages.c.seq.desc()).limit(limit + 1))
            ).all()
            page = [_message(row) for row in reversed(rows[:limit])]
            read_by: dict[str, list[str]] = {}
            if page:
                reads = await conn.execute(
                    select(message_reads.c.message_id, message_reads.c.user_id)
                    .where(message_reads.c.message_id.in_([m.id for m in page]))
                    .order_by(message_reads.c.read_at)
                )
                for message_id, user_id in reads:
                    read_by.setdefault(message_id, []).append(user_id)
        return MessagePage(page, has_more=len(rows) > limit, read_by=read_by)

    async def has_message(self, study_id: str, message_id: str) -> bool:
        rows = await self._rows(
            select(messages.c.seq).where(
                messages.c.id == message_id, messages.c.study_id == study_id
            )
        )
        return bool(rows)

    async def mark_read(self, message_id: str, user_id: str) -> None:
        assert self._insert_read is not None
        await self.writer.write(
            Op(
                self._insert_read,
                {"message_id": message_id, "user_id": user_id, "read_at": utcnow()},
            )
        )

    # -- notifications --------------------------------------------------------------------------

    async def add_notification(self, note: Notification, delivered: bool) -> None:
        created = parse_iso(note.createdAt)
        await self.writer.write(
            Op(
                INSERT_NOTIFICATION,
                {
                    "id": note.id,
                    "user_id": note.userId,
                    "type": note.type,
                    "message": note.message,
                    "study_id": note.studyId,
                    "data": note.data,
                    "created_at": created,
                    "delivered_at": created if delivered else None,
                    "read_at": None,
                },
            )
        )

    async def claim(self, notification_id: str) -> bool:
        def run(conn: Connection) -> bool:
            result = conn.execute(
                update(notifications)
                .where(
                    notifications.c.id == notification_id, notifications.c.delivered_at.is_(None)
                )
                .values(delivered_at=utcnow())
            )
            return bool(result.rowcount == 1)

        return bool(await self.writer.write(Op(run=run)))

    async def claim_undelivered(self, user_id: str, limit: int) -> list[Notification]:
        def run(conn: Connection) -> list[Notification]:
            waiting = (
                conn.execute(
                    select(notifications.c.id)
                    .where(
                        notifications.c.user_id == user_id, notifications.c.delivered_at.is_(None)
                    )
                    .order_by(notifications.c.seq)
                    .limit(limit)
                )
            ).scalars()
            ids = list(waiting)
            if not ids:
                return []
            # The delivered_at IS NULL condition is re-checked under the row lock
            # (PostgreSQL), so a concurrent claim on another node never returns the same row.
            claimed = conn.execute(
                update(notifications)
                .where(notifications.c.id.in_(ids), notifications.c.delivered_at.is_(None))
                .values(delivered_at=utcnow())
                .returning(*NOTIFICATION_COLUMNS)
            )
            return [_notification(row) for row in sorted(claimed.all(), key=lambda r: r.seq)]

        result: list[Notification] = await self.writer.write(Op(run=run))
        return result

    async def mark_notification_read(self, notification_id: str, user_id: str) -> bool:
        def run(conn: Connection) -> bool:
            now = utcnow()
            result = conn.execute(
                update(notifications)
                .where(notifications.c.id == notification_id, notifications.c.user_id == user_id)
                .values(
                    read_at=func.coalesce(notifications.c.read_at, now),
                    delivered_at=func.coalesce(notifications.c.delivered_at, now),
                )
            )
            return bool(result.rowcount)

        return bool(await self.writer.write(Op(run=run)))

    # -- call history ---------------------------------------------------------------------------

    def call_started(
        self, call_id: str, room_id: str, study_id: str | None, mode: Topology, at: datetime
    ) -> None:
        self.writer.write_behind(
            Op(
                INSERT_CALL,
                {"id": call_id, "room_id": room_id, "study_id": study_id, "started_at": at},
            )
        )
        self.mode_changed(call_id, mode, at)

    def participant_joined(self, call_id: str, socket_id: str, user: User, at: datetime) -> None:
        self.writer.write_behind(
            Op(
                INSERT_PARTICIPANT,
                {
                    "call_id": call_id,
                    "socket_id": socket_id,
                    "user_id": user.id,
                    "user_name": user.name,
                    "joined_at": at,
                },
            )
        )

    def participant_left(self, call_id: str, socket_id: str, at: datetime) -> None:
        self.writer.write_behind(
            Op(PARTICIPANT_LEFT, {"b_call": call_id, "b_socket": socket_id, "b_at": at})
        )

    def mode_changed(self, call_id: str, mode: Topology, at: datetime) -> None:
        self.writer.write_behind(Op(INSERT_MODE, {"call_id": call_id, "mode": mode, "at": at}))

    def call_ended(self, call_id: str, at: datetime) -> None:
        self.writer.write_behind(Op(EVERYONE_LEFT, {"b_call": call_id, "b_at": at}))
        self.writer.write_behind(Op(CALL_ENDED, {"b_call": call_id, "b_at": at}))

    async def room_history(self, room_id: str, limit: int, chat: int) -> list[CallRecord]:
        await self._flush()  # this node's own call events are read back
        async with self._reading() as conn:
            rows = (
                await conn.execute(
                    select(calls)
                    .where(calls.c.room_id == room_id)
                    .order_by(calls.c.started_at.desc(), calls.c.id)
                    .limit(limit)
                )
            ).all()
            found = {
                row.id: CallRecord(row.id, row.room_id, row.study_id, row.started_at, row.ended_at)
                for row in rows
            }
            if not found:
                return []
            ids = list(found)
            for row in await conn.execute(
                select(call_modes)
                .where(call_modes.c.call_id.in_(ids))
                .order_by(call_modes.c.at, call_modes.c.seq)
            ):
                found[row.call_id].modes.append(ModeRecord(row.mode, row.at))
            for row in await conn.execute(
                select(call_participants)
                .where(call_participants.c.call_id.in_(ids))
                # Rows come from every node's writer: commit order is not join order.
                .order_by(call_participants.c.joined_at, call_participants.c.seq)
            ):
                found[row.call_id].participants.append(
                    ParticipantRecord(
                        row.socket_id, row.user_id, row.user_name, row.joined_at, row.left_at
                    )
                )
            for call_id, record in found.items():
                said = (
                    await conn.execute(
                        select(messages)
                        .where(messages.c.call_id == call_id)
                        .order_by(messages.c.seq.desc())
                        .limit(chat)
                    )
                ).all()
                record.chat = [_message(row) for row in reversed(said)]
        return list(found.values())

    async def end_open_calls(self) -> int:
        def run(conn: Connection) -> int:
            open_calls = (
                conn.execute(
                    select(calls.c.id, calls.c.started_at).where(calls.c.ended_at.is_(None))
                )
            ).all()
            for call_id, started_at in open_calls:
                last = [started_at]
                for column, where in (
                    (call_participants.c.joined_at, call_participants.c.call_id),
                    (call_participants.c.left_at, call_participants.c.call_id),
                    (call_modes.c.at, call_modes.c.call_id),
                    (messages.c.created_at, messages.c.call_id),
                ):
                    value = (
                        conn.execute(select(func.max(column)).where(where == call_id))
                    ).scalar()
                    if value is not None:
                        last.append(value)
                conn.execute(EVERYONE_LEFT, {"b_call": call_id, "b_at": max(last)})
                conn.execute(CALL_ENDED, {"b_call": call_id, "b_at": max(last)})
            return len(open_calls)

        count: int = await self.writer.write(Op(run=run))
        return count

    # -- retention ------------------------------------------------------------------------------

    async def purge(self, older_than: datetime) -> int:
        def run(conn: Connection) -> int:
            old_messages = select(messages.c.id).where(messages.c.created_at < older_than)
            old_calls = select(calls.c.id).where(calls.c.ended_at < older_than)
            deleted = 0
            for statement in (
                delete(message_reads).where(message_reads.c.message_id.in_(old_messages)),
                delete(messages).where(messages.c.created_at < older_than),
                delete(notifications).where(notifications.c.created_at < older_than),
                delete(call_participants).where(call_participants.c.call_id.in_(old_calls)),
                delete(call_modes).where(call_modes.c.call_id.in_(old_calls)),
                delete(calls).where(calls.c.ended_at < older_than),
            ):
                deleted += (conn.execute(statement)).rowcount
            return deleted

        count: int = await self.writer.write(Op(run=run))
        return count


__all__ = ["DatabaseUnavailable", "SqlHistory"]
