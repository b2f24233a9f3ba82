"""The history schema (SQLAlchemy Core). Alembic's migrations create exactly these tables;
`tests/history` checks that the migrated database and this metadata agree."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

ID = 64
"""Our ids are 32 hex characters; room, study and user ids are client ids of at most 256."""
EXTERNAL_ID = 256

# SQLite's INTEGER PRIMARY KEY is the rowid (autoincrementing); PostgreSQL gets a BIGINT.
Serial = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(ID), nullable=False, unique=True),
    Column("study_id", String(EXTERNAL_ID)),
    Column("room_id", String(EXTERNAL_ID)),
    Column("call_id", String(ID)),
    Column("user_id", String(EXTERNAL_ID), nullable=False),
    Column("user_name", Text, nullable=False),
    Column("user_avatar", Text),
    Column("content", Text, nullable=False),
    Column("file_id", String(EXTERNAL_ID)),
    Column("created_at", DateTime, nullable=False),
)
Index("ix_messages_study_seq", messages.c.study_id, messages.c.seq)
Index("ix_messages_call_seq", messages.c.call_id, messages.c.seq)
Index("ix_messages_created_at", messages.c.created_at)

message_reads = Table(
    "message_reads",
    metadata,
    Column(
        "message_id",
        String(ID),
        ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", String(EXTERNAL_ID), primary_key=True),
    Column("read_at", DateTime, nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("id", String(ID), nullable=False, unique=True),
    Column("user_id", String(EXTERNAL_ID), nullable=False),
    Column("type", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("study_id", String(EXTERNAL_ID)),
    Column("data", JSON),
    Column("created_at", DateTime, nullable=False),
    Column("delivered_at", DateTime),
    Column("read_at", DateTime),
)
Index("ix_notifications_user_delivered", notifications.c.user_id, notifications.c.delivered_at)
Index("ix_notifications_created_at", notifications.c.created_at)

calls = Table(
    "calls",
    metadata,
    Column("id", String(ID), primary_key=True),
    Column("room_id", String(EXTERNAL_ID), nullable=False),
    Column("study_id", String(EXTERNAL_ID)),
    Column("started_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
)
Index("ix_calls_room_started", calls.c.room_id, calls.c.started_at)
Index("ix_calls_ended_at", calls.c.ended_at)

# No foreign keys to `calls`: call events are write-behind and come from every node, so a
# participant row written by one node may commit before the call row another node wrote.
call_participants = Table(
    "call_participants",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("call_id", String(ID), nullable=False),
    Column("socket_id", String(ID), nullable=False),
    Column("user_id", String(EXTERNAL_ID), nullable=False),
    Column("user_name", Text, nullable=False),
    Column("joined_at", DateTime, nullable=False),
    Column("left_at", DateTime),
)
Index("ix_call_participants_call", call_participants.c.call_id, call_participants.c.socket_id)

call_modes = Table(
    "call_modes",
    metadata,
    Column("seq", Serial, primary_key=True, autoincrement=True),
    Column("call_id", String(ID), nullable=False),
    Column("mode", String(8), nullable=False),
    Column("at", DateTime, nullable=False),
)
Index("ix_call_modes_call", call_modes.c.call_id)

__all__ = [
    "call_modes",
    "call_participants",
    "calls",
    "message_reads",
    "messages",
    "metadata",
    "notifications",
]
