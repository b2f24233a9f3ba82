"""History: messages and read marks, notifications, calls with participants and modes.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("study_id", sa.String(256)),
        sa.Column("room_id", sa.String(256)),
        sa.Column("call_id", sa.String(64)),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("user_avatar", sa.Text),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("file_id", sa.String(256)),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_messages_study_seq", "messages", ["study_id", "seq"])
    op.create_index("ix_messages_call_seq", "messages", ["call_id", "seq"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_table(
        "message_reads",
        sa.Column(
            "message_id",
            sa.String(64),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(256), primary_key=True),
        sa.Column("read_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "notifications",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("study_id", sa.String(256)),
        sa.Column("data", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime),
        sa.Column("read_at", sa.DateTime),
    )
    op.create_index("ix_notifications_user_delivered", "notifications", ["user_id", "delivered_at"])
    op.create_index("ix_notifications_created_at", "notifications", ["created_at"])
    op.create_table(
        "calls",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("room_id", sa.String(256), nullable=False),
        sa.Column("study_id", sa.String(256)),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
    )
    op.create_index("ix_calls_room_started", "calls", ["room_id", "started_at"])
    op.create_index("ix_calls_ended_at", "calls", ["ended_at"])
    op.create_table(
        "call_participants",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("socket_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("user_name", sa.Text, nullable=False),
        sa.Column("joined_at", sa.DateTime, nullable=False),
        sa.Column("left_at", sa.DateTime),
    )
    op.create_index("ix_call_participants_call", "call_participants", ["call_id", "socket_id"])
    op.create_table(
        "call_modes",
        sa.Column("seq", Serial, primary_key=True, autoincrement=True),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_call_modes_call", "call_modes", ["call_id"])


def downgrade() -> None:
    for table in ("call_modes", "call_participants", "calls", "notifications"):
        op.drop_table(table)
    op.drop_table("message_reads")
    op.drop_table("messages")
