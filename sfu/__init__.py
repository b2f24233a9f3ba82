"""SFU media plane: forwards RTP packets between aiortc peer connections, never decoding.

No Socket.IO here: signaling drives a :class:`WorkerPool` (one or more planes) with the
typed commands of `sfu.commands` and relays the events it gets back.
"""

from .config import MediaConfig
from .errors import MediaError
from .participant import FailedCallback, MediaLoss, SignalSink
from .plane import MediaPlane
from .pool import WorkerPool
from .workers import PoolConfig

__all__ = [
    "FailedCallback",
    "MediaConfig",
    "MediaError",
    "MediaLoss",
    "MediaPlane",
    "PoolConfig",
    "SignalSink",
    "WorkerPool",
]
