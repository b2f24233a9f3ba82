"""Every use of aiortc's private internals lives here (written for aiortc 1.16.0).

aiortc has no public way to receive encoded frames, to hear a subscriber's PLI, or to
label a sender's MediaStream, so the SFU reaches into these private names:

* ``aiortc.rtcrtpreceiver.decoder_worker`` (module global, looked up by ``receive()``):
  wrapped so that receivers we marked start no decoder thread work at all.
* ``RTCRtpReceiver._RTCRtpReceiver__jitter_buffer``: replaced per marked receiver by
  :class:`FrameAssembler`, which emits complete encoded frames on the marker bit (the
  stock buffer waits for the next frame's first packet: one frame interval of latency,
  and four packets for audio) straight to a callback on the event loop (no thread hop).
* ``RTCRtpReceiver._RTCRtpReceiver__decoder_queue``: replaced by a marker queue.
* ``RTCRtpReceiver._RTCRtpReceiver__codecs``: payload type -> codec, read per frame.
* ``RTCRtpReceiver._send_rtcp_pli``: how we ask a publisher for a keyframe.
* ``RTCRtpSender._send_keyframe``: shadowed per instance, receives subscriber PLI/FIR.
* ``RTCRtpSender._stream_id``: the MediaStream id written into ``a=msid``.
* ``RTCRtpSender._RTCRtpSender__packet_count``: packets sent, for stats.
* ``RTCRtpSender._run_rtp``: shadowed per forwarding sender by :func:`_fast_run_rtp`,
  which uses the sender's private state (history, counters, events, encoder), the DTLS
  transport's ``_state``/``_tx_srtp`` and aioice's ``Connection._nominated`` pair.

The rest of the receive path (SRTP, RTX unwrap, NACK generation, REMB, receiver
reports) and of the send path (pack(), RTX/NACK history, sender reports) is kept.
Bump the pinned version only after re-reading those files.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from struct import pack
from typing import Any

import aiortc
import aiortc.rtcrtpreceiver as _rtcrtpreceiver
from aioice.ice import StunProtocol
from aiortc import RTCRtpReceiver, RTCRtpSender, clock
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, RtpPacket
from aiortc.utils import random32

logger = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"
if aiortc.__version__ != AIORTC_VERSION:  # pragma: no cover - guards an upgrade
    raise ImportError(
        f"sfu patches aiortc {AIORTC_VERSION} private internals, found {aiortc.__version__}"
    )

VIDEO_CAPACITY = 128
"""Packets the video assembler holds while waiting for a retransmission (~1 s at 480p)."""


@dataclass(slots=True)
class EncodedFrame:
    """One complete encoded frame as received from a publisher (never decoded)."""

    data: bytes
    timestamp: int
    """RTP timestamp, unwrapped to 64 bits (monotonic within one epoch)."""
    clock_rate: int
    keyframe: bool
    clean: bool
    """False when frames were lost right before this one (references may be missing)."""
    epoch: int
    """Changes when the publisher's SSRC changes: timestamps restart."""
    packets: int
    received_at: float


FrameCallback = Callable[[EncodedFrame], None]
LossCallback = Callable[[], None]


class _NoDecodeQueue(queue.Queue[Any]):
    """Marks a receiver whose decoder thread must not run."""


class _Counters:
    """Process-wide counts so tests can prove the SFU's receivers never decode."""

    def __init__(self) -> None:
        self.passthrough_receivers = 0
        self.decoder_workers = 0


COUNTERS = _Counters()
_original_decoder_worker = _rtcrtpreceiver.decoder_worker


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    """Thread target of ``RTCRtpReceiver.receive()``: returns at once for SFU receivers."""
    if isinstance(input_q, _NoDecodeQueue):
        COUNTERS.passthrough_receivers += 1
        return
    COUNTERS.decoder_workers += 1
    _original_decoder_worker(loop, input_q, output_q, decode_error)


_rtcrtpreceiver.decoder_worker = _decoder_worker


def _vp8_frame_info(first_payload: bytes, data: bytes) -> tuple[bool, bool]:
    """(starts a frame, is a keyframe) for VP8 (RFC 7741 descriptor S bit + PartID 0)."""
    starts = bool(first_payload) and (first_payload[0] & 0x10) != 0
    starts = starts and (first_payload[0] & 0x0F) == 0
    return starts, starts and len(data) > 0 and (data[0] & 0x01) == 0


def _h264_frame_info(payloads: list[bytes]) -> tuple[bool, bool]:
    """(starts a frame, is a keyframe) for H264: IDR (5) or SPS (7) NAL units."""
    first = payloads[0]
    if not first:
        return False, False
    starts = (first[0] & 0x1F) != 28 or (len(first) > 1 and first[1] & 0x80 != 0)
    keyframe = False
    for payload in payloads:
        if len(payload) < 2:
            continue
        nal = payload[0] & 0x1F
        if nal == 28:
            types = [payload[1] & 0x1F]
        elif nal == 24:
            types = []
            pos = 1
            while pos + 2 < len(payload):
                size = (payload[pos] << 8) | payload[pos + 1]
                types.append(payload[pos + 2] & 0x1F)
                pos += 2 + size
        else:
            types = [nal]
        if 5 in types or 7 in types:
            keyframe = True
            break
    return starts, starts and keyframe


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
            starts, keyframe = _vp8_frame_info(first.payload, data)
        elif name == "H264":
            starts, keyframe = _h264_frame_info([p.payload for p in parts])
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


