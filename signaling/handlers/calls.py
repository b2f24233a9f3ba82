"""A video room's call history (write-behind): what a join or a leave adds to it."""

from __future__ import annotations

from signaling.domain import ModeChange, Participant, VideoRoom
from signaling.history import History, utcnow
from signaling.history.base import parse_iso


def record_join(
    history: History,
    room: VideoRoom,
    participant: Participant,
    opened: bool,
    rejoin: bool,
    change: ModeChange | None,
) -> None:
    """`opened`: the join opened the room (a new call); `rejoin`: the socket was there."""
    at = parse_iso(participant.joinedAt)
    if opened:
        history.call_started(room.callId, room.id, room.studyId, room.mode, at)
    if not rejoin:
        history.participant_joined(room.callId, participant.socketId, participant.user, at)
    if change is not None:
        history.mode_changed(room.callId, change.current, at)


def record_leave(history: History, room: VideoRoom, sid: str, change: ModeChange | None) -> None:
    """After the leave: an emptied room ends its call."""
    at = utcnow()
    history.participant_left(room.callId, sid, at)
    if room.empty:
        history.call_ended(room.callId, at)
    elif change is not None:
        history.mode_changed(room.callId, change.current, at)
