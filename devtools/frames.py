"""Encoded frames out of a plain aiortc receiver, for test and benchmark peers.

The SFU never assembles frames (it forwards packets). Its test clients and the load
generators do, to count what arrives without decoding it: :class:`FrameAssembler`
stands in for aiortc's jitter buffer on a client's receiver and emits each frame at its
marker bit (the stock buffer waits for the next frame's first packet, which would add a
frame of latency to every measurement).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpReceiver

from sfu._aiortc import replace_jitter_buffer
from sfu.rtp import h264_frame_start, parse_vp8

VIDEO_CAPACITY = 128
"""Packets the video assembler holds while waiting for a retransmission (~1 s at 480p)."""


@dataclass(slots=True)
class EncodedFrame:
    """One complete encoded frame as a client received it (never decoded)."""

    data: bytes
    timestamp: int
    """RTP timestamp, unwrapped to 64 bits (monotonic within one epoch)."""
    clock_rate: int
    keyframe: bool
    clean: bool
    """False when frames were lost right before this one (references may be missing)."""
    epoch: int
    """Changes when the sender's SSRC changes: timestamps restart."""
    packets: int
    received_at: float


FrameCallback = Callable[[EncodedFrame], None]
LossCallback = Callable[[], None]


class FrameAssembler:
    """Stands in for aiortc's JitterBuffer: reassembles frames and hands them on.

    Video frames are complete at the marker bit (or when a contiguous packet with a new
    timestamp arrives); audio packets are frames. A hole that retransmission does not
    fill within VIDEO_CAPACITY packets is skipped and the next frame is marked unclean.
    """

    def __init__(
        self,
        kind: str,
        codecs: dict[int, Any],
        on_frame: FrameCallback,
        on_loss: LossCallback,
        capacity: int = VIDEO_CAPACITY,
    ) -> None:
        self._video = kind == "video"
        self._codecs = codecs
        self._on_frame = on_frame
        self._on_loss = on_loss
        self._capacity = capacity
        self._buf: dict[int, Any] = {}
        self._next: int | None = None
        self._clean = False
        self._epoch = 0
        self._ts_last: int | None = None
        self._ts_high = 0
        self.ssrc: int | None = None
        self.packets = 0
        self.frames = 0

    @property
    def capacity(self) -> int:
        """Read by nobody in 1.16.0; kept for JitterBuffer's interface."""
        return self._capacity

    def reset(self) -> None:
        """Forget everything (the publisher's track on this m-line was replaced)."""
        self._buf.clear()
        self._next = None
        self._clean = False
        self._ts_last = None
        self._epoch += 1

    def _unwrap(self, ts: int) -> int:
        last = self._ts_last
        if last is None:
            self._ts_last = ts
            return ts + self._ts_high
        if ((ts - last) & 0xFFFFFFFF) < 0x80000000:  # forward (maybe across a wrap)
            if ts < last:
                self._ts_high += 1 << 32
            self._ts_last = ts
            return ts + self._ts_high
        if ts > last:  # older, from before the wrap
            return ts + self._ts_high - (1 << 32)
        return ts + self._ts_high

    def add(self, packet: Any) -> tuple[bool, None]:
        """Called by ``RTCRtpReceiver._handle_rtp_packet``; never asks it for a PLI."""
        self.packets += 1
        if packet.ssrc != self.ssrc:
            if self.ssrc is not None:
                self.reset()
            self.ssrc = packet.ssrc
        seq = packet.sequence_number
        if self._next is None:
            self._next = seq
            self._clean = False
        delta = (seq - self._next) & 0xFFFF
        if delta >= 0x8000:
            return False, None  # older than what we already emitted: late duplicate
        if not self._video:
            self._next = (seq + 1) & 0xFFFF
            if packet._data:
                self._emit([packet], clean=True)
            return False, None
        if delta >= self._capacity:
            # A hole retransmission did not fill: give up on it, restart at this packet.
            self._buf.clear()
            self._next = seq
            self._clean = False
            self._on_loss()
        self._buf[seq] = packet
        self._drain()
        return False, None

    def _drain(self) -> None:
        buf = self._buf
        while self._next is not None and self._next in buf:
            start = self._next
            ts = buf[start].timestamp
            seq = start
            parts: list[Any] = []
            end: int | None = None
            while True:
                p = buf.get(seq)
                if p is None:
                    return
                if p.timestamp != ts:
                    end = seq
                    break
                parts.append(p)
                seq = (seq + 1) & 0xFFFF
                if p.marker:
                    end = seq
                    break
                if len(parts) >= self._capacity:
                    return
            for p in parts:
                del buf[p.sequence_number]
            self._next = end
            clean = self._clean
            self._clean = True
            self._emit(parts, clean)

    def _emit(self, parts: list[Any], clean: bool) -> None:
        data = b"".join([p._data for p in parts])
        if not data:
            return  # padding-only packets
        first = parts[0]
        codec = self._codecs.get(first.payload_type)
        name = codec.name if codec is not None else ""
        clock_rate = codec.clockRate if codec is not None else 90000
        if not self._video:
            starts, keyframe = True, True
        elif name == "VP8":
            desc = parse_vp8(first.payload, 0, len(first.payload))
            starts = desc is not None and desc.start and desc.partition_id == 0
            keyframe = desc is not None and desc.keyframe
        elif name == "H264":
            starts, keyframe = h264_frame_start(first.payload, 0, len(first.payload))
            keyframe = starts and any(
                h264_frame_start(p.payload, 0, len(p.payload))[1] for p in parts
            )
        else:
            starts, keyframe = True, False
        self.frames += 1
        self._on_frame(
            EncodedFrame(
                data=data,
                timestamp=self._unwrap(first.timestamp),
                clock_rate=clock_rate,
                keyframe=keyframe,
                clean=clean and starts,
                epoch=self._epoch,
                packets=len(parts),
                received_at=time.monotonic(),
            )
        )

    def set_codecs(self, codecs: dict[int, Any]) -> None:
        """The receiver's payload type -> codec table (filled when it starts receiving)."""
        self._codecs = codecs


def install_assembler(
    receiver: RTCRtpReceiver, kind: str, on_frame: FrameCallback, on_loss: LossCallback
) -> FrameAssembler:
    """Make a client's ``receiver`` deliver encoded frames to ``on_frame``, never decoding.

    Must be called before ``receive()`` runs (i.e. before the description is applied).
    """
    assembler = FrameAssembler(kind, {}, on_frame, on_loss)
    assembler.set_codecs(replace_jitter_buffer(receiver, assembler))
    return assembler
