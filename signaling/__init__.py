"""Socket.IO signaling server for video rooms, presence, chat and pairing."""

__version__ = "0.1.0"
