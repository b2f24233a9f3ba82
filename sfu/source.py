"""A published track as the SFU receives it: one packet in, every subscriber leg out.

The source unwraps sequence numbers, repairs loss on the publisher's leg (NACK, RTX
unwrap), keeps a bounded cache of recent packets for the subscribers' NACKs, reads the
codec facts each leg needs (VP8 descriptor, keyframe starts, audio level) once per
packet, and aggregates keyframe requests into rate-limited PLIs. Nothing here decodes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import rtcp
from .rtp import (
    RtpHeader,
    Vp8Descriptor,
    abs_send_time,
    extensions,
    h264_frame_start,
    parse_header,
    parse_vp8,
    rtx_original,
)

if TYPE_CHECKING:
    from .leg import Leg

SEQ_BASE = 0x10000
"""Extended sequence numbers start one cycle up, so they stay positive across early wraps."""
MAX_JUMP = 3000
"""A forward jump larger than this is a restarted stream, not loss."""


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    """Upper-case encoding name: VP8, H264, OPUS."""
    clock_rate: int


@dataclass(frozen=True)
class SourceConfig:
    """Bounds and timings of loss repair and keyframe requests."""

    video_cache_packets: int = 512
    """Recent video packets kept for subscribers' NACKs (~2-4 s at 480p; a power of two)."""
    audio_cache_packets: int = 128
    nack_delay_s: float = 0.01
    """A gap is NACKed once it is this old (reordering settles first)."""
    nack_interval_s: float = 0.04
    nack_tries: int = 10
    nack_give_up_s: float = 1.0
    max_missing: int = 256
    """Missing packets tracked per source; beyond, the oldest are given up."""
    keyframe_interval_s: float = 0.5
    """At most one PLI per this interval per source."""
    keyframe_retry_s: float = 1.0
    """A keyframe asked for and not seen this long after is asked for again, while a
    connected leg still waits: a lost PLI, or one sent before the publisher's first
    packet (its first keyframe dropped before its SSRC was bound), would otherwise
    freeze the legs until the publisher happens to send one."""
    min_bitrate: int = 150_000
    """REMB to a publisher never goes below this, whatever one subscriber reports."""
    max_bitrate: int = 3_000_000
    """REMB to a publisher when no subscriber reports an estimate, and its ceiling."""
    keyframe_replay_packets: int = 0
    """A new video leg is started from the cached last keyframe and every packet since
    (Galène's way, with the frames in between) when that is at most this many packets;
    otherwise, and when 0, the publisher is asked for a keyframe (PLI)."""


class Upstream(Protocol):
    """Where a source's feedback to its publisher goes (its peer connection, or a pipe)."""

    local_ssrc: int

    def send_rtcp(self, data: bytes) -> None: ...


class InPacket:
    """One received media packet, read once and shared by every leg and the cache."""

    __slots__ = ("arrival", "audio_level", "data", "header", "keyframe", "send_time", "seq", "vp8")

    def __init__(self, data: bytes, header: RtpHeader, seq: int, arrival: float) -> None:
        self.data = data
        self.header = header
        self.seq = seq
        """Extended (unwrapped) sequence number in the publisher's numbering."""
        self.arrival = arrival
        self.keyframe = False
        """The packet is the first of a keyframe (a gated leg may start on it)."""
        self.vp8: Vp8Descriptor | None = None
        self.audio_level: bytes | None = None
        self.send_time = b""
        """abs-send-time of the forwarded copies (3 bytes), set by the receiving transport."""


