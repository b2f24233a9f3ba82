"""One subscriber's copy of a source: its SSRC, its numbering, its header extensions.

A leg lives as long as its m-line on the subscriber's connection. Sources are attached
and detached (a recycled m-line carries someone else later); the leg keeps its sequence
numbers, timestamps and VP8 picture ids continuous across drops, gating and source
switches, answers its subscriber's NACKs from the source's cache (as RTX where
negotiated) and passes PLI/FIR up to the source, which aggregates them.
"""

from __future__ import annotations

import random
import struct
import time
from collections import deque
from typing import Any, Protocol

from . import rtcp
from .rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    build,
    one_byte_element,
    seq_delta,
    vp8_descriptor,
)
from .source import InPacket, Source

MAX_RETRANSMIT_PER_NACK = 64
RETRANSMIT_BURST = 200
RETRANSMIT_RATE = 400.0
"""Retransmissions per second a subscriber may ask for (token bucket), beyond it NACKs wait."""

_EXT_HEADER = struct.Struct("!HH")


class Output(Protocol):
    """The subscriber's side of a leg: where its packets go (a peer connection, a pipe)."""

    def receive_estimate(self) -> float | None:
        """What this subscriber can take for one video stream (its REMB share), if known."""

    def connected(self) -> bool:
        """Whether packets can be protected and sent now (DTLS done, a pair nominated)."""

    def send_rtp(self, data: bytes) -> bool: ...


