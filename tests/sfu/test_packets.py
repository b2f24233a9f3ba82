"""The packet functions on Chromium's own packets: parse, rebuild, remap, RTX, RTCP."""

from __future__ import annotations

import itertools
import struct

import pytest

from sfu import rtcp
from sfu.rtp import (
    HEADER,
    abs_send_time,
    build,
    extension_block,
    extensions,
    h264_frame_start,
    is_rtcp,
    parse_header,
    parse_vp8,
    rtx_original,
    seq_delta,
    vp8_descriptor,
)

from .recorded import H264, H264_RTX, OPUS, VP8, VP8_RTX, recording


def test_every_recorded_packet_parses_with_its_mid_and_extensions() -> None:
    rec = recording("VP8")
    for packets in rec.streams.values():
        mids = set()
        for data in packets:
            assert not is_rtcp(data)
            header = parse_header(data)
            assert header is not None
            assert header.payload_start <= header.payload_end <= len(data)
            ext = extensions(data, header)
            mids.add(ext.get(1))  # Chromium sends the mid until it hears RTCP back
            if header.payload_type == OPUS:
                assert len(ext[2]) == 1  # audio level
            else:
                assert len(ext[3]) == 3  # abs-send-time
        # mid 0 is the microphone m-line, 1 the camera (RTX included)
        assert mids - {None} in ({b"0"}, {b"1"})


def test_malformed_headers_are_refused_not_raised() -> None:
    data = recording("VP8").by_payload_type(VP8)[0][0]
    assert parse_header(data[:11]) is None
    assert parse_header(b"\x00" + data[1:]) is None  # version 0
    truncated_ext = bytes([data[0] | 0x10]) + data[1:12] + b"\xbe\xde\x00\x09"
    assert parse_header(truncated_ext) is None
    assert parse_header(bytes([data[0] | 0x20]) + data[1:-1] + b"\x00") is None  # padding 0


def test_a_packet_rebuilt_for_a_subscriber_keeps_its_payload_and_gets_new_numbers() -> None:
    data = recording("VP8").by_payload_type(VP8)[0][3]
    header = parse_header(data)
    assert header is not None
    ext = extension_block([(4, b"12"), (9, abs_send_time(1.5))])
    out = build(data, header, 101, 0xFFFF, 0xFFFFFFFF, 0xCAFE, ext)
    rebuilt = parse_header(out)
    assert rebuilt is not None
    assert (rebuilt.payload_type, rebuilt.sequence_number) == (101, 0xFFFF)
    assert (rebuilt.timestamp, rebuilt.ssrc, rebuilt.marker) == (0xFFFFFFFF, 0xCAFE, header.marker)
    assert extensions(out, rebuilt) == {4: b"12", 9: abs_send_time(1.5)}
    payload = data[header.payload_start : header.payload_end]
    assert out[rebuilt.payload_start : rebuilt.payload_end] == payload
    # Chromium's own extensions (its mid, its send time) are not carried over.
    assert 1 not in extensions(out, rebuilt) and 3 not in extensions(out, rebuilt)


def test_extension_blocks_round_trip_in_both_forms() -> None:
    one = extension_block([(1, b"a"), (14, b"x" * 16)])
    two = extension_block([(1, b"a"), (20, b"y" * 17)])
    for block, expected in ((one, {1: b"a", 14: b"x" * 16}), (two, {1: b"a", 20: b"y" * 17})):
        packet = struct.pack("!BBHII", 0x90, 96, 1, 2, 3) + block + b"payload"
        header = parse_header(packet)
        assert header is not None
        assert extensions(packet, header) == expected
        assert packet[header.payload_start :] == b"payload"
    assert extension_block([]) == b""
    assert abs_send_time(64.0 + 0.25) == abs_send_time(0.25) == (1 << 16).to_bytes(3, "big")


