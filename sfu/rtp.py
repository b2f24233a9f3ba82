"""RTP on bytes: parse a header, rebuild it for a subscriber, and read what the SFU must know.

Pure functions and small slotted values, no I/O, no aiortc: the forwarding hot path calls
them once per received packet (parse, codec facts) and once per subscriber (`build`).
Header extensions follow RFC 8285 (one-byte and two-byte forms), VP8 descriptors RFC 7741,
H264 payloads RFC 6184, retransmissions RFC 4588.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

HEADER = struct.Struct("!BBHII")
HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

_U16 = struct.Struct("!H")


def is_rtcp(data: bytes) -> bool:
    """RTP and RTCP share a bundle: RTCP packet types 192-223 sit where RTP's M+PT are."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class RtpHeader:
    """Where the parts of one RTP packet are (offsets into its bytes), and its fields."""

    __slots__ = (
        "ext_end",
        "ext_profile",
        "ext_start",
        "marker",
        "padding",
        "payload_end",
        "payload_start",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(
        self,
        marker: int,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        ext_profile: int,
        ext_start: int,
        ext_end: int,
        payload_start: int,
        payload_end: int,
        padding: int,
    ) -> None:
        self.marker = marker
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.ext_profile = ext_profile
        self.ext_start = ext_start
        self.ext_end = ext_end
        self.payload_start = payload_start
        self.payload_end = payload_end
        self.padding = padding


def parse_header(data: bytes) -> RtpHeader | None:
    """The header of an RTP packet, or None when it is not a well-formed RTP version 2 packet."""
    size = len(data)
    if size < HEADER_SIZE:
        return None
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        return None
    pos = HEADER_SIZE + 4 * (b0 & 0x0F)
    ext_profile = ext_start = ext_end = 0
    if b0 & 0x10:
        if pos + 4 > size:
            return None
        ext_profile, words = struct.unpack_from("!HH", data, pos)
        ext_start = pos + 4
        ext_end = pos = ext_start + 4 * words
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0:
            return None
    end = size - padding
    if pos > end:
        return None
    return RtpHeader(
        b1 >> 7, b1 & 0x7F, seq, ts, ssrc, ext_profile, ext_start, ext_end, pos, end, padding
    )


def extensions(data: bytes, header: RtpHeader) -> dict[int, bytes]:
    """The header extension elements by id (RFC 8285 one-byte or two-byte form)."""
    out: dict[int, bytes] = {}
    pos, end = header.ext_start, header.ext_end
    if header.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = data[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            ext_id, length = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:  # reserved: stop parsing (RFC 8285 section 4.2)
                break
            pos += 1
            if pos + length > end:
                break
            out[ext_id] = data[pos : pos + length]
            pos += length
    elif header.ext_profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            length = data[pos + 1]
            pos += 2
            if pos + length > end:
                break
            out[ext_id] = data[pos : pos + length]
            pos += length
    return out


def extension_block(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """A header extension block (profile, length, elements, padding) for `elements`.

    One-byte form when every id fits (1-14) and every value is 1-16 bytes, else two-byte.
    """
    items = [(ext_id, value) for ext_id, value in elements if value]
    if not items:
        return b""
    if all(0 < i < 15 and len(v) <= 16 for i, v in items):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes(((i << 4) | (len(v) - 1),)) + v for i, v in items)
    else:
        profile = TWO_BYTE_PROFILE
        body = b"".join(bytes((i, len(v))) + v for i, v in items)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", profile, len(body) // 4) + body


def one_byte_element(ext_id: int, value: bytes) -> bytes:
    """One RFC 8285 one-byte element; the caller pads the block (see `pad_block`)."""
    return bytes(((ext_id << 4) | (len(value) - 1),)) + value


def pad_block(body: bytes) -> bytes:
    """Wraps concatenated one-byte elements into a block with its profile and length."""
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", ONE_BYTE_PROFILE, len(body) // 4) + body


def abs_send_time(ntp_seconds: float) -> bytes:
    """abs-send-time: 24 bits of 6.18 fixed-point seconds."""
    return (int(ntp_seconds * (1 << 18)) & 0xFFFFFF).to_bytes(3, "big")


def build(
    data: bytes,
    header: RtpHeader,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    ext_block: bytes,
    payload_prefix: bytes = b"",
    payload_skip: int = 0,
) -> bytes:
    """The packet rebuilt for one subscriber: new SSRC, numbers and extensions.

    The payload is copied from `data` (after `payload_skip` bytes, preceded by
    `payload_prefix`: a rewritten VP8 descriptor), CSRCs and padding are dropped.
    """
    b0 = 0x90 if ext_block else 0x80
    return (
        HEADER.pack(
            b0,
            (header.marker << 7) | payload_type,
            sequence_number,
            timestamp,
            ssrc,
        )
        + ext_block
        + payload_prefix
        + data[header.payload_start + payload_skip : header.payload_end]
    )


# ---------------------------------------------------------------------------------- VP8


class Vp8Descriptor:
    """The fields of an RFC 7741 payload descriptor the SFU reads or rewrites."""

    __slots__ = (
        "keyframe",
        "keyidx",
        "layer_sync",
        "length",
        "non_reference",
        "partition_id",
        "picture_id",
        "start",
        "tid",
        "tl0picidx",
    )

    def __init__(self) -> None:
        self.start = False
        self.partition_id = 0
        self.non_reference = False
        self.picture_id: int | None = None
        self.tl0picidx: int | None = None
        self.tid: int | None = None
        self.layer_sync = False
        self.keyidx: int | None = None
        self.length = 1
        self.keyframe = False
        """The packet starts a keyframe (S, partition 0 and the VP8 header's P bit clear)."""


def parse_vp8(data: bytes, start: int, end: int) -> Vp8Descriptor | None:
    """The VP8 payload descriptor at `data[start:end]`, or None when it is truncated."""
    if start >= end:
        return None
    desc = Vp8Descriptor()
    octet = data[start]
    desc.non_reference = bool(octet & 0x20)
    desc.start = bool(octet & 0x10)
    desc.partition_id = octet & 0x0F
    pos = start + 1
    if octet & 0x80:
        if pos >= end:
            return None
        flags = data[pos]
        pos += 1
        if flags & 0x80:  # I: picture id
            if pos >= end:
                return None
            if data[pos] & 0x80:  # M: 15 bits
                if pos + 1 >= end:
                    return None
                desc.picture_id = ((data[pos] & 0x7F) << 8) | data[pos + 1]
                pos += 2
            else:
                desc.picture_id = data[pos]
                pos += 1
        if flags & 0x40:  # L: TL0PICIDX
            if pos >= end:
                return None
            desc.tl0picidx = data[pos]
            pos += 1
        if flags & 0x30:  # T and/or K
            if pos >= end:
                return None
            tk = data[pos]
            if flags & 0x20:
                desc.tid = tk >> 6
                desc.layer_sync = bool(tk & 0x20)
            if flags & 0x10:
                desc.keyidx = tk & 0x1F
            pos += 1
    desc.length = pos - start
    desc.keyframe = desc.start and desc.partition_id == 0 and pos < end and (data[pos] & 0x01) == 0
    return desc


def vp8_descriptor(desc: Vp8Descriptor, picture_id: int | None, tl0picidx: int | None) -> bytes:
    """The descriptor with new picture id / TL0PICIDX, always with a 15-bit picture id."""
    octet = (0x20 if desc.non_reference else 0) | (0x10 if desc.start else 0) | desc.partition_id
    flags = 0
    tail = b""
    if picture_id is not None:
        flags |= 0x80
        tail += _U16.pack(0x8000 | (picture_id & 0x7FFF))
    if tl0picidx is not None:
        flags |= 0x40
        tail += bytes((tl0picidx & 0xFF,))
    if desc.tid is not None or desc.keyidx is not None:
        tk = 0
        if desc.tid is not None:
            flags |= 0x20
            tk |= (desc.tid << 6) | (0x20 if desc.layer_sync else 0)
        if desc.keyidx is not None:
            flags |= 0x10
            tk |= desc.keyidx
        tail += bytes((tk,))
    if not flags:
        return bytes((octet,))
    return bytes((0x80 | octet, flags)) + tail


# --------------------------------------------------------------------------------- H264

NAL_IDR = 5
NAL_SPS = 7
NAL_STAP_A = 24
NAL_FU_A = 28


def h264_frame_start(data: bytes, start: int, end: int) -> tuple[bool, bool]:
    """(first packet of an access unit, carries an IDR or SPS) for an RFC 6184 payload.

    A keyframe starts where the first NAL units of the access unit are an SPS or an IDR;
    Chrome sends SPS, PPS and IDR in one STAP-A or as single NAL units of one frame.
    """
    if start >= end:
        return False, False
    nal = data[start] & 0x1F
    if nal == NAL_FU_A:
        if start + 1 >= end:
            return False, False
        fu = data[start + 1]
        first = bool(fu & 0x80)
        return first, first and (fu & 0x1F) in (NAL_IDR, NAL_SPS)
    if nal == NAL_STAP_A:
        pos = start + 1
        key = False
        while pos + 2 < end:
            size = (data[pos] << 8) | data[pos + 1]
            if data[pos + 2] & 0x1F in (NAL_IDR, NAL_SPS):
                key = True
            pos += 2 + size
        return True, key
    return True, nal in (NAL_IDR, NAL_SPS)


# --------------------------------------------------------------------------------- RTX


def rtx_original(data: bytes, header: RtpHeader, payload_type: int, ssrc: int) -> bytes | None:
    """The packet an RFC 4588 retransmission carries (its OSN, the media PT and SSRC)."""
    start = header.payload_start
    if header.payload_end - start < 2:
        return None  # padding-only: bandwidth probing, no media
    (osn,) = _U16.unpack_from(data, start)
    head = bytearray(data[:start])
    head[0] &= 0xDF  # the padding (if any) is not copied
    head[1] = (head[1] & 0x80) | payload_type
    struct.pack_into("!H", head, 2, osn)
    struct.pack_into("!I", head, 8, ssrc)
    return bytes(head) + data[start + 2 : header.payload_end]


def seq_delta(a: int, b: int) -> int:
    """a - b for 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000
