"""Prometheus metrics, defined once per process on the default registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("signaling_events_total", "Client events received", ["event"])
ERRORS = Counter("signaling_errors_total", "Errors answered to clients", ["code"])
RELAYED = Counter("signaling_relayed_total", "Signals relayed between peers", ["kind"])
CONNECTIONS = Gauge("signaling_connections", "Sockets connected to this node")
ROOM_JOINS = Counter("signaling_room_joins_total", "Room joins", ["dialect"])
MODE_SWITCHES = Counter("signaling_mode_switches_total", "Topology switches", ["to"])