def install_passthrough(
    receiver: RTCRtpReceiver, kind: str, on_frame: FrameCallback, on_loss: LossCallback
) -> FrameAssembler:
    """Make ``receiver`` deliver encoded frames to ``on_frame`` and never decode.

    Must be called before ``receive()`` runs (i.e. before the answer is applied).
    """
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    assembler = FrameAssembler(kind, codecs, on_frame, on_loss)
    receiver._RTCRtpReceiver__jitter_buffer = assembler  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = _NoDecodeQueue()  # type: ignore[attr-defined]
    return assembler


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Ask the publisher behind ``receiver`` for a keyframe (RTCP PLI)."""
    await receiver._send_rtcp_pli(media_ssrc)


def hook_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Route a subscriber's PLI/FIR (which aiortc turns into a no-op flag) to callback."""
    sender._send_keyframe = callback  # type: ignore[method-assign]


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """Set the MediaStream id aiortc writes into this m-line's ``a=msid``."""
    sender._stream_id = stream_id


def sent_packets(sender: RTCRtpSender) -> int:
    """RTP packets this sender has sent (media only, not retransmissions)."""
    return int(sender._RTCRtpSender__packet_count)  # type: ignore[attr-defined]


_P = "_RTCRtpSender__"


async def _fast_run_rtp(self: RTCRtpSender, codec: Any) -> None:
    """``RTCRtpSender._run_rtp`` for tracks that yield ``av.Packet`` (1.16.0 semantics).

    Same packets, history (NACK/RTX), counters and shutdown as the original, with the
    per-packet work cut down: header extensions and the NTP clock once per frame, the RTP
    header packed directly, SRTP and the UDP send called synchronously (four coroutine
    layers skipped) whenever the selected ICE pair is a plain UDP/STUN one.
    """
    d = self.__dict__
    d[_P + "rtp_started"].set()
    history: dict[int, RtpPacket] = d[_P + "rtp_history"]
    ext_map = d[_P + "rtp_header_extensions_map"]
    mid = d[_P + "mid"]
    seq = random_sequence_number()
    origin = random32()
    pt = codec.payloadType
    ssrc = self._ssrc
    encoder = None
    try:
        while True:
            track = d[_P + "track"]
            if not track:
                await asyncio.sleep(0.02)
                continue
            data = await track.recv()
            if not self._enabled:
                continue
            if encoder is None:
                encoder = d[_P + "encoder"] = get_encoder(codec)
            payloads, frame_ts = encoder.pack(data)
            if not payloads:
                continue
            timestamp = (origin + frame_ts) & 0xFFFFFFFF
            ntp = clock.current_ntp_time()
            ext = HeaderExtensions()
            ext.abs_send_time = (ntp >> 14) & 0x00FFFFFF
            ext.mid = mid
            profile, ext_value = ext_map.set(ext)
            if ext_value:
                first = 0x90
                ext_bytes = pack("!HH", profile, len(ext_value) >> 2) + ext_value
            else:
                first = 0x80
                ext_bytes = b""
            dtls = self.transport
            if dtls._state != DtlsState.CONNECTED:
                raise ConnectionError("Cannot send encrypted RTP, not connected")
            protect = dtls._tx_srtp.protect
            pair = dtls.transport._connection._nominated.get(1)
            if pair is None:
                raise ConnectionError("Cannot send data, not connected")
            direct = type(pair.protocol) is StunProtocol
            last = len(payloads) - 1
            octets = 0
            for i, payload in enumerate(payloads):
                marker = 1 if i == last else 0
                packet = RtpPacket(
                    payload_type=pt,
                    marker=marker,
                    sequence_number=seq,
                    timestamp=timestamp,
                    ssrc=ssrc,
                    payload=payload,
                )
                packet.extensions = ext
                history[seq % RTP_HISTORY_SIZE] = packet
                wire = protect(
                    pack("!BBHLL", first, (marker << 7) | pt, seq, timestamp, ssrc)
                    + ext_bytes
                    + payload
                )
                if direct:
                    pair.protocol.transport.sendto(wire, pair.remote_addr)
                else:  # e.g. TURN: let aioice frame it
                    await pair.protocol.send_data(wire, pair.remote_addr)
                octets += len(payload)
                seq = (seq + 1) & 0xFFFF
            d[_P + "ntp_timestamp"] = ntp
            d[_P + "rtp_timestamp"] = timestamp
            d[_P + "octet_count"] += octets
            d[_P + "packet_count"] += last + 1
    except (asyncio.CancelledError, ConnectionError, MediaStreamError):
        pass
    except Exception:
        logger.exception("forwarding sender failed")
    track = d[_P + "track"]
    if track:
        track.stop()
        d[_P + "track"] = None
    d[_P + "encoder"] = None
    d[_P + "rtp_exited"].set()


def install_fast_sender(sender: RTCRtpSender) -> None:
    """Make ``sender`` use :func:`_fast_run_rtp` (before ``send()`` starts it)."""
    sender._run_rtp = types.MethodType(_fast_run_rtp, sender)  # type: ignore[method-assign]
