"""The SFU's RTP and RTCP on one peer connection (every m-line is bundled on one transport).

aiortc does ICE, DTLS and SDP; from the moment SRTP keys exist this object owns the
media: each datagram the ICE connection receives is unprotected here, routed by SSRC
(or MID, or payload type, for streams the SDP did not announce) to its `Source`, and
every leg's packet is protected and sent on the nominated pair, synchronously, in the
same event-loop callback. Once a second it writes the connection's RTCP: a sender
report per leg, receiver reports and REMB for what it receives.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import pylibsrtp
from aiortc import RTCDtlsTransport

from . import _aiortc, rtcp
from .leg import Leg
from .rtp import abs_send_time, extensions, parse_header
from .source import Source

logger = logging.getLogger(__name__)

RTCP_INTERVAL_S = 1.0
MAX_RTCP_DATAGRAM = 1200
MAX_WRITE_BUFFER = 256 * 1024
"""Bytes the kernel may hold back before this connection's packets are dropped."""
NTP_EPOCH = 2208988800


def ntp_now() -> int:
    return int((time.time() + NTP_EPOCH) * (1 << 32))


class MediaTransport:
    """RTP/RTCP of one subscriber-and-publisher connection, owned by the SFU."""

    def __init__(self, dtls: RTCDtlsTransport, cname: str) -> None:
        self._dtls = dtls
        self.cname = cname
        self.local_ssrc = random.getrandbits(32)
        """Sender SSRC of the RTCP this transport writes about what it receives."""
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._pairs: dict[int, Any] = {}
        self._pair: Any = None
        self._udp: Any = None
        self._addr: Any = None
        self._direct = True
        self._ssrcs: dict[int, Source] = {}
        self._mids: dict[str, Source] = {}
        self.mid_extension_id: int | None = None
        self.sources: list[Source] = []
        self.legs: dict[int, Leg] = {}
        """Our media and RTX SSRCs -> the leg that sends them. A leg lives as long as its
        m-line (recycled, never removed): this map only grows with the m-lines, and goes
        when the connection closes."""
        self.remb: int | None = None
        """The subscriber's REMB estimate of what it can receive on this connection."""
        self.closed = False
        self._background: set[asyncio.Future[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        # counters
        self.rtp_in = 0
        self.rtcp_in = 0
        self.bytes_out = 0
        self.srtp_errors = 0
        self.dropped = 0
        self._failures = 0
        _aiortc.tap(dtls, self.on_datagram)

        @dtls.on("statechange")
        def on_state() -> None:
            if dtls.state == "connected" and self._tx is None:
                self._connect()

        self._schedule_rtcp()

    # ---------------------------------------------------------------- registry

    def add_source(self, source: Source, mid: str, ssrcs: tuple[int | None, int | None]) -> None:
        """Receive ``source`` on m-line ``mid`` (with the SSRCs the SDP announced, if any)."""
        if source not in self.sources:
            self.sources.append(source)
        self._mids[mid] = source
        media, rtx = ssrcs
        if media is not None:
            if source.media_ssrc is not None and source.media_ssrc != media:
                self._ssrcs.pop(source.media_ssrc, None)
                source.new_ssrc(media)
            source.media_ssrc = media
            self._ssrcs[media] = source
        if rtx is not None:
            source.rtx_ssrc = rtx
            self._ssrcs[rtx] = source

    def remove_source(self, source: Source) -> None:
        if source in self.sources:
            self.sources.remove(source)
        for ssrc in [k for k, v in self._ssrcs.items() if v is source]:
            del self._ssrcs[ssrc]
        for mid in [k for k, v in self._mids.items() if v is source]:
            del self._mids[mid]

    def add_leg(self, leg: Leg) -> None:
        self.legs[leg.ssrc] = leg
        self.legs[leg.rtx_ssrc] = leg

    def receive_estimate(self) -> float | None:
        """This subscriber's REMB shared evenly by the video it receives here."""
        if not self.remb:
            return None
        video = sum(1 for leg in set(self.legs.values()) if leg.video and leg.active)
        return self.remb / max(1, video)

    # ---------------------------------------------------------------- I/O

    def connected(self) -> bool:
        return (self._tx is not None or self._connect()) and 1 in self._pairs

    def _connect(self) -> bool:
        if self.closed:
            return False
        sessions = _aiortc.srtp_sessions(self._dtls)
        if sessions is None:
            return False
        self._rx, self._tx = sessions
        self._pairs = _aiortc.nominated_pairs(self._dtls)
        # Video legs negotiated before now could not start: they start now.
        for leg in set(self.legs.values()):
            if leg.waiting and leg.active and leg.source is not None:
                leg.source.start(leg)
        return True

    def on_datagram(self, data: bytes) -> None:
        """An SRTP/SRTCP datagram from the ICE connection (called by the tap)."""
        if self.closed or len(data) < 12:
            return
        rx = self._rx
        if rx is None:
            if not self._connect():
                return
            rx = self._rx
            assert rx is not None
        try:
            if 191 < data[1] < 224:
                self.rtcp_in += 1
                self._on_rtcp(rx.unprotect_rtcp(data))
                return
            plain = rx.unprotect(data)
            header = parse_header(plain)
            if header is None:
                return
            self.rtp_in += 1
            source = self._ssrcs.get(header.ssrc) or self._route(plain, header)
            if source is not None:
                send_time = abs_send_time(time.time()) if source.video else b""
                source.on_rtp(plain, header, time.monotonic(), send_time)
        except pylibsrtp.Error:
            self.srtp_errors += 1
        except Exception:
            self._failed("received packet")

    def _route(self, data: bytes, header: Any) -> Source | None:
        """A stream the SDP did not announce: find its m-line by MID, else payload type."""
        source = None
        if self.mid_extension_id is not None and header.ext_profile:
            mid = extensions(data, header).get(self.mid_extension_id)
            if mid is not None:
                source = self._mids.get(mid.decode("ascii", "replace"))
        if source is None:
            pt = header.payload_type
            matches = [s for s in self.sources if pt in s.codecs or pt in s.rtx_payload_types]
            if len(matches) == 1:
                source = matches[0]
        if source is None:
            return None
        if header.payload_type in source.rtx_payload_types:
            if source.rtx_ssrc is not None:
                self._ssrcs.pop(source.rtx_ssrc, None)
            source.rtx_ssrc = header.ssrc
        else:
            if source.media_ssrc is not None:
                self._ssrcs.pop(source.media_ssrc, None)
                source.new_ssrc(header.ssrc)
            source.media_ssrc = header.ssrc
        self._ssrcs[header.ssrc] = source
        return source

    def send_rtp(self, data: bytes) -> bool:
        """Protects and sends one RTP packet; False when it could not go (yet)."""
        tx = self._tx
        if tx is None:
            if self.closed or not self._connect():
                return False
            tx = self._tx
            assert tx is not None
        return self._send(tx.protect, data)

    def send_rtcp(self, data: bytes) -> None:
        tx = self._tx
        if tx is None and (self.closed or not self._connect()):
            return
        assert self._tx is not None
        self._send(self._tx.protect_rtcp, data)

    def _send(self, protect: Any, data: bytes) -> bool:
        pair = self._pairs.get(1)
        if pair is None or self.closed:
            return False
        if pair is not self._pair:
            self._pair = pair
            self._direct = _aiortc.is_plain_udp(pair)
            self._udp = pair.protocol.transport
            self._addr = pair.remote_addr
        try:
            wire = protect(data)
            if self._direct:
                udp = self._udp
                if udp.get_write_buffer_size() > MAX_WRITE_BUFFER:
                    self.dropped += 1
                    return False
                udp.sendto(wire, self._addr)
            else:  # a TURN relay frames each datagram: aioice's coroutine does it
                task = asyncio.ensure_future(pair.protocol.send_data(wire, self._addr))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        except pylibsrtp.Error:
            self.srtp_errors += 1
            return False
        except (OSError, RuntimeError, AttributeError):
            self.dropped += 1
            return False
        self.bytes_out += len(wire)
        return True

    # ---------------------------------------------------------------- RTCP

    def _on_rtcp(self, plain: bytes) -> None:
        now = time.monotonic()
        legs = self.legs
        for item in rtcp.parse(plain):
            kind = type(item)
            if kind is rtcp.ReceiverReport or kind is rtcp.SenderReport:
                for block in item.reports:  # type: ignore[union-attr]
                    leg = legs.get(block.ssrc)
                    if leg is not None:
                        leg.on_report(block, now)
                if kind is rtcp.SenderReport:
                    source = self._ssrcs.get(item.ssrc)  # type: ignore[union-attr]
                    if source is not None:
                        source.on_sender_report(item, now)  # type: ignore[arg-type]
            elif kind is rtcp.Nack:
                leg = legs.get(item.media)  # type: ignore[union-attr]
                if leg is not None:
                    leg.on_nack(item.lost)  # type: ignore[union-attr]
            elif kind is rtcp.KeyframeRequest:
                leg = legs.get(item.media)  # type: ignore[union-attr]
                if leg is not None:
                    leg.on_keyframe_request()
            elif kind is rtcp.Remb:
                self.remb = item.bitrate  # type: ignore[union-attr]

    def _schedule_rtcp(self) -> None:
        delay = RTCP_INTERVAL_S * random.uniform(0.5, 1.5)
        self._timer = asyncio.get_running_loop().call_later(delay, self._rtcp_round)

    def _rtcp_round(self) -> None:
        self._schedule_rtcp()
        if self._tx is None:
            return
        try:
            for datagram in self.reports(time.monotonic(), ntp_now()):
                self.send_rtcp(datagram)
        except Exception:
            self._failed("RTCP round")

    def reports(self, now: float, ntp: int) -> list[bytes]:
        """This round's compound RTCP, split in datagrams that each start with an SR or RR."""
        packets: list[bytes] = []
        ssrcs: list[int] = []
        for leg in {id(leg): leg for leg in self.legs.values()}.values():
            report = leg.sender_report(ntp, now)
            if report is not None:
                packets.append(report)
                ssrcs.append(leg.ssrc)
        blocks = [b for b in (s.report_block(now) for s in self.sources) if b is not None]
        for start in range(0, len(blocks), 31):  # one RR per 31 blocks, each packed apart
            packets.append(rtcp.receiver_report(self.local_ssrc, blocks[start : start + 31]))
        if not packets:
            return []
        video = [s for s in self.sources if s.video and s.media_ssrc is not None]
        tail = rtcp.sdes_cname([*ssrcs, self.local_ssrc], self.cname)
        if video:
            bitrate = sum(s.target_bitrate() for s in video)
            tail.append(
                rtcp.remb(self.local_ssrc, bitrate, [s.media_ssrc for s in video])  # type: ignore[misc]
            )
        return rtcp.datagrams(self.local_ssrc, [*packets, *tail], MAX_RTCP_DATAGRAM)

    # ---------------------------------------------------------------- lifecycle

    def _failed(self, what: str) -> None:
        """A bug on the media path: logged (rarely), counted, never fatal to the connection."""
        self._failures += 1
        if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            logger.exception("sfu: %s failed (%d times on this connection)", what, self._failures)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ssrcs.clear()
        self._mids.clear()
        self.sources.clear()
        self.legs.clear()
        for task in self._background:
            task.cancel()
