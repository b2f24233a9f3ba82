"""The local channel between the signaling process and a media worker: one socket pair.

A line is ``<id> <message JSON>``: commands carry the id their reply repeats; events,
stats and the worker's hello use id 0. `sfu.commands` serialises each message once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from .commands import Message, decode, encode

LIMIT = 4 * 1024 * 1024
"""Longest line (an SDP with many m-lines is far below)."""


def frame(ident: int, message: Message) -> bytes:
    return b"%d " % ident + encode(message) + b"\n"


def frame_raw(ident: int, body: dict[str, Any]) -> bytes:
    """A line whose body is not a `Message` (hello, stats)."""
    return b"%d " % ident + orjson.dumps(body) + b"\n"


def parse(line: bytes) -> tuple[int, Message | dict[str, Any]]:
    """(id, message) of one line; hello and stats come back as plain dicts."""
    head, _, body = line.partition(b" ")
    ident = int(head)
    raw = orjson.loads(body)
    if isinstance(raw, dict) and raw.get("t") in ("hello", "stats"):
        return ident, raw
    return ident, decode(body)


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line, or None when the other side is gone."""
    try:
        line = await reader.readline()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        return None
    return line or None
