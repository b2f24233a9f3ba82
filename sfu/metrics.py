"""Prometheus metrics of the media plane, defined once on the default registry.

Gauges carry a ``room`` label (removed when the room closes, so cardinality follows
the number of live rooms); counters only carry ``kind`` (audio/video) so they never
grow with room churn.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

PEER_CONNECTIONS = Gauge(
    "sfu_peer_connections", "Open RTCPeerConnections held by the SFU", ["room"]
)
FORWARDED_STREAMS = Gauge(
    "sfu_forwarded_streams", "Publisher tracks currently forwarded to a subscriber", ["room"]
)
RECEIVED_PACKETS = Counter(
    "sfu_received_packets", "RTP packets received from publishers (after RTX unwrap)", ["kind"]
)
FORWARDED_FRAMES = Counter(
    "sfu_forwarded_frames", "Encoded frames handed to subscribers' senders", ["kind"]
)
KEYFRAME_REQUESTS = Counter(
    "sfu_keyframe_requests", "PLIs sent to publishers (rate-limited)", ["kind"]
)
DROPPED_FRAMES = Counter(
    "sfu_dropped_frames",
    "Frames not forwarded to a subscriber (queue overflow or waiting for a keyframe)",
    ["kind"],
)


def forget_room(room_id: str) -> None:
    """Drop the room's gauge series once the room is gone."""
    for gauge in (PEER_CONNECTIONS, FORWARDED_STREAMS):
        with contextlib.suppress(KeyError):
            gauge.remove(room_id)
