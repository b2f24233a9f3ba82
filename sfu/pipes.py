"""Pipes: a room spread over several media workers (or nodes) forwards each track once.

A worker that hosts a publisher sends each of its tracks, once, as plain RTP over UDP to
every other worker that hosts subscribers of the room (mediasoup's PipeTransport). There
the track is a `Source` of a `RemoteParticipant`, forwarded to local subscribers like any
other; their keyframe requests and NACKs travel back over the pipe as RTCP, to the
origin's pipe leg, which answers them from its source's cache or asks the publisher.
Packets on a pipe are not encrypted: pipes run on loopback or between the nodes of one
deployment (``MEDIA_PIPE_HOST``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpCodecParameters
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from . import rtcp
from .leg import Leg
from .rtp import URI_AUDIO_LEVEL, abs_send_time, parse_header
from .source import Codec, Source, SourceConfig

logger = logging.getLogger(__name__)

Address = tuple[str, int]
PIPE_AUDIO_LEVEL_ID = 1
"""The audio level rides the pipe under this extension id (the only one kept)."""
PIPE_SOCKET_BUFFER = 4 * 1024 * 1024
"""One pipe socket carries every track of a room's other workers, where a client's socket
carries one client's: with the kernel's default (~200 kB, ~90 packets) a worker held off
its core for a few ms drops a burst of many tracks at once, and every subscriber of them
NACKs and asks for a keyframe over the pipe. The kernel caps this at net.core.rmem_max."""


@dataclass(frozen=True)
class PipedSource:
    """One track as a pipe carries it: its key, its pipe SSRC, its payload types."""

    key: str
    """'audio' | 'video' | 'screen'"""
    kind: str
    ssrc: int
    codecs: dict[int, tuple[str, int]] = field(default_factory=dict)
    """payload type -> (encoding name, clock rate), in the publisher's numbering."""

    def wire(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "ssrc": self.ssrc,
            "codecs": [[pt, name, clock] for pt, (name, clock) in self.codecs.items()],
        }

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> PipedSource:
        codecs = {int(pt): (str(name), int(clock)) for pt, name, clock in raw["codecs"]}
        return cls(str(raw["key"]), str(raw["kind"]), int(raw["ssrc"]), codecs)


def piped(key: str, source: Source) -> PipedSource:
    if source.pipe_ssrc is None:
        source.pipe_ssrc = random.getrandbits(32)
    codecs = {pt: (c.name, c.clock_rate) for pt, c in source.codecs.items()}
    return PipedSource(key, source.kind, source.pipe_ssrc, codecs)


class PipeEndpoint(asyncio.DatagramProtocol):
    """A worker's pipe socket: RTP of remote tracks in, of local ones out, RTCP both ways."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.address: Address = ("", 0)
        self.sources: dict[int, Source] = {}
        """Pipe SSRC -> the remote track it feeds here."""
        self.legs: dict[tuple[Address, int], Leg] = {}
        """(destination, pipe SSRC) -> the pipe leg sending that track there."""
        self.local_ssrc = random.getrandbits(32)
        self.packets_in = 0
        self.packets_out = 0

    async def start(self, host: str, advertise: str | None = None) -> Address:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        sock = transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, option, PIPE_SOCKET_BUFFER)
        port = transport.get_extra_info("sockname")[1]
        self.address = (advertise or host, port)
        return self.address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            if len(data) >= 2 and 191 < data[1] < 224:
                self._feedback(data, addr)
                return
            header = parse_header(data)
            if header is None:
                return
            source = self.sources.get(header.ssrc)
            if source is None:
                return
            self.packets_in += 1
            now = time.time()
            send_time = abs_send_time(now) if source.video else b""
            source.on_rtp(data, header, time.monotonic(), send_time)
        except Exception:
            logger.exception("sfu: pipe packet from %s failed", addr)

    def _feedback(self, data: bytes, addr: Address) -> None:
        for item in rtcp.parse(data):
            if isinstance(item, rtcp.Nack | rtcp.KeyframeRequest):
                leg = self.legs.get(((addr[0], addr[1]), item.media))
                if leg is None:
                    continue
                if isinstance(item, rtcp.Nack):
                    leg.on_nack(item.lost)
                else:
                    leg.on_keyframe_request()

    def send(self, data: bytes, addr: Address) -> bool:
        if self.transport is None:
            return False
        try:
            self.transport.sendto(data, addr)
        except (OSError, RuntimeError):
            return False
        self.packets_out += 1
        return True

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class PipeOutput:
    """A pipe leg's side: the remote worker it sends to."""

    def __init__(self, endpoint: PipeEndpoint, addr: Address) -> None:
        self.endpoint = endpoint
        self.addr = addr

    def connected(self) -> bool:
        return self.endpoint.transport is not None

    def receive_estimate(self) -> float | None:
        return None

    def send_rtp(self, data: bytes) -> bool:
        return self.endpoint.send(data, self.addr)


class PipeUpstream:
    """A remote track's way back to its origin: keyframe requests and NACKs."""

    def __init__(self, endpoint: PipeEndpoint, origin: Address) -> None:
        self.endpoint = endpoint
        self.origin = origin
        self.local_ssrc = endpoint.local_ssrc

    def send_rtcp(self, data: bytes) -> None:
        self.endpoint.send(data, self.origin)


