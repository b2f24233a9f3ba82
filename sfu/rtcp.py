"""RTCP on bytes (RFC 3550, 4585, 5104, draft-alvestrand-rmcat-remb): parse and build.

The SFU terminates RTCP on every leg: it reads subscribers' receiver reports, NACKs,
PLI/FIR and REMB, publishers' sender reports, and writes its own sender reports, receiver
reports, NACKs, PLIs and REMB. Pure functions on bytes; malformed input yields nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

SR = 200
RR = 201
SDES = 202
BYE = 203
RTPFB = 205
PSFB = 206

RTPFB_NACK = 1
PSFB_PLI = 1
PSFB_FIR = 4
PSFB_APP = 15

_HEADER = struct.Struct("!BBH")
_REPORT = struct.Struct("!IB3sIIII")
_SR = struct.Struct("!IQIII")


@dataclass(slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_timestamp: int
    packets: int
    octets: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)


@dataclass(slots=True)
class Nack:
    sender: int
    media: int
    lost: list[int]


@dataclass(slots=True)
class KeyframeRequest:
    """A PLI, or a FIR naming `media` (RFC 5104)."""

    sender: int
    media: int


@dataclass(slots=True)
class Remb:
    sender: int
    bitrate: int
    ssrcs: list[int]


@dataclass(slots=True)
class Bye:
    ssrcs: list[int]


Feedback = SenderReport | ReceiverReport | Nack | KeyframeRequest | Remb | Bye


def _reports(data: bytes, pos: int, count: int, end: int) -> list[ReportBlock]:
    out = []
    for _ in range(count):
        if pos + 24 > end:
            break
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT.unpack_from(data, pos)
        packets_lost = int.from_bytes(lost, "big", signed=True)
        out.append(ReportBlock(ssrc, fraction, packets_lost, highest, jitter, lsr, dlsr))
        pos += 24
    return out


def parse(data: bytes) -> list[Feedback]:
    """Every packet of a compound RTCP datagram the SFU acts on, in order."""
    out: list[Feedback] = []
    pos, size = 0, len(data)
    while pos + 4 <= size:
        first, kind, words = _HEADER.unpack_from(data, pos)
        end = pos + 4 * (words + 1)
        if first >> 6 != 2 or end > size:
            break
        count = first & 0x1F
        body = pos + 4
        if kind == SR and body + 24 <= end:
            ssrc, ntp, rtp_ts, packets, octets = _SR.unpack_from(data, body)
            reports = _reports(data, body + 24, count, end)
            out.append(SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports))
        elif kind == RR and body + 4 <= end:
            (ssrc,) = struct.unpack_from("!I", data, body)
            out.append(ReceiverReport(ssrc, _reports(data, body + 4, count, end)))
        elif kind == BYE:
            out.append(
                Bye(list(struct.unpack_from(f"!{count}I", data, body)))
                if body + 4 * count <= end
                else Bye([])
            )
        elif kind in (RTPFB, PSFB) and body + 8 <= end:
            sender, media = struct.unpack_from("!II", data, body)
            fci = body + 8
            if kind == RTPFB and count == RTPFB_NACK:
                lost: list[int] = []
                for at in range(fci, end - 3, 4):
                    pid, blp = struct.unpack_from("!HH", data, at)
                    lost.append(pid)
                    lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
                out.append(Nack(sender, media, lost))
            elif kind == PSFB and count == PSFB_PLI:
                out.append(KeyframeRequest(sender, media))
            elif kind == PSFB and count == PSFB_FIR:
                for at in range(fci, end - 7, 8):
                    (target,) = struct.unpack_from("!I", data, at)
                    out.append(KeyframeRequest(sender, target))
            elif kind == PSFB and count == PSFB_APP and data[fci : fci + 4] == b"REMB":
                remb = _parse_remb(data, fci + 4, end, sender)
                if remb is not None:
                    out.append(remb)
        pos = end
    return out


def _parse_remb(data: bytes, pos: int, end: int, sender: int) -> Remb | None:
    if pos + 4 > end:
        return None
    count = data[pos]
    exponent = data[pos + 1] >> 2
    mantissa = ((data[pos + 1] & 0x03) << 16) | (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    if pos + 4 * count > end:
        return None
    ssrcs = list(struct.unpack_from(f"!{count}I", data, pos))
    return Remb(sender, mantissa << exponent, ssrcs)


# ------------------------------------------------------------------------------- build


def _packet(kind: int, count: int, body: bytes) -> bytes:
    return _HEADER.pack(0x80 | count, kind, len(body) // 4) + body


def _report_bytes(block: ReportBlock) -> bytes:
    lost = max(-(1 << 23), min((1 << 23) - 1, block.packets_lost))
    return _REPORT.pack(
        block.ssrc,
        block.fraction_lost,
        lost.to_bytes(3, "big", signed=True),
        block.highest_sequence,
        block.jitter,
        block.lsr,
        block.dlsr,
    )


def sender_report(
    ssrc: int,
    ntp: int,
    rtp_timestamp: int,
    packets: int,
    octets: int,
    reports: list[ReportBlock] | None = None,
) -> bytes:
    blocks = (reports or [])[:31]
    body = _SR.pack(
        ssrc, ntp, rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF
    )
    return _packet(SR, len(blocks), body + b"".join(_report_bytes(b) for b in blocks))


def receiver_report(ssrc: int, reports: list[ReportBlock]) -> bytes:
    """One RR; more than 31 blocks are split over several packets of the compound."""
    out = b""
    for start in range(0, max(len(reports), 1), 31):
        blocks = reports[start : start + 31]
        body = struct.pack("!I", ssrc) + b"".join(_report_bytes(b) for b in blocks)
        out += _packet(RR, len(blocks), body)
    return out


SDES_CHUNKS_PER_PACKET = 12
"""CNAME chunks per SDES packet: with a 36-character CNAME about 530 bytes, so that one
packet always fits an SRTCP datagram (pylibsrtp refuses more than 1500 bytes less its
trailer; 31 chunks, the count's limit, are about 1370)."""


def sdes_cname(ssrcs: list[int], cname: str) -> list[bytes]:
    """SDES packets with one CNAME chunk per SSRC (required in a compound packet)."""
    text = cname.encode()[:255]
    packets = []
    for start in range(0, max(len(ssrcs), 1), SDES_CHUNKS_PER_PACKET):
        group = ssrcs[start : start + SDES_CHUNKS_PER_PACKET]
        chunks = b""
        for ssrc in group:
            chunk = struct.pack("!IBB", ssrc, 1, len(text)) + text + b"\x00"
            chunks += chunk + b"\x00" * (-len(chunk) % 4)
        packets.append(_packet(SDES, len(group), chunks))
    return packets


def datagrams(local_ssrc: int, packets: list[bytes], max_size: int) -> list[bytes]:
    """Packs RTCP packets into compound datagrams of at most `max_size` bytes each
    (unless one packet alone is larger), each starting with an SR or RR (RFC 3550 6.1)."""
    out: list[bytes] = []
    current = b""
    for packet in packets:
        if current and len(current) + len(packet) > max_size:
            out.append(current)
            current = b""
        if not current and packet[1] not in (SR, RR):
            current = receiver_report(local_ssrc, [])
        current += packet
    if current:
        out.append(current)
    return out


def nack(sender: int, media: int, lost: list[int]) -> bytes:
    """A generic NACK for the 16-bit sequence numbers in `lost` (PID + bitmask pairs)."""
    items = sorted(set(lost), key=lambda s: (s - lost[0]) & 0xFFFF) if lost else []
    fci = b""
    i = 0
    while i < len(items):
        pid = items[i]
        blp = 0
        i += 1
        while i < len(items):
            offset = (items[i] - pid - 1) & 0xFFFF
            if offset >= 16:
                break
            blp |= 1 << offset
            i += 1
        fci += struct.pack("!HH", pid, blp)
    return _packet(RTPFB, RTPFB_NACK, struct.pack("!II", sender, media) + fci)


def pli(sender: int, media: int) -> bytes:
    return _packet(PSFB, PSFB_PLI, struct.pack("!II", sender, media))


def remb(sender: int, bitrate: int, ssrcs: list[int]) -> bytes:
    """REMB: the bitrate this receiver can take for `ssrcs` (6-bit exponent, 18-bit mantissa)."""
    bitrate = max(0, int(bitrate))
    exponent = 0
    while bitrate >= 1 << 18:
        bitrate >>= 1
        exponent += 1
    body = struct.pack("!II", sender, 0) + b"REMB"
    body += struct.pack(
        "!BBBB",
        len(ssrcs),
        (exponent << 2) | (bitrate >> 16),
        (bitrate >> 8) & 0xFF,
        bitrate & 0xFF,
    )
    body += b"".join(struct.pack("!I", s) for s in ssrcs)
    return _packet(PSFB, PSFB_APP, body)


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP time (the LSR field of a report block)."""
    return (ntp >> 16) & 0xFFFFFFFF