class Source:
    """A publisher's camera, microphone or screen, fanned out to its subscribers' legs."""

    def __init__(
        self,
        kind: str,
        stream_id: str,
        config: SourceConfig,
        upstream: Upstream,
        on_frame_packets: Callable[[int], None] | None = None,
    ) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.stream_id = stream_id
        self.config = config
        self.upstream = upstream
        self.legs: list[Leg] = []
        """Legs that forward this source now (attached and negotiated as sending)."""
        self.media_ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.codecs: dict[int, Codec] = {}
        """Payload type -> codec, in the publisher's numbering."""
        self.rtx_payload_types: dict[int, int] = {}
        """RTX payload type -> the media payload type it repairs."""
        self.audio_level_id: int | None = None
        size = config.video_cache_packets if self.video else config.audio_cache_packets
        # Plain bytes and ints: the cache holds nothing the garbage collector tracks, so
        # packets never get promoted to its old generations (whose passes stall the loop).
        self._cache: list[bytes | None] = [None] * size
        self._cache_seq: list[int] = [-1] * size
        self._mask = size - 1
        self.highest: int | None = None
        self._renumber = False
        self._keyframe_seq: int | None = None
        """Extended sequence number of the first packet of the last keyframe."""
        self.pipe_ssrc: int | None = None
        """The SSRC this track has on pipes to other workers (chosen when first piped)."""
        self.replays = 0
        self.missing: dict[int, list[float]] = {}
        """Extended seq -> [first seen missing, last NACKed, tries]."""
        self._nack_timer: asyncio.TimerHandle | None = None
        self._pli_timer: asyncio.TimerHandle | None = None
        self._keyframe_check: asyncio.TimerHandle | None = None
        self._last_pli = -1e9
        self.closed = False
        # receiver-report state (RFC 3550 appendix A.3, A.8)
        self._base: int | None = None
        self.received = 0
        self._expected_prior = 0
        self._received_prior = 0
        self._jitter = 0.0
        self._transit: float | None = None
        self._lsr = 0
        self._lsr_at = 0.0
        # the publisher's NTP/RTP mapping, for the legs' sender reports (lip-sync)
        self._sr_rtp: int | None = None
        self._sr_at = 0.0
        self._last_ts = 0
        self._last_at = 0.0
        self._clock = 90000 if self.video else 48000
        # counters
        self.bytes = 0
        self.keyframe_requests = 0
        self.nacks_sent = 0
        self.lost = 0
        self.restarts = 0
        self._on_frame_packets = on_frame_packets

    # ---------------------------------------------------------------- negotiation

    def configure(
        self,
        codecs: dict[int, Codec],
        rtx_payload_types: dict[int, int],
        audio_level_id: int | None,
    ) -> None:
        """What the publisher's m-line negotiated (payload types, extension ids)."""
        self.codecs = codecs
        self.rtx_payload_types = rtx_payload_types
        self.audio_level_id = audio_level_id
        if codecs:
            self._clock = next(iter(codecs.values())).clock_rate

    @property
    def clock_rate(self) -> int:
        return self._clock

    # ---------------------------------------------------------------- hot path

    def on_rtp(self, data: bytes, header: RtpHeader, arrival: float, send_time: bytes) -> None:
        """One packet from the publisher (media or RTX): cache it, hand it to every leg."""
        codec = self.codecs.get(header.payload_type)
        if codec is None:
            media_pt = self.rtx_payload_types.get(header.payload_type)
            if media_pt is None:
                return
            original = rtx_original(data, header, media_pt, self.media_ssrc or header.ssrc)
            if original is None:
                return  # padding-only probe
            parsed = parse_header(original)
            if parsed is None:
                return
            data, header = original, parsed
            codec = self.codecs[media_pt]
        elif self.media_ssrc is None:
            self.media_ssrc = header.ssrc
        seq16 = header.sequence_number
        highest = self.highest
        if highest is None:
            seq = self._start(seq16)
        elif self._renumber:
            seq = self._restart(seq16)
        else:
            delta = ((seq16 - highest + 0x8000) & 0xFFFF) - 0x8000
            seq = highest + delta
            if delta > 0:
                if delta > MAX_JUMP:
                    seq = self._restart(seq16)
                elif delta > 1:
                    self._gap(highest + 1, seq, arrival)
                self.highest = seq
            elif delta == 0 or self.missing.pop(seq, None) is None:
                return  # a duplicate, or older than what we still wait for
        packet = self._read(data, header, seq, arrival, codec)
        packet.send_time = send_time
        slot = seq & self._mask
        self._cache[slot] = data
        self._cache_seq[slot] = seq
        if packet.keyframe and seq == self.highest:
            self._keyframe_seq = seq
        self.received += 1
        self.bytes += header.payload_end - header.payload_start
        if seq == self.highest:
            transit = arrival * self._clock - header.timestamp
            if self._transit is not None:
                self._jitter += (abs(transit - self._transit) - self._jitter) / 16.0
            self._transit = transit
            self._last_ts = header.timestamp
            self._last_at = arrival
        for leg in self.legs:
            leg.forward(packet)

    def _start(self, seq16: int) -> int:
        seq = seq16 + SEQ_BASE
        self.highest = self._base = seq
        return seq

    def _restart(self, seq16: int) -> int:
        """The publisher restarted its numbering (or its SSRC): every leg starts over.

        The new numbering continues well above the old one, with the same low 16 bits.
        """
        self.restarts += 1
        self._renumber = False
        self._keyframe_seq = None
        self.missing.clear()
        seq = ((self.highest or 0) + MAX_JUMP + 0x10000) & ~0xFFFF | seq16
        self.highest = self._base = seq
        self.received = self._expected_prior = self._received_prior = 0
        self._transit = None
        for leg in list(self.legs):
            leg.source_restarted()
        self.request_keyframe()
        return seq

    def new_ssrc(self, ssrc: int) -> None:
        """The publisher's m-line now sends with another SSRC: a new stream on the same legs."""
        self.media_ssrc = ssrc
        self._renumber = self.highest is not None

    def _read(
        self, data: bytes, header: RtpHeader, seq: int, arrival: float, codec: Codec
    ) -> InPacket:
        """The codec facts legs need: keyframe starts, the VP8 descriptor, audio level."""
        packet = InPacket(data, header, seq, arrival)
        if self.video:
            if codec.name == "VP8":
                desc = parse_vp8(data, header.payload_start, header.payload_end)
                if desc is not None:
                    packet.vp8 = desc
                    packet.keyframe = desc.keyframe
            elif codec.name == "H264":
                first, key = h264_frame_start(data, header.payload_start, header.payload_end)
                packet.keyframe = first and key
        elif self.audio_level_id is not None and header.ext_profile:
            packet.audio_level = extensions(data, header).get(self.audio_level_id)
        return packet

    def moved(self, upstream: Upstream) -> None:
        """The publisher now sends from another connection: new SSRCs, a new numbering."""
        self.upstream = upstream
        self.media_ssrc = self.rtx_ssrc = None
        self._renumber = self.highest is not None
        self.missing.clear()

    def get(self, seq: int) -> InPacket | None:
        """The cached packet with this extended sequence number, read again (for a NACK)."""
        slot = seq & self._mask
        data = self._cache[slot]
        if data is None or self._cache_seq[slot] != seq:
            return None
        header = parse_header(data)
        codec = self.codecs.get(header.payload_type) if header is not None else None
        if header is None or codec is None:
            return None
        packet = self._read(data, header, seq, time.monotonic(), codec)
        if self.video:
            packet.send_time = abs_send_time(time.time())
        return packet

    # ---------------------------------------------------------------- loss repair upstream

    def _gap(self, first: int, end: int, now: float) -> None:
        missing = self.missing
        if end - first > self.config.max_missing:
            first = end - self.config.max_missing
            self._unrepairable()
        for seq in range(first, end):
            missing[seq] = [now, 0.0, 0.0]
        overflow = len(missing) - self.config.max_missing
        if overflow > 0:
            for seq in sorted(missing)[:overflow]:
                del missing[seq]
            self._unrepairable()
        if self._nack_timer is None and not self.closed:
            loop = asyncio.get_running_loop()
            self._nack_timer = loop.call_later(self.config.nack_delay_s, self._nack_round)

    def _nack_round(self) -> None:
        self._nack_timer = None
        if self.closed or not self.missing:
            return
        config = self.config
        now = time.monotonic()
        due: list[int] = []
        gave_up = False
        for seq, entry in list(self.missing.items()):
            first, last, tries = entry
            if tries >= config.nack_tries or now - first > config.nack_give_up_s:
                del self.missing[seq]
                gave_up = True
            elif now - last >= config.nack_interval_s and now - first >= config.nack_delay_s:
                entry[1] = now
                entry[2] = tries + 1
                due.append(seq & 0xFFFF)
        if due and self.media_ssrc is not None:
            self.nacks_sent += len(due)
            self.upstream.send_rtcp(rtcp.nack(self.upstream.local_ssrc, self.media_ssrc, due))
        if gave_up:
            self._unrepairable()
        if self.missing:
            loop = asyncio.get_running_loop()
            self._nack_timer = loop.call_later(config.nack_interval_s / 2, self._nack_round)

    def _unrepairable(self) -> None:
        """A hole retransmission will not fill: video legs wait for the next keyframe."""
        self.lost += 1
        if not self.video:
            return
        for leg in self.legs:
            leg.gate()
        self.request_keyframe()

    # ---------------------------------------------------------------- keyframes

    def start(self, leg: Leg) -> None:
        """A video leg begins: from the cached keyframe if it is recent, else by a PLI.

        A leg whose subscriber is not connected yet is started by its transport later.
        """
        if not leg.output.connected():
            return
        first, last = self._keyframe_seq, self.highest
        limit = self.config.keyframe_replay_packets
        if first is not None and last is not None and 0 <= last - first < limit:
            packets = [self.get(seq) for seq in range(first, last + 1)]
            if all(p is not None for p in packets):
                self.replays += 1
                for packet in packets:
                    leg.forward(packet)  # type: ignore[arg-type]
                return
        self.request_keyframe()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per keyframe interval."""
        if self.closed or not self.video or self._pli_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_pli + self.config.keyframe_interval_s - loop.time()
        if wait <= 0:
            self._send_pli()
        else:
            self._pli_timer = loop.call_later(wait, self._deferred_pli)

    def _deferred_pli(self) -> None:
        self._pli_timer = None
        if not self.closed:
            self._send_pli()

    def _send_pli(self) -> None:
        loop = asyncio.get_running_loop()
        if self._keyframe_check is None:
            self._keyframe_check = loop.call_later(
                self.config.keyframe_retry_s, self._check_keyframe
            )
        if self.media_ssrc is None:
            return  # nothing received yet: the check above asks again once packets come
        self._last_pli = loop.time()
        self.keyframe_requests += 1
        self.upstream.send_rtcp(rtcp.pli(self.upstream.local_ssrc, self.media_ssrc))

    def _check_keyframe(self) -> None:
        self._keyframe_check = None
        if not self.closed and any(leg.waiting and leg.output.connected() for leg in self.legs):
            self.request_keyframe()

    # ---------------------------------------------------------------- RTCP

    def target_bitrate(self) -> int:
        """REMB for the publisher: what its weakest subscriber can take, floored and capped."""
        config = self.config
        shares = [e for e in (leg.output.receive_estimate() for leg in self.legs) if e]
        if not shares:
            return config.max_bitrate
        return int(min(config.max_bitrate, max(config.min_bitrate, min(shares))))

    def on_sender_report(self, report: rtcp.SenderReport, now: float) -> None:
        self._lsr = rtcp.ntp_middle(report.ntp)
        self._lsr_at = now
        self._sr_rtp = report.rtp_timestamp
        self._sr_at = now

    def rtp_now(self, now: float) -> int | None:
        """The publisher's RTP timestamp for local time ``now`` (from its last SR, if any)."""
        if self._sr_rtp is not None:
            return (self._sr_rtp + int((now - self._sr_at) * self._clock)) & 0xFFFFFFFF
        if self._last_at:
            return (self._last_ts + int((now - self._last_at) * self._clock)) & 0xFFFFFFFF
        return None

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        """This source's receiver report block (RFC 3550 section 6.4.1)."""
        if self.highest is None or self._base is None or self.media_ssrc is None:
            return None
        expected = self.highest - self._base + 1
        lost = expected - self.received
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = int((now - self._lsr_at) * 65536) if self._lsr_at else 0
        return rtcp.ReportBlock(
            ssrc=self.media_ssrc,
            fraction_lost=fraction,
            packets_lost=lost,
            highest_sequence=(self.highest - SEQ_BASE) & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._lsr,
            dlsr=dlsr & 0xFFFFFFFF,
        )

    # ---------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Stops timers; the plane detaches the legs (they stay, for the next source)."""
        self.closed = True
        for timer in (self._nack_timer, self._pli_timer, self._keyframe_check):
            if timer is not None:
                timer.cancel()
        self._nack_timer = self._pli_timer = self._keyframe_check = None
        self.missing.clear()