class Leg:
    """The sending m-line of one subscriber for one source at a time."""

    def __init__(self, kind: str, output: Output, ssrc: int, rtx_ssrc: int) -> None:
        self.kind = kind
        self.video = kind == "video"
        self.output = output
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.source: Source | None = None
        self.active = False
        """Negotiated as sending: only active legs are in their source's ``legs``."""
        self.mid = ""
        self._codecs: dict[str, tuple[int, int | None]] = {}
        """Encoding name -> (payload type, RTX payload type) on this m-line."""
        self._pt: dict[int, int] = {}
        """Source payload type -> this leg's payload type."""
        self._rtx_pt: dict[int, int] = {}
        """This leg's payload type -> its RTX payload type."""
        self._mid_element = b""
        self._send_time_prefix = b""
        self._level_prefix = b""
        # numbering
        self.seq_off = 0
        self.ts_off = 0
        self.pid_off = 0
        self.tl0_off = 0
        self.resume = 0
        self.waiting = self.video
        """Drops everything until the first packet of a keyframe (video)."""
        self.resync = True
        """The next forwarded packet re-bases the numbering (after a gate or a switch)."""
        self._new_timeline = True
        self.last_seq: int | None = None
        """Highest extended sequence number sent on this leg."""
        self.last_ts = 0
        self.last_at = 0.0
        self.last_pid: int | None = None
        self.last_tl0: int | None = None
        self._rtx_seq = random.randint(0, 0xFFFF)
        # stats
        self.packets = 0
        self.octets = 0
        self.retransmits = 0
        self.keyframe_requests = 0
        self.fraction_lost = 0
        self.rtt: float | None = None
        self._sr_sent: deque[tuple[int, float]] = deque(maxlen=8)
        self._tokens = float(RETRANSMIT_BURST)
        self._tokens_at = time.monotonic()

    # ------------------------------------------------------------------ negotiation

    def configure(self, mid: str, codecs: list[Any], header_extensions: list[Any]) -> None:
        """What this m-line negotiated: payload types, RTX, extension ids (aiortc params)."""
        self.mid = mid
        table: dict[str, tuple[int, int | None]] = {}
        for codec in codecs:
            name = codec.mimeType.split("/")[-1].upper()
            if name == "RTX":
                continue
            rtx = next(
                (
                    c.payloadType
                    for c in codecs
                    if c.mimeType.lower().endswith("/rtx")
                    and c.parameters.get("apt") == codec.payloadType
                ),
                None,
            )
            table.setdefault(name, (codec.payloadType, rtx))
        self._codecs = table
        ids = {ext.uri: ext.id for ext in header_extensions}
        mid_id = ids.get(URI_MID)
        self._mid_element = one_byte_element(mid_id, mid.encode()) if mid_id and mid else b""
        send_time_id = ids.get(URI_ABS_SEND_TIME) if self.video else None
        self._send_time_prefix = bytes(((send_time_id << 4) | 2,)) if send_time_id else b""
        level_id = ids.get(URI_AUDIO_LEVEL) if not self.video else None
        self._level_prefix = bytes(((level_id << 4) | 0,)) if level_id else b""
        self._map_payload_types()

    def _map_payload_types(self) -> None:
        source = self.source
        self._pt = {}
        self._rtx_pt = {}
        if source is None:
            return
        for pt, codec in source.codecs.items():
            mine = self._codecs.get(codec.name)
            if mine is not None:
                self._pt[pt] = mine[0]
                if mine[1] is not None:
                    self._rtx_pt[mine[0]] = mine[1]

    # ------------------------------------------------------------------ sources

    def attach(self, source: Source) -> None:
        """Forward ``source`` from now on (once active); the numbering continues."""
        if self.source is source:
            return
        self.detach()
        self.source = source
        self._map_payload_types()
        self.resync = True
        self._new_timeline = True
        self.waiting = self.video
        if self.active:
            source.legs.append(self)
            if self.video:
                source.start(self)

    def detach(self) -> None:
        source = self.source
        if source is None:
            return
        if self in source.legs:
            source.legs.remove(self)
        self.source = None

    def activate(self) -> None:
        """The subscriber's answer accepted this m-line as sending: start on a keyframe."""
        if self.active:
            return
        self.active = True
        self.waiting = self.video
        self.resync = True
        source = self.source
        if source is not None and self not in source.legs:
            source.legs.append(self)
            if self.video:
                source.start(self)

    def deactivate(self) -> None:
        self.active = False
        source = self.source
        if source is not None and self in source.legs:
            source.legs.remove(self)

    def source_restarted(self) -> None:
        """The source's numbering restarted: re-base everything at its next keyframe."""
        self.waiting = self.video
        self.resync = True
        self._new_timeline = True

    def gate(self) -> None:
        """Loss that cannot be repaired: forward nothing until the next keyframe."""
        if self.video:
            self.waiting = True
            self.resync = True

    # ------------------------------------------------------------------ hot path

    def forward(self, packet: InPacket) -> None:
        """Rewrite one source packet for this subscriber and send it."""
        seq = packet.seq
        if self.resync:
            if self.waiting and not packet.keyframe:
                return
            if not self.output.connected():
                return  # not yet: its transport starts it (Source.start) once connected
            self._rebase(packet)
        elif seq < self.resume:
            return  # from before the last re-base: its numbers are taken
        header = packet.header
        pt = self._pt.get(header.payload_type)
        if pt is None:
            return
        out_seq = seq + self.seq_off
        ts = (header.timestamp + self.ts_off) & 0xFFFFFFFF
        prefix = b""
        skip = 0
        vp8 = packet.vp8
        newest = self.last_seq is None or out_seq > self.last_seq
        if vp8 is not None and vp8.picture_id is not None:
            pid = (vp8.picture_id + self.pid_off) & 0x7FFF
            tl0 = vp8.tl0picidx
            if tl0 is not None:
                tl0 = (tl0 + self.tl0_off) & 0xFF
            if self.pid_off or self.tl0_off:
                prefix = vp8_descriptor(vp8, pid, tl0)
                skip = vp8.length
            if newest:
                self.last_pid = pid
                self.last_tl0 = tl0
        elements = self._mid_element
        if self._send_time_prefix:
            elements += self._send_time_prefix + packet.send_time
        if self._level_prefix and packet.audio_level is not None:
            elements += self._level_prefix + packet.audio_level
        if elements:
            elements += b"\x00" * (-len(elements) % 4)
            ext = _EXT_HEADER.pack(0xBEDE, len(elements) >> 2) + elements
        else:
            ext = b""
        data = build(packet.data, header, pt, out_seq & 0xFFFF, ts, self.ssrc, ext, prefix, skip)
        if not self.output.send_rtp(data):
            return
        self.packets += 1
        self.octets += header.payload_end - header.payload_start
        if newest:
            self.last_seq = out_seq
            self.last_ts = ts
            self.last_at = packet.arrival

    def _rebase(self, packet: InPacket) -> None:
        """Numbers continue from what this subscriber last got (first start keeps them)."""
        self.waiting = False
        self.resync = False
        self.resume = packet.seq
        header = packet.header
        if self.last_seq is None:
            self.seq_off = 0
            self.ts_off = 0
        else:
            self.seq_off = self.last_seq + 1 - packet.seq
            if self._new_timeline:
                clock = self.source.clock_rate if self.source is not None else 90000
                elapsed = max(1, int((time.monotonic() - self.last_at) * clock))
                self.ts_off = (self.last_ts + elapsed - header.timestamp) & 0xFFFFFFFF
        self._new_timeline = False
        vp8 = packet.vp8
        if vp8 is not None and vp8.picture_id is not None:
            last_pid, last_tl0 = self.last_pid, self.last_tl0
            self.pid_off = 0 if last_pid is None else (last_pid + 1 - vp8.picture_id) & 0x7FFF
            if vp8.tl0picidx is not None:
                self.tl0_off = 0 if last_tl0 is None else (last_tl0 + 1 - vp8.tl0picidx) & 0xFF

    # ------------------------------------------------------------------ feedback

    def on_nack(self, lost: list[int]) -> None:
        """Retransmit what the subscriber lost, from the source's cache."""
        source = self.source
        last = self.last_seq
        if source is None or last is None:
            return
        now = time.monotonic()
        self._tokens = min(
            float(RETRANSMIT_BURST), self._tokens + (now - self._tokens_at) * RETRANSMIT_RATE
        )
        self._tokens_at = now
        for seq16 in lost[:MAX_RETRANSMIT_PER_NACK]:
            if self._tokens < 1:
                break
            out_seq = last - seq_delta(last & 0xFFFF, seq16)
            seq = out_seq - self.seq_off
            if seq < self.resume or out_seq > last:
                continue
            packet = source.get(seq)
            if packet is None:
                if seq in source.missing:
                    continue  # the publisher's retransmission is on its way
                self.gate()  # gone from the cache: only a keyframe helps now
                source.request_keyframe()
                return
            self._tokens -= 1
            self._retransmit(packet, out_seq)

    def _retransmit(self, packet: InPacket, out_seq: int) -> None:
        header = packet.header
        pt = self._pt.get(header.payload_type)
        if pt is None:
            return
        ts = (header.timestamp + self.ts_off) & 0xFFFFFFFF
        prefix = b""
        skip = 0
        vp8 = packet.vp8
        if vp8 is not None and vp8.picture_id is not None and (self.pid_off or self.tl0_off):
            tl0 = vp8.tl0picidx
            prefix = vp8_descriptor(
                vp8,
                (vp8.picture_id + self.pid_off) & 0x7FFF,
                None if tl0 is None else (tl0 + self.tl0_off) & 0xFF,
            )
            skip = vp8.length
        elements = self._mid_element
        if elements:
            elements += b"\x00" * (-len(elements) % 4)
            ext = _EXT_HEADER.pack(0xBEDE, len(elements) >> 2) + elements
        else:
            ext = b""
        rtx_pt = self._rtx_pt.get(pt)
        if rtx_pt is not None:
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            prefix = struct.pack("!H", out_seq & 0xFFFF) + prefix
            data = build(
                packet.data, header, rtx_pt, self._rtx_seq, ts, self.rtx_ssrc, ext, prefix, skip
            )
        else:
            data = build(
                packet.data, header, pt, out_seq & 0xFFFF, ts, self.ssrc, ext, prefix, skip
            )
        if self.output.send_rtp(data):
            self.retransmits += 1

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe()

    def on_report(self, block: rtcp.ReportBlock, now: float) -> None:
        self.fraction_lost = block.fraction_lost
        for lsr, sent in self._sr_sent:
            if lsr == block.lsr and block.lsr:
                self.rtt = max(0.0, now - sent - block.dlsr / 65536)
                break

    def sender_report(self, ntp: int, now: float) -> bytes | None:
        """This leg's SR: the source's NTP/RTP mapping moved onto this leg's timeline."""
        source = self.source
        if source is None or self.last_seq is None:
            return None
        rtp_now = source.rtp_now(now)
        if rtp_now is None:
            return None
        self._sr_sent.append((rtcp.ntp_middle(ntp), now))
        return rtcp.sender_report(
            self.ssrc, ntp, (rtp_now + self.ts_off) & 0xFFFFFFFF, self.packets, self.octets
        )
