"""Socket event handlers, split by concern; `signaling.app` wires each with its ports."""

from __future__ import annotations

from signaling.handlers.guide import GuideRooms
from signaling.handlers.in_call import InCall
from signaling.handlers.notifications import Notifications
from signaling.handlers.pairing import Pairing
from signaling.handlers.studies import Studies
from signaling.handlers.video import VideoRooms

__all__ = ["GuideRooms", "InCall", "Notifications", "Pairing", "Studies", "VideoRooms"]
