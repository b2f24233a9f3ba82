"""What the plane counts: packets in and out, repairs, keyframe requests, by kind.

Counts live on the sources and legs themselves (plain integers, nothing per packet goes
through Prometheus); a closed participant's counts are folded into the plane's totals
before its objects go.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from . import metrics
from .leg import Leg
from .source import Source

Counts = dict[str, dict[str, int]]
"""name (see `metrics.COUNTERS`) -> kind -> count."""


class Member(Protocol):
    """What the counting needs of a participant, whatever its kind."""

    def sources(self) -> list[Source]: ...

    def legs(self) -> list[Leg]: ...


def source_counts(sources: Iterable[Source]) -> Counts:
    out: Counts = defaultdict(lambda: defaultdict(int))
    for s in sources:
        out["received_packets"][s.kind] += s.received
        out["nacked_packets"][s.kind] += s.nacks_sent
        out["keyframe_requests"][s.kind] += s.keyframe_requests
        out["unrepairable_losses"][s.kind] += s.lost
    return out


def counts_of(members: Iterable[Member]) -> Counts:
    members = list(members)
    out = source_counts(s for m in members for s in m.sources())
    out.update(leg_counts(leg for m in members for leg in m.legs()))
    return out


class Totals:
    """What closed participants and stopped sources counted, kept for the counters."""

    def __init__(self) -> None:
        self._closed: Counts = defaultdict(lambda: defaultdict(int))

    def fold(self, counts: Counts) -> None:
        for name, by_kind in counts.items():
            for kind, value in by_kind.items():
                self._closed[name][kind] += value

    def with_live(self, live: Counts) -> Counts:
        out: Counts = {}
        for name in metrics.COUNTERS:
            kinds = set(live.get(name, {})) | set(self._closed.get(name, {}))
            out[name] = {
                k: live.get(name, {}).get(k, 0) + self._closed.get(name, {}).get(k, 0)
                for k in kinds
            }
        return out


def leg_counts(legs: Iterable[Leg]) -> Counts:
    """What some legs forwarded (a dropped link's, a closed pipe's)."""
    out: Counts = defaultdict(lambda: defaultdict(int))
    for leg in legs:
        out["forwarded_packets"][leg.kind] += leg.packets
        out["retransmitted_packets"][leg.kind] += leg.retransmits
    return out


def pipe_counts(legs: Iterable[Leg]) -> Counts:
    """What pipe legs sent to other workers (not forwarded to any client yet)."""
    out: Counts = defaultdict(lambda: defaultdict(int))
    for leg in legs:
        out["piped_packets"][leg.kind] += leg.packets
        out["retransmitted_packets"][leg.kind] += leg.retransmits
    return out


class Counted(Member, Protocol):
    """What the per-room statistics need of a participant."""

    @property
    def live(self) -> set[Source]: ...

    def connections(self) -> int: ...


def room_entry(members: list[Counted], forwarded_streams: int) -> dict[str, int]:
    """One room's line of the plane's statistics."""
    counts = counts_of(members)
    return {
        "participants": len(members),
        "peer_connections": sum(p.connections() for p in members),
        "sources": sum(len(p.live) for p in members),
        "forwarded_streams": forwarded_streams,
        "packets": sum(counts["forwarded_packets"].values()),
        "received_packets": sum(counts["received_packets"].values()),
        "retransmitted_packets": sum(counts["retransmitted_packets"].values()),
        "keyframe_requests": sum(counts["keyframe_requests"].values()),
    }
