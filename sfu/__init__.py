"""SFU media plane: forwards encoded audio/video between aiortc peer connections.

No Socket.IO here: the signaling layer calls :class:`MediaPlane` and relays what it
sends through the :data:`SignalSink` it passed in.
"""

from .plane import FailedCallback, MediaConfig, MediaError, MediaPlane, SignalSink

__all__ = ["FailedCallback", "MediaConfig", "MediaError", "MediaPlane", "SignalSink"]