def pipe_leg(endpoint: PipeEndpoint, addr: Address, key: str, source: Source) -> Leg:
    """A leg that sends ``source`` down the pipe to ``addr``, numbered as received."""
    description = piped(key, source)
    leg = Leg(source.kind, PipeOutput(endpoint, addr), description.ssrc, random.getrandbits(32))
    codecs = [
        RTCRtpCodecParameters(mimeType=f"{source.kind}/{name}", clockRate=clock, payloadType=pt)
        for pt, (name, clock) in description.codecs.items()
    ]
    extensions = (
        [RTCRtpHeaderExtensionParameters(id=PIPE_AUDIO_LEVEL_ID, uri=URI_AUDIO_LEVEL)]
        if source.kind == "audio"
        else []
    )
    leg.configure("", codecs, extensions)
    leg.attach(source)
    leg.activate()
    endpoint.legs[(addr, description.ssrc)] = leg
    return leg


class RemoteParticipant:
    """A participant whose connection is on another worker: its tracks arrive by pipe."""

    kind = "remote"

    def __init__(self, room_id: str, participant_id: str, config: SourceConfig) -> None:
        self.room_id = room_id
        self.id = participant_id
        self.config = config
        self.tracks: dict[str, Source] = {}
        self.endpoint: PipeEndpoint | None = None
        self.closed = False

    @property
    def live(self) -> set[Source]:
        return set(self.tracks.values())

    def sources(self) -> list[Source]:
        return list(self.tracks.values())

    def legs(self) -> list[Leg]:
        return []

    def connections(self) -> int:
        return 0

    def update(
        self, endpoint: PipeEndpoint, origin: Address, described: list[PipedSource]
    ) -> list[Source]:
        """The tracks it publishes now; returns those that stopped (closed here)."""
        self.endpoint = endpoint
        wanted = {d.key: d for d in described}
        stopped = []
        for key in list(self.tracks):
            d = wanted.get(key)
            if d is None or d.ssrc != self.tracks[key].media_ssrc:
                source = self.tracks.pop(key)
                endpoint.sources.pop(source.media_ssrc or 0, None)
                source.close()
                stopped.append(source)
        for key, d in wanted.items():
            if key in self.tracks:
                continue
            stream = f"{self.id}:screen" if key == "screen" else self.id
            source = Source(d.kind, stream, self.config, PipeUpstream(endpoint, origin))
            level = PIPE_AUDIO_LEVEL_ID if d.kind == "audio" else None
            source.configure({pt: Codec(n, c) for pt, (n, c) in d.codecs.items()}, {}, level)
            source.media_ssrc = d.ssrc
            endpoint.sources[d.ssrc] = source
            self.tracks[key] = source
        return stopped

    async def close(self) -> None:
        self.closed = True
        for source in self.tracks.values():
            if self.endpoint is not None:
                self.endpoint.sources.pop(source.media_ssrc or 0, None)
            source.close()


class PipeRoutes:
    """Which local participant's tracks go down which pipes, and the legs that send them.

    Signaling (or the worker pool) names the targets (`pipe_to`); the legs follow the
    participant's published tracks (`sync`), and a stopped leg's counts go to ``fold``.
    """

    def __init__(self, fold: Callable[[list[Leg]], None]) -> None:
        self.endpoint: PipeEndpoint | None = None
        self.targets: dict[tuple[str, str], set[Address]] = {}
        self.legs: dict[tuple[str, str], dict[tuple[Address, str], Leg]] = {}
        self._fold = fold

    async def open(self, host: str, advertise: str | None) -> Address:
        if self.endpoint is None:
            self.endpoint = PipeEndpoint()
            await self.endpoint.start(host, advertise)
        return self.endpoint.address

    def count(self) -> int:
        return sum(len(legs) for legs in self.legs.values())

    def add_target(self, key: tuple[str, str], address: Address) -> None:
        self.targets.setdefault(key, set()).add(address)

    def remove_target(self, key: tuple[str, str], address: Address) -> None:
        targets = self.targets.get(key)
        if targets is not None:
            targets.discard(address)
            if not targets:
                del self.targets[key]

    def sync(self, key: tuple[str, str], tracks: dict[str, Source]) -> None:
        """Legs for every (target, track) now wanted; those no longer wanted closed."""
        if self.endpoint is None:
            return
        legs = self.legs.pop(key, {})
        wanted = {
            (addr, track): source
            for addr in self.targets.get(key, set())
            for track, source in tracks.items()
        }
        for slot in list(legs):
            if slot not in wanted or legs[slot].source is not wanted[slot]:
                self._close(legs.pop(slot))
        for slot, source in wanted.items():
            if slot not in legs:
                legs[slot] = pipe_leg(self.endpoint, slot[0], slot[1], source)
        if legs:  # a participant piped nowhere has no entry (a room's pipes go with it)
            self.legs[key] = legs

    def drop(self, key: tuple[str, str]) -> None:
        """The participant left: its targets and legs go."""
        self.targets.pop(key, None)
        for leg in self.legs.pop(key, {}).values():
            self._close(leg)

    def _close(self, leg: Leg) -> None:
        self._fold([leg])
        leg.deactivate()
        leg.detach()
        if self.endpoint is not None:
            for slot, known in list(self.endpoint.legs.items()):
                if known is leg:
                    del self.endpoint.legs[slot]

    def close(self) -> None:
        for key in list(self.legs):
            self.drop(key)
        if self.endpoint is not None:
            self.endpoint.close()
