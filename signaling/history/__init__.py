"""Durable history: chat, read marks, notifications and calls, behind one port (`History`)."""

from __future__ import annotations

from pathlib import Path

from signaling.history.base import (
    CallRecord,
    History,
    HistoryUnavailable,
    MessagePage,
    iso,
    utcnow,
)
from signaling.history.database import DatabaseUnavailable, resolve_url
from signaling.history.memory import MemoryHistory
from signaling.store.base import Store


def open_history(
    database_url: str | None,
    data_dir: Path,
    store: Store,
    chat_cap: int,
    sqlite_synchronous: str = "normal",
) -> History:
    """The configured backend, not yet started (`await history.start()`)."""
    url = resolve_url(database_url, data_dir)
    if url is None:
        return MemoryHistory(store, chat_cap)
    from signaling.history.sql import SqlHistory

    return SqlHistory(url, sqlite_synchronous)


__all__ = [
    "CallRecord",
    "DatabaseUnavailable",
    "History",
    "HistoryUnavailable",
    "MemoryHistory",
    "MessagePage",
    "iso",
    "open_history",
    "utcnow",
]
