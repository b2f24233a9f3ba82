"""Prometheus metrics of the media plane, defined once on the default registry.

Gauges carry a ``room`` label (removed when the room closes, so cardinality follows the
number of live rooms). Packet counters are not incremented on the hot path: the planes
keep plain integers and a collector sums them at scrape time, by ``kind``.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PEER_CONNECTIONS = Gauge(
    "sfu_peer_connections", "Open RTCPeerConnections held by the SFU", ["room"]
)
FORWARDED_STREAMS = Gauge(
    "sfu_forwarded_streams", "Publisher tracks currently forwarded to a subscriber", ["room"]
)

COUNTERS = {
    "received_packets": "RTP packets received from publishers (after RTX unwrap)",
    "forwarded_packets": "RTP packets forwarded to subscribers",
    "piped_packets": "RTP packets sent down pipes to other workers or nodes",
    "retransmitted_packets": "Packets resent to subscribers that NACKed them",
    "nacked_packets": "Packets the SFU NACKed to publishers",
    "keyframe_requests": "PLIs sent to publishers (aggregated and rate-limited)",
    "unrepairable_losses": "Holes retransmission did not fill (the legs waited for a keyframe)",
}


class Counted(Protocol):
    def counters(self) -> dict[str, dict[str, int]]:
        """name -> kind -> count, including what closed rooms forwarded."""


_planes: weakref.WeakSet[Counted] = weakref.WeakSet()


class _PlaneCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        totals: dict[str, dict[str, int]] = {name: {} for name in COUNTERS}
        for plane in list(_planes):
            for name, by_kind in plane.counters().items():
                for kind, value in by_kind.items():
                    totals[name][kind] = totals[name].get(kind, 0) + value
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(f"sfu_{name}", help_text, labels=["kind"])
            for kind in ("audio", "video"):
                family.add_metric([kind], totals[name].get(kind, 0))
            yield family


REGISTRY.register(_PlaneCollector())


class Workers(Protocol):
    def worker_status(self) -> list[dict[str, Any]]:
        """One entry per media worker (see `sfu.workers.Worker.status`)."""


WORKER_GAUGES = (
    ("up", "state", "1 while the media worker runs and takes participants, 0 while it restarts"),
    ("participants", "participants", "Participants whose media runs on the worker"),
    ("peer_connections", "peer_connections", "Peer connections the worker holds"),
    (
        "forwarded_packets_per_second",
        "forwarded_packets_per_s",
        "RTP packets/s the worker forwarded over its last second",
    ),
    (
        "cpu_seconds_per_second",
        "cpu_s_per_s",
        "CPU-seconds per second of the worker's process over its last second",
    ),
    ("pipes", "pipes", "Pipe legs the worker sends down to other workers or nodes"),
)
WORKER_COUNTERS = (
    ("cpu_seconds", "cpu_s", "CPU-seconds the worker's process used since it (re)started"),
    ("restarts", "restarts", "Times the worker died and was started again"),
)
"""(metric name after ``sfu_worker_``, key of `Workers.worker_status`, help)."""

_pools: weakref.WeakSet[Workers] = weakref.WeakSet()


class _WorkerCollector(Collector):
    """Per-worker series, labelled ``worker`` (its index: a restarted worker keeps it)."""

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = [entry for pool in list(_pools) for entry in pool.worker_status()]
        for name, key, help_text in WORKER_GAUGES:
            gauge = GaugeMetricFamily(f"sfu_worker_{name}", help_text, labels=["worker"])
            for entry in status:
                value = entry[key] == "up" if key == "state" else entry.get(key, 0)
                gauge.add_metric([str(entry["index"])], float(value))
            yield gauge
        for name, key, help_text in WORKER_COUNTERS:
            counter = CounterMetricFamily(f"sfu_worker_{name}", help_text, labels=["worker"])
            for entry in status:
                counter.add_metric([str(entry["index"])], float(entry.get(key, 0)))
            yield counter


REGISTRY.register(_WorkerCollector())


def register_workers(pool: Workers) -> None:
    _pools.add(pool)


def register(plane: Counted) -> None:
    _planes.add(plane)


def forget_room(room_id: str) -> None:
    """Drop the room's gauge series once the room is gone."""
    for gauge in (PEER_CONNECTIONS, FORWARDED_STREAMS):
        with contextlib.suppress(KeyError):
            gauge.remove(room_id)
