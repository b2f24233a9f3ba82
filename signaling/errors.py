"""One error taxonomy, mapped to the wire in one place (`to_wire`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    NOT_IN_ROOM = "NOT_IN_ROOM"
    FORBIDDEN = "FORBIDDEN"
    ROOM_FULL = "ROOM_FULL"
    RATE_LIMITED = "RATE_LIMITED"
    TOO_LARGE = "TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    INTERNAL = "INTERNAL"


class SignalingError(Exception):
    """A client's request that cannot be served; the message is safe to show the client."""

    code: ErrorCode = ErrorCode.INVALID_PAYLOAD

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidPayload(SignalingError):
    code = ErrorCode.INVALID_PAYLOAD


class NotInRoom(SignalingError):
    code = ErrorCode.NOT_IN_ROOM


class Forbidden(SignalingError):
    code = ErrorCode.FORBIDDEN


class RoomFull(SignalingError):
    code = ErrorCode.ROOM_FULL


class RateLimited(SignalingError):
    code = ErrorCode.RATE_LIMITED


class TooLarge(SignalingError):
    code = ErrorCode.TOO_LARGE


class NotFound(SignalingError):
    code = ErrorCode.NOT_FOUND


# The guide dialect (docs/protocol.md section 3) reports relay failures as `error { type }`.
_GUIDE_ERROR_TYPES = {
    "offer": "offer-error",
    "answer": "answer-error",
    "ice-candidate": "ice-error",
}


def error_event(error: SignalingError, event: str) -> dict[str, Any]:
    """The payload of the `error` event sent to the client that caused `error`."""
    payload: dict[str, Any] = {"code": error.code.value, "message": error.message, "event": event}
    guide_type = _GUIDE_ERROR_TYPES.get(event)
    if guide_type is not None:
        payload["type"] = guide_type
    return payload


def error_ack(error: SignalingError) -> dict[str, Any]:
    """The ack payload for an event that carried an ack callback."""
    return {"ok": False, "error": {"code": error.code.value, "message": error.message}}


def guide_ack(error: SignalingError) -> dict[str, Any]:
    """The guide dialect's `create-room` / `join-room` acks use `{ success, error }`."""
    return {"success": False, "error": error.message, "code": error.code.value}
