"""Cheap benchmark peers: publish a pre-packetized clip, count what arrives without decrypting.

A load generator that shares two cores with the server must cost little per packet, or it
measures itself. Publishers here send RTP they packetized once, on their own timer, with
the client's SRTP session (aiortc's sender is kept only to receive PLIs). Subscribers
read SSRC, timestamp and marker from the clear SRTP header (SRTP encrypts payloads only)
and count packets and frames per SSRC; one sampled subscriber per run decrypts and
reassembles its frames (`devtools.media.receive_encoded`) to prove they are whole.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import RTCRtpSender
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtptransceiver import RTCRtpTransceiver

from devtools.media import Clip
from sfu import _aiortc
from sfu.rtp import HEADER, parse_vp8, vp8_descriptor


@dataclass(frozen=True)
class Packetized:
    """A clip cut into RTP payloads once (frame i -> its payloads)."""

    kind: str
    frames: list[list[bytes]]
    fps: float
    clock_rate: int

    @property
    def step(self) -> int:
        return int(self.clock_rate / self.fps)


def packetize(clip: Clip) -> Packetized:
    codec = next(
        c
        for c in RTCRtpSender.getCapabilities(clip.kind).codecs
        if c.mimeType.lower() in ("video/vp8", "audio/opus")
    )
    encoder = get_encoder(codec)  # type: ignore[arg-type]
    frames = []
    for i, data in enumerate(clip.frames):
        packet = av.Packet(data)
        packet.pts = i
        packet.time_base = fractions.Fraction(1, clip.clock_rate)
        payloads, _ = encoder.pack(packet)
        frames.append(payloads)
    return Packetized(clip.kind, frames, clip.fps, clip.clock_rate)


def jitter(n: int) -> int:
    """A known offset (< 1/3 frame) per frame, so receivers can match frames to sends."""
    return (n * n * 7919 + n * 104729) % 997


class IdleTrack(MediaStreamTrack):
    """Keeps an aiortc sender registered (it hears PLIs) without ever producing media."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    async def recv(self) -> Any:
        await self._never
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        if not self._never.done():
            self._never.set_result(None)


class ClipPublisher:
    """Sends a packetized clip on a client's transceiver, in real time, from a timer.

    A keyframe request (PLI/FIR to aiortc's sender) restarts the clip at its keyframe.
    ``sent`` maps each frame's RTP timestamp (minus the random origin) to its send time.
    """

    def __init__(self, transceiver: RTCRtpTransceiver, clip: Packetized, record: bool = False):
        self.clip = clip
        self.transceiver = transceiver
        sender = transceiver.sender
        self.track = IdleTrack(clip.kind)
        sender.replaceTrack(self.track)
        _aiortc.hook_keyframe_requests(sender, self.request_keyframe)
        self.ssrc = _aiortc.sender_ssrcs(sender)[0]
        self.keyframe_requests = 0
        self.sent: dict[int, float] = {}
        self.packets = 0
        self.record = record
        self._index = 0
        self._n = 0
        self._seq = random.randint(0, 0xFFFF)
        self.origin = random.getrandbits(32)
        self._pid = random.randint(0, 0x7FFF)
        self._start: float | None = None
        self._timer: asyncio.Handle | None = None
        self._pt: int | None = None
        self.stopped = False

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_soon(self._tick)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._index = 0

    def _payload_type(self) -> int | None:
        if self._pt is None:
            codecs, _ = _aiortc.negotiated(self.transceiver)
            media = [c for c in codecs if not c.mimeType.lower().endswith("/rtx")]
            self._pt = media[0].payloadType if media else None
        return self._pt

    def _tick(self) -> None:
        if self.stopped:
            return
        loop = asyncio.get_running_loop()
        dtls = self.transceiver.sender.transport
        sessions = _aiortc.srtp_sessions(dtls)
        pair = _aiortc.nominated_pairs(dtls).get(1)
        pt = self._payload_type()
        if sessions is None or pair is None or pt is None:
            self._timer = loop.call_later(0.02, self._tick)
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        clip = self.clip
        payloads = clip.frames[self._index]
        self._index = (self._index + 1) % len(clip.frames)
        ts_rel = self._n * clip.step + jitter(self._n)
        ts = (self.origin + ts_rel) & 0xFFFFFFFF
        video = clip.kind == "video"
        tx = sessions[1]
        udp, addr = pair.protocol.transport, pair.remote_addr
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            if video:
                desc = parse_vp8(payload, 0, len(payload))
                if desc is not None and desc.picture_id is not None:
                    payload = (
                        vp8_descriptor(desc, self._pid, desc.tl0picidx) + payload[desc.length :]
                    )
            marker = 0x80 if i == last else 0
            data = HEADER.pack(0x80, marker | pt, self._seq, ts, self.ssrc) + payload
            self._seq = (self._seq + 1) & 0xFFFF
            udp.sendto(tx.protect(data), addr)
            self.packets += 1
        if video:
            self._pid = (self._pid + 1) & 0x7FFF
        if self.record:
            self.sent[ts_rel] = time.monotonic()
        self._n += 1
        due = self._start + self._n / clip.fps
        self._timer = loop.call_later(max(0.0, due - time.monotonic()), self._tick)

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
        self.track.stop()


@dataclass
class StreamCount:
    packets: int = 0
    frames: int = 0
    """Packets with the marker bit: video frames (Opus marks only talkspurt starts)."""
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    """(RTP timestamp, arrival) of each frame's marker packet, when recorded."""
    first_frame_at: float | None = None


class RtpCounter:
    """Counts a client's incoming RTP per SSRC without decrypting it (RTCP goes to aiortc)."""

    def __init__(self, transport: Any, record: bool = False) -> None:
        self.streams: dict[int, StreamCount] = {}
        self.record = record
        _aiortc.install()  # RTP skips aioice's STUN parse, as in the server
        _aiortc.tap(transport, self.on_datagram, rtcp=False)

    def on_datagram(self, data: bytes) -> None:
        if len(data) < 12:
            return
        ssrc = int.from_bytes(data[8:12], "big")
        stream = self.streams.get(ssrc)
        if stream is None:
            stream = self.streams[ssrc] = StreamCount()
        stream.packets += 1
        if data[1] & 0x80:
            stream.frames += 1
            if stream.first_frame_at is None:
                stream.first_frame_at = time.monotonic()
            if self.record:
                (ts,) = struct.unpack_from("!I", data, 4)
                stream.arrivals.append((ts, time.monotonic()))

    def packets(self) -> int:
        return sum(s.packets for s in self.streams.values())

    def frames(self) -> dict[int, int]:
        return {ssrc: s.frames for ssrc, s in self.streams.items()}
