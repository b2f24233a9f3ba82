"""SFU media plane: forwards RTP packets between aiortc peer connections, never decoding.

No Socket.IO here: the signaling layer calls :class:`MediaPlane` and relays what it
sends through the :data:`SignalSink` it passed in.
"""

from .config import MediaConfig
from .errors import MediaError
from .participant import FailedCallback, MediaLoss, SignalSink
from .plane import MediaPlane

__all__ = ["FailedCallback", "MediaConfig", "MediaError", "MediaLoss", "MediaPlane", "SignalSink"]