def test_vp8_picture_ids_and_keyframes_are_read_from_chromium_packets() -> None:
    # in sequence order (the recording has a reordered packet; no wrap in it)
    stream = sorted(
        recording("VP8").by_payload_type(VP8)[0], key=lambda d: struct.unpack_from("!H", d, 2)
    )
    descs = []
    for data in stream:
        header = parse_header(data)
        assert header is not None
        desc = parse_vp8(data, header.payload_start, header.payload_end)
        assert desc is not None and desc.picture_id is not None
        descs.append((header, desc))
    starts = [(h, d) for h, d in descs if d.start and d.partition_id == 0]
    # one picture id per frame, consecutive (mod 2^15), each frame starts once
    pids = [d.picture_id or 0 for _, d in starts]
    assert all((b - a) % (1 << 15) == 1 for a, b in itertools.pairwise(pids))
    assert any(d.keyframe for _, d in starts)
    assert not any(d.keyframe for _, d in descs if not d.start)


def test_vp8_descriptor_rewrite_changes_only_the_ids() -> None:
    data = recording("VP8").by_payload_type(VP8)[0][0]
    header = parse_header(data)
    assert header is not None
    desc = parse_vp8(data, header.payload_start, header.payload_end)
    assert desc is not None
    new = vp8_descriptor(desc, 0x7FFF, 200)
    rewritten = new + data[header.payload_start + desc.length : header.payload_end]
    again = parse_vp8(rewritten, 0, len(rewritten))
    assert again is not None
    assert (again.picture_id, again.start, again.partition_id) == (0x7FFF, desc.start, 0)
    assert again.keyframe == desc.keyframe
    assert (
        rewritten[again.length :] == data[header.payload_start + desc.length : header.payload_end]
    )
    # a 7-bit picture id comes out as 15 bits (one byte longer), with the new id
    short = bytes([0x90, 0x80, 0x05, 0x00])
    desc7 = parse_vp8(short, 0, len(short))
    assert desc7 is not None and desc7.picture_id == 5 and desc7.length == 3
    out = vp8_descriptor(desc7, 300, None)
    assert len(out) == 4
    out_desc = parse_vp8(out + b"\x00", 0, 5)
    assert out_desc is not None and out_desc.picture_id == 300
    assert parse_vp8(b"\x90\x80", 0, 2) is None  # truncated


def test_h264_keyframes_are_found_in_chromium_packets() -> None:
    stream = recording("H264").by_payload_type(H264)[0]
    flags = []
    for data in stream:
        header = parse_header(data)
        assert header is not None
        flags.append(h264_frame_start(data, header.payload_start, header.payload_end))
    assert any(first and key for first, key in flags)
    assert any(first and not key for first, key in flags)
    assert h264_frame_start(b"", 0, 0) == (False, False)


@pytest.mark.parametrize(
    ("codec", "media", "rtx"), [("VP8", VP8, VP8_RTX), ("H264", H264, H264_RTX)]
)
def test_rtx_packets_unwrap_to_the_media_packet_they_repair(
    codec: str, media: int, rtx: int
) -> None:
    rec = recording(codec)
    media_ssrc = 0xABCDEF
    unwrapped = probes = 0
    for stream in rec.by_payload_type(rtx):
        for data in stream:
            header = parse_header(data)
            assert header is not None
            original = rtx_original(data, header, media, media_ssrc)
            if original is None:
                probes += 1  # padding-only bandwidth probes carry no media
                continue
            unwrapped += 1
            again = parse_header(original)
            assert again is not None
            assert (again.payload_type, again.ssrc) == (media, media_ssrc)
            assert (again.timestamp, again.marker) == (header.timestamp, header.marker)
            (osn,) = struct.unpack_from("!H", data, header.payload_start)
            assert again.sequence_number == osn
            assert (
                original[again.payload_start :]
                == data[header.payload_start + 2 : header.payload_end]
            )
    assert probes + unwrapped > 0


def test_sequence_deltas_wrap() -> None:
    assert seq_delta(0, 0xFFFF) == 1
    assert seq_delta(0xFFFF, 0) == -1
    assert seq_delta(100, 50) == 50


# ------------------------------------------------------------------------------- RTCP


def test_chromium_rtcp_parses_into_reports_nacks_and_remb() -> None:
    rec = recording("VP8")
    kinds: set[str] = set()
    for packets in rec.rtcp.values():
        for data in packets:
            assert is_rtcp(data)
            items = rtcp.parse(data)
            assert items
            kinds |= {type(i).__name__ for i in items}
            for item in items:
                if isinstance(item, rtcp.Nack):
                    assert item.lost and all(0 <= s <= 0xFFFF for s in item.lost)
                if isinstance(item, rtcp.Remb):
                    assert item.bitrate > 0 and item.ssrcs
    assert {"SenderReport", "ReceiverReport", "Nack", "Remb"} <= kinds


