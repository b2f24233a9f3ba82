"""What a client sent, read from the text of one Socket.IO packet: pure functions, no I/O.

`parse` splits a packet into its header and JSON body and raises `BadFrame` when the framing
itself is broken (the edge then closes the connection: nothing after it can be trusted).
`decode_event` reads an EVENT's body and raises `BadPayload` when the frame is sound but its
JSON is not (deep nesting, a lone UTF-16 surrogate, not an array): the sender gets
INVALID_PAYLOAD and the connection lives. Messages are words meant for the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

MAX_ATTACHMENTS = 10
"""Binary attachments one packet may announce (python-socketio allows 10 digits of them)."""
MAX_ACK_ID_DIGITS = 15
"""Ack ids are JavaScript numbers: beyond 15 digits they are not even exact."""
MAX_NAMESPACE_CHARS = 256
MAX_EVENT_CHARS = 128
"""Longer names are no event of the contract; errors echo at most this much of them."""

_DIGITS = "0123456789"


class BadFrame(ValueError):
    """The packet cannot be framed: the connection that sent it is closed."""


class BadPayload(ValueError):
    """The packet is framed but its JSON cannot be read: refused with INVALID_PAYLOAD."""

    def __init__(self, message: str, event: str = "") -> None:
        super().__init__(message)
        self.event = event

    @property
    def message(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Header:
    type: int
    attachments: int
    namespace: str
    ack_id: int | None
    body: str


def parse(text: str) -> Header:
    """The header of a Socket.IO packet (socket.io-protocol v5) and its JSON text."""
    if not text:
        raise BadFrame("empty packet")
    kind = text[0]
    if kind not in "0123456":
        raise BadFrame("unknown Socket.IO packet type")
    packet_type = ord(kind) - ord("0")
    end = len(text)
    i = 1
    attachments = 0
    if packet_type in (BINARY_EVENT, BINARY_ACK):
        j = i
        while j < end and text[j] in _DIGITS and j - i < 3:
            j += 1
        if j == i or j >= end or text[j] != "-":
            raise BadFrame("a binary packet must announce its attachments")
        attachments = int(text[i:j])
        if not 1 <= attachments <= MAX_ATTACHMENTS:
            raise BadFrame(f"a packet may carry 1 to {MAX_ATTACHMENTS} attachments")
        i = j + 1
    namespace = "/"
    if i < end and text[i] == "/":
        comma = text.find(",", i)
        stop = end if comma == -1 else comma
        namespace = text[i:stop].split("?", 1)[0]
        if len(namespace) > MAX_NAMESPACE_CHARS:
            raise BadFrame("namespace too long")
        i = end if comma == -1 else comma + 1
    ack_id = None
    j = i
    while j < end and text[j] in _DIGITS:
        j += 1
    if j > i:
        if j - i > MAX_ACK_ID_DIGITS:
            raise BadFrame("ack id too long")
        ack_id = int(text[i:j])
        i = j
    return Header(packet_type, attachments, namespace, ack_id, text[i:])


def describe_json_error(error: orjson.JSONDecodeError) -> str:
    """What is wrong with a payload, in words (orjson's message names the position only)."""
    text = str(error)
    if "depth" in text or "recursion" in text:
        return "payload is nested too deeply (at most 1,024 levels)"
    if "surrogate" in text:
        return "payload holds a lone UTF-16 surrogate (a truncated emoji?)"
    if "infinity" in text:
        return "payload holds a number out of range"
    return "payload is not valid JSON"


_EVENT_NAME = re.compile(r'\[\s*("(?:[^"\\]|\\.){1,' + str(MAX_EVENT_CHARS) + '}")')


def guess_event(body: str) -> str:
    """The event name at the start of a body that does not decode as a whole, or ""."""
    match = _EVENT_NAME.match(body)
    if match is None:
        return ""
    try:
        name = orjson.loads(match.group(1))
    except orjson.JSONDecodeError:
        return ""
    return name if isinstance(name, str) else ""


def decode_json(body: str) -> Any:
    """A packet body as JSON; `BadPayload` (with the event name when it can be read)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPayload(describe_json_error(exc), guess_event(body)) from None


def decode_event(body: str) -> tuple[str, list[Any]]:
    """`(event, args)` of an EVENT packet's body: `["name", ...args]`."""
    if not body:
        raise BadPayload("an event packet needs a JSON array: [name, ...arguments]")
    data = decode_json(body)
    if not isinstance(data, list) or not data:
        raise BadPayload("an event packet needs a JSON array: [name, ...arguments]")
    event = data[0]
    if not isinstance(event, str):
        raise BadPayload("the event name must be a string")
    return event, data[1:]


def event_name_of(body: str) -> str:
    """The event a body names, best effort (for refusing a binary event), or ""."""
    try:
        event, _ = decode_event(body)
    except BadPayload as exc:
        return exc.event
    return event


# Relay events that skip the general path: decoded once with orjson and handed to the same
# dispatcher (rate limit, validation, errors unchanged). Only ack-less events on the default
# namespace start exactly like this.
FAST_EVENTS = ('2["video:offer",', '2["video:answer",', '2["video:ice-candidate",')


def fast_event(data: Any) -> tuple[str, list[Any]] | None:
    """`(event, args)` for a hot-path relay packet, None for anything else."""
    if not isinstance(data, str) or not data.startswith(FAST_EVENTS):
        return None
    try:
        decoded = orjson.loads(data[1:])
    except orjson.JSONDecodeError:
        return None
    return decoded[0], decoded[1:]


def encode_event(event: str, data: Any) -> str:
    """The text of a Socket.IO EVENT packet on the default namespace."""
    return "2" + orjson.dumps([event, data]).decode()