def test_built_rtcp_parses_back() -> None:
    block = rtcp.ReportBlock(7, 25, -3, 0x1FFFF, 40, 0x12345678, 65536)
    sr = rtcp.sender_report(1, 0x0102030405060708, 9000, 10, 1000, [block])
    rr = rtcp.receiver_report(2, [block] * 40)  # 31 blocks per packet: two packets
    lost = [65530, 65531, 65535, 0, 3, 40]
    packet = (
        sr
        + rr
        + b"".join(rtcp.sdes_cname([1, 2], "cname"))
        + rtcp.nack(3, 4, lost)
        + rtcp.pli(3, 5)
    )
    packet += rtcp.remb(3, 1_234_567, [4, 5])
    items = rtcp.parse(packet)
    assert isinstance(items[0], rtcp.SenderReport)
    assert (items[0].ntp, items[0].rtp_timestamp, items[0].reports) == (
        0x0102030405060708,
        9000,
        [block],
    )
    assert [len(i.reports) for i in items if isinstance(i, rtcp.ReceiverReport)] == [31, 9]
    nack = next(i for i in items if isinstance(i, rtcp.Nack))
    assert sorted(nack.lost) == sorted(lost) and nack.media == 4
    assert any(isinstance(i, rtcp.KeyframeRequest) and i.media == 5 for i in items)
    remb = next(i for i in items if isinstance(i, rtcp.Remb))
    assert remb.ssrcs == [4, 5]
    assert 1_234_567 - 8 <= remb.bitrate <= 1_234_567  # 18-bit mantissa
    assert rtcp.ntp_middle(0x0102030405060708) == 0x03040506


def test_truncated_rtcp_yields_what_is_whole() -> None:
    good = rtcp.pli(1, 2)
    assert rtcp.parse(good + good[:6]) == [rtcp.KeyframeRequest(1, 2)]
    assert rtcp.parse(b"\x80\xc9\x00\x07" + b"\x00" * 8) == []
    assert rtcp.parse(HEADER.pack(0, 0, 0, 0, 0)) == []


def test_a_large_rooms_rtcp_fits_srtcp_datagrams_and_names_every_ssrc() -> None:
    """A subscriber of 19 publishers: 38 legs' SRs, 38 report blocks and 39 CNAMEs once
    made an SDES packet pylibsrtp refused ("packet is too long") every round."""
    cname = "2b0d1c9e-5f1a-4c3b-9d8e-7f6a5b4c3d2e"
    block = rtcp.ReportBlock(
        ssrc=7, fraction_lost=0, packets_lost=0, highest_sequence=1, jitter=0, lsr=0, dlsr=0
    )
    ssrcs = list(range(1000, 1039))
    packets = [rtcp.sender_report(s, 1 << 32, 0, 10, 1000) for s in ssrcs[:-1]]
    for start in range(0, 38, 31):
        packets.append(rtcp.receiver_report(99, [block] * len(range(start, min(38, start + 31)))))
    packets += rtcp.sdes_cname(ssrcs, cname)
    sent = rtcp.datagrams(99, packets, 1200)
    assert all(len(d) <= 1200 and d[1] in (rtcp.SR, rtcp.RR) for d in sent)
    named = []
    for datagram in sent:  # every SSRC's CNAME is in some SDES packet
        pos = 0
        while pos < len(datagram):
            count, kind = datagram[pos] & 0x1F, datagram[pos + 1]
            length = (int.from_bytes(datagram[pos + 2 : pos + 4], "big") + 1) * 4
            if kind == rtcp.SDES:
                chunk = pos + 4
                for _ in range(count):
                    named.append(int.from_bytes(datagram[chunk : chunk + 4], "big"))
                    chunk += (4 + 2 + len(cname) + 1 + 3) // 4 * 4
            pos += length
    assert sorted(named) == ssrcs
    # and the whole round still parses: the SRs and the report blocks all come back
    items = [i for d in sent for i in rtcp.parse(d)]
    assert sum(isinstance(i, rtcp.SenderReport) for i in items) == 38
    assert sum(len(i.reports) for i in items if isinstance(i, rtcp.ReceiverReport)) == 38
