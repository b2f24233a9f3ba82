"""Sources and legs on Chromium's packets: what each subscriber receives, packet by packet."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Callable

from aiortc import RTCRtpCodecParameters
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from devtools.poll import poll_until
from sfu import rtcp
from sfu.leg import RETRANSMIT_BURST, Leg
from sfu.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    RtpHeader,
    abs_send_time,
    extensions,
    parse_header,
    parse_vp8,
)
from sfu.source import Codec, Source, SourceConfig

from .recorded import H264, OPUS, VP8, VP8_RTX, recording

TIMEOUT = 5.0


class Upstream:
    """The publisher's side: RTCP the source sends to it."""

    local_ssrc = 0x5F5F5F5F

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.changed = asyncio.Event()

    def send_rtcp(self, data: bytes) -> None:
        self.sent.append(data)
        self.changed.set()

    def items(self, kind: type) -> list[object]:
        return [i for d in self.sent for i in rtcp.parse(d) if isinstance(i, kind)]

    async def wait_for(self, pred: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not pred():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), TIMEOUT)


class Subscriber:
    """The subscriber's side of a leg: every packet it would be sent."""

    def __init__(self, up: bool = True) -> None:
        self.up = up
        self.packets: list[bytes] = []

    def connected(self) -> bool:
        return self.up

    def receive_estimate(self) -> float | None:
        return None

    def send_rtp(self, data: bytes) -> bool:
        if not self.up:
            return False
        self.packets.append(data)
        return True

    def headers(self) -> list[RtpHeader]:
        parsed = [parse_header(p) for p in self.packets]
        assert all(h is not None for h in parsed)
        return parsed  # type: ignore[return-value]


def video_source(
    upstream: Upstream, config: SourceConfig | None = None, pid: str = "pub"
) -> Source:
    source = Source("video", pid, config or SourceConfig(), upstream)
    source.configure({VP8: Codec("VP8", 90000), H264: Codec("H264", 90000)}, {VP8_RTX: VP8}, None)
    return source


LEG_PT, LEG_RTX_PT = 120, 121


def video_leg(out: Subscriber, ssrc: int = 0xAAAA0001) -> Leg:
    leg = Leg("video", out, ssrc, ssrc + 1)
    leg.configure(
        "7",
        [
            RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=LEG_PT),
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=LEG_RTX_PT,
                parameters={"apt": LEG_PT},
            ),
            RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=122),
        ],
        [
            RTCRtpHeaderExtensionParameters(id=9, uri=URI_MID),
            RTCRtpHeaderExtensionParameters(id=11, uri=URI_ABS_SEND_TIME),
        ],
    )
    return leg


def feed(source: Source, packets: list[bytes]) -> None:
    for data in packets:
        header = parse_header(data)
        assert header is not None
        source.on_rtp(data, header, time.monotonic(), abs_send_time(time.time()))


def in_order(packets: list[bytes]) -> list[bytes]:
    """The recorded stream by sequence number (it was recorded in arrival order)."""
    return sorted(packets, key=lambda d: struct.unpack_from("!H", d, 2))


def renumbered(packets: list[bytes], seq0: int, ssrc: int | None = None) -> list[bytes]:
    """The same packets with sequence numbers from ``seq0`` on (and another SSRC)."""
    out = []
    for i, data in enumerate(packets):
        head = bytearray(data[:12])
        struct.pack_into("!H", head, 2, (seq0 + i) & 0xFFFF)
        if ssrc is not None:
            struct.pack_into("!I", head, 8, ssrc)
        out.append(bytes(head) + data[12:])
    return out


def vp8_stream(index: int = 0) -> list[bytes]:
    return in_order(recording("VP8").by_payload_type(VP8)[index])


def is_keyframe_start(data: bytes) -> bool:
    header = parse_header(data)
    assert header is not None
    desc = parse_vp8(data, header.payload_start, header.payload_end)
    return desc is not None and desc.keyframe


def picture_ids(packets: list[bytes]) -> list[int]:
    out = []
    for data in packets:
        header = parse_header(data)
        assert header is not None
        desc = parse_vp8(data, header.payload_start, header.payload_end)
        assert desc is not None and desc.picture_id is not None
        out.append(desc.picture_id)
    return out


def seqs(sub: Subscriber) -> list[int]:
    return [h.sequence_number for h in sub.headers()]


def consecutive(values: list[int], modulo: int) -> bool:
    return all((b - a) % modulo == 1 for a, b in itertools.pairwise(values))


async def test_a_leg_starts_on_a_keyframe_and_rewrites_every_header() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    first_key = next(i for i, d in enumerate(stream) if i > 2 and is_keyframe_start(d))
    feed(source, stream[2:])  # joins mid-stream: nothing until the next keyframe
    assert sub.packets and is_keyframe_start(sub.packets[0])
    assert len(sub.packets) == len(stream) - first_key
    assert consecutive(seqs(sub), 1 << 16)
    for data, out, header in zip(stream[first_key:], sub.packets, sub.headers(), strict=True):
        original = parse_header(data)
        assert original is not None
        assert (header.ssrc, header.payload_type, header.marker) == (
            leg.ssrc,
            LEG_PT,
            original.marker,
        )
        assert header.timestamp == original.timestamp  # a first start keeps the numbering
        ext = extensions(out, header)
        assert ext[9] == b"7" and len(ext[11]) == 3 and set(ext) == {9, 11}
        assert out[header.payload_start :] == data[original.payload_start : original.payload_end]


async def test_a_gated_leg_hides_what_it_dropped() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    keys = [i for i, d in enumerate(stream) if is_keyframe_start(d)]
    assert len(keys) >= 2
    feed(source, stream[: keys[0] + 5])
    sent = len(sub.packets)
    leg.gate()
    feed(source, stream[keys[0] + 5 : keys[1]])  # dropped: no keyframe among them
    assert len(sub.packets) == sent
    feed(source, stream[keys[1] :])
    assert is_keyframe_start(sub.packets[sent])
    # no hole in sequence numbers or picture ids where frames were dropped
    assert consecutive(seqs(sub), 1 << 16)
    pids = list(dict.fromkeys(picture_ids(sub.packets)))  # one per frame, in order
    assert consecutive(pids, 1 << 15)
    # the same source: timestamps keep their distance (the dropped frames' time passed)
    assert sub.headers()[sent].timestamp == parse_header(stream[keys[1]]).timestamp  # type: ignore[union-attr]


async def test_a_recycled_leg_continues_its_numbering_with_the_next_source() -> None:
    up, sub = Upstream(), Subscriber()
    first, second = video_source(up, pid="ann"), video_source(up, pid="ben")
    leg = video_leg(sub)
    leg.attach(first)
    leg.activate()
    feed(first, vp8_stream(0))
    before = sub.headers()[-1]
    before_pid = picture_ids(sub.packets)[-1]
    sent = len(sub.packets)
    leg.attach(second)
    feed(second, vp8_stream(1))
    after = sub.headers()[sent]
    assert after.sequence_number == (before.sequence_number + 1) & 0xFFFF
    assert 0 < (after.timestamp - before.timestamp) % (1 << 32) < 90000 * 5
    assert picture_ids(sub.packets)[sent] == (before_pid + 1) & 0x7FFF
    assert consecutive(seqs(sub), 1 << 16)
    assert leg not in first.legs and leg in second.legs


async def test_a_new_publisher_ssrc_restarts_the_stream_on_the_same_leg() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    feed(source, stream)
    sent = len(sub.packets)
    source.new_ssrc(0x12345678)
    feed(source, renumbered(stream, 500, ssrc=0x12345678))
    assert len(sub.packets) > sent and is_keyframe_start(sub.packets[sent])
    assert consecutive(seqs(sub), 1 << 16)
    assert source.restarts == 1


async def test_nacks_are_answered_from_the_cache_as_rtx() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    feed(source, vp8_stream())
    lost = sub.headers()[10]
    lost_packet = sub.packets[10]
    leg.on_nack([lost.sequence_number])
    rtx = sub.packets[-1]
    header = parse_header(rtx)
    assert header is not None
    assert (header.ssrc, header.payload_type) == (leg.rtx_ssrc, LEG_RTX_PT)
    (osn,) = struct.unpack_from("!H", rtx, header.payload_start)
    assert osn == lost.sequence_number and header.timestamp == lost.timestamp
    assert rtx[header.payload_start + 2 :] == lost_packet[lost.payload_start :]
    assert leg.retransmits == 1


async def test_a_nack_for_an_evicted_packet_waits_for_a_keyframe() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up, SourceConfig(video_cache_packets=16))
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    feed(source, vp8_stream())
    plis = len(up.items(rtcp.KeyframeRequest))
    leg.on_nack([sub.headers()[0].sequence_number])
    assert leg.waiting and leg.retransmits == 0
    await up.wait_for(lambda: len(up.items(rtcp.KeyframeRequest)) > plis)


async def test_keyframe_requests_are_aggregated_into_rate_limited_plis() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up, SourceConfig(keyframe_interval_s=0.2))
    legs = [video_leg(sub, ssrc=0xB0 + 2 * i) for i in range(4)]
    for leg in legs:
        leg.attach(source)
        leg.activate()
    feed(source, vp8_stream())
    await up.wait_for(lambda: source._pli_timer is None)  # the legs' own first requests
    start = len(up.items(rtcp.KeyframeRequest))
    for _ in range(10):
        for leg in legs:
            leg.on_keyframe_request()  # 40 PLIs from 4 subscribers in one burst
    # at most one PLI at once, and one more at the end of the interval: never 40
    assert len(up.items(rtcp.KeyframeRequest)) - start <= 1
    await up.wait_for(lambda: len(up.items(rtcp.KeyframeRequest)) - start >= 1)
    await up.wait_for(lambda: source._pli_timer is None)
    assert 1 <= len(up.items(rtcp.KeyframeRequest)) - start <= 2
    assert sum(leg.keyframe_requests for leg in legs) == 40


async def test_publisher_loss_is_nacked_upstream_and_repaired_by_its_rtx() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    holes = {20, 21, 30}
    feed(source, [d for i, d in enumerate(stream) if i not in holes])
    lost_seqs = {struct.unpack_from("!H", stream[i], 2)[0] for i in holes}

    def nacked() -> set[int]:
        return {s for n in up.items(rtcp.Nack) for s in n.lost}  # type: ignore[attr-defined]

    await up.wait_for(lambda: lost_seqs <= nacked())
    # the publisher's retransmissions arrive as RTX and fill the holes for the subscriber
    rtx = [_rtx(stream[i], 7000 + i) for i in sorted(holes)]
    feed(source, rtx)
    assert not source.missing
    assert sorted(seqs(sub)) == sorted(
        (s + leg.seq_off) & 0xFFFF for s in (struct.unpack_from("!H", d, 2)[0] for d in stream)
    )
    # the repaired packets are the originals: same timestamps, same payloads
    for data, header in zip(sub.packets[-len(holes) :], sub.headers()[-len(holes) :], strict=True):
        original = next(
            d for d in stream if struct.unpack_from("!H", d, 2)[0] == header.sequence_number
        )
        parsed = parse_header(original)
        assert parsed is not None
        assert header.timestamp == parsed.timestamp
        assert data[header.payload_start :] == original[parsed.payload_start : parsed.payload_end]


def _rtx(original: bytes, seq: int) -> bytes:
    """An RFC 4588 retransmission of ``original``, as a publisher sends it."""
    header = parse_header(original)
    assert header is not None
    start = header.payload_start
    head = bytearray(original[:start])
    head[1] = (head[1] & 0x80) | VP8_RTX
    struct.pack_into("!H", head, 2, seq)
    struct.pack_into("!I", head, 8, 0xDDDD)
    osn = original[2:4]
    return bytes(head) + osn + original[start : header.payload_end]


async def test_unrepairable_loss_gates_every_leg_and_asks_a_keyframe() -> None:
    up = Upstream()
    config = SourceConfig(nack_delay_s=0.0, nack_interval_s=0.01, nack_tries=1)
    source = video_source(up, config)
    subs = [Subscriber(), Subscriber()]
    legs = [video_leg(s, ssrc=0xC0 + 2 * i) for i, s in enumerate(subs)]
    for leg in legs:
        leg.attach(source)
        leg.activate()
    stream = vp8_stream()
    feed(source, stream[:20] + stream[21:40])
    await up.wait_for(lambda: source.lost > 0 and bool(up.items(rtcp.KeyframeRequest)))
    assert all(leg.waiting for leg in legs)


async def test_buffers_stay_bounded_under_a_flood() -> None:
    up, sub = Upstream(), Subscriber()
    config = SourceConfig(max_missing=64)
    source = video_source(up, config)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    flood = []
    seq = 0
    for i in range(6000):
        seq += 1 + (i % 7 == 0) * 3  # a lossy publisher: a 3-packet hole every 7 packets
        flood.append(renumbered([stream[i % len(stream)]], seq)[0])
    feed(source, flood)
    assert len(source.missing) <= config.max_missing
    assert len(source._cache) == config.video_cache_packets
    # a subscriber asking for everything gets at most one burst of retransmissions
    before = leg.retransmits
    leg.on_nack(list(range(0, 65536, 3))[:5000])
    leg.on_nack(list(range(1, 65536, 3))[:5000])
    assert leg.retransmits - before <= RETRANSMIT_BURST


async def test_sender_reports_carry_the_publishers_ntp_rtp_mapping() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    feed(source, vp8_stream())
    now = time.monotonic()
    source.on_sender_report(rtcp.SenderReport(1, 0x1234_5678_0000_0000, 1_000_000, 0, 0), now)
    report = leg.sender_report(0xAAAA_0000_0000_0000, now + 0.5)
    assert report is not None
    (sr,) = rtcp.parse(report)
    assert isinstance(sr, rtcp.SenderReport)
    expected = (1_000_000 + 45_000 + leg.ts_off) & 0xFFFFFFFF
    assert abs(sr.rtp_timestamp - expected) <= 1
    assert (sr.ssrc, sr.packets) == (leg.ssrc, len(sub.packets))


async def test_receiver_reports_count_what_the_publisher_lost() -> None:
    up = Upstream()
    source = video_source(up)
    stream = vp8_stream()
    feed(source, stream[:10] + stream[12:])
    block = source.report_block(time.monotonic())
    assert block is not None
    assert block.packets_lost == 2 and block.fraction_lost > 0
    assert block.highest_sequence & 0xFFFF == max(struct.unpack_from("!H", d, 2)[0] for d in stream)


async def test_audio_legs_copy_the_audio_level_under_their_own_id() -> None:
    up, sub = Upstream(), Subscriber()
    source = Source("audio", "pub", SourceConfig(), up)
    source.configure({OPUS: Codec("OPUS", 48000)}, {}, 2)
    leg = Leg("audio", sub, 0xA0D10, 0xA0D11)
    leg.configure(
        "3",
        [
            RTCRtpCodecParameters(
                mimeType="audio/opus", clockRate=48000, channels=2, payloadType=109
            )
        ],
        [
            RTCRtpHeaderExtensionParameters(id=5, uri=URI_MID),
            RTCRtpHeaderExtensionParameters(id=6, uri=URI_AUDIO_LEVEL),
        ],
    )
    leg.attach(source)
    leg.activate()
    stream = in_order(recording("VP8").by_payload_type(OPUS)[0])
    feed(source, stream)
    assert len(sub.packets) == len(stream)  # audio never waits for a keyframe
    for data, out, header in zip(stream, sub.packets, sub.headers(), strict=True):
        original = parse_header(data)
        assert original is not None
        assert extensions(out, header) == {5: b"3", 6: extensions(data, original)[2]}
        assert header.payload_type == 109


async def test_h264_legs_start_on_an_idr() -> None:
    up, sub = Upstream(), Subscriber()
    source = video_source(up)
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = in_order(recording("H264").by_payload_type(H264)[0])
    feed(source, stream[1:])
    assert sub.packets
    first = sub.headers()[0]
    assert first.payload_type == 122
    from sfu.rtp import h264_frame_start

    assert h264_frame_start(sub.packets[0], first.payload_start, first.payload_end) == (True, True)


async def test_a_subscriber_not_yet_connected_keeps_waiting_for_a_keyframe() -> None:
    up, sub = Upstream(), Subscriber(up=False)
    source = video_source(up, SourceConfig(keyframe_interval_s=0.0))
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()
    stream = vp8_stream()
    keys = [i for i, d in enumerate(stream) if is_keyframe_start(d)]
    feed(source, stream[: keys[1]])
    assert leg.waiting and not sub.packets
    sub.up = True
    feed(source, stream[keys[1] :])
    assert is_keyframe_start(sub.packets[0])


class Estimating(Subscriber):
    def __init__(self, estimate: float | None) -> None:
        super().__init__()
        self.estimate = estimate

    def receive_estimate(self) -> float | None:
        return self.estimate


async def test_remb_to_a_publisher_is_its_weakest_subscribers_estimate_with_a_floor() -> None:
    config = SourceConfig(min_bitrate=150_000, max_bitrate=3_000_000)
    source = video_source(Upstream(), config)
    assert source.target_bitrate() == 3_000_000  # nobody estimates yet: the ceiling
    subs = [Estimating(2_000_000), Estimating(400_000), Estimating(None)]
    for i, sub in enumerate(subs):
        leg = video_leg(sub, ssrc=0xE0 + 2 * i)
        leg.attach(source)
        leg.activate()
    assert source.target_bitrate() == 400_000
    subs[1].estimate = 50_000  # one struggling subscriber cannot starve everyone
    assert source.target_bitrate() == 150_000
    subs[0].estimate = 9_000_000
    subs[1].estimate = None
    assert source.target_bitrate() == 3_000_000


async def test_a_new_leg_starts_from_the_cached_keyframe_when_it_is_recent() -> None:
    up = Upstream()
    stream = vp8_stream()
    keys = [i for i, d in enumerate(stream) if is_keyframe_start(d)]
    last = keys[-1]
    source = video_source(up, SourceConfig(keyframe_replay_packets=len(stream)))
    feed(source, stream)
    plis = len(up.items(rtcp.KeyframeRequest))
    late = Subscriber()
    leg = video_leg(late)
    leg.attach(source)
    leg.activate()
    # the last keyframe and everything since, at once, without asking the publisher
    assert len(late.packets) == len(stream) - last
    assert is_keyframe_start(late.packets[0])
    assert len(up.items(rtcp.KeyframeRequest)) == plis and source.replays == 1
    # too old a keyframe (more packets since than the limit): a PLI instead
    source.config = SourceConfig(keyframe_replay_packets=2)
    other = Subscriber()
    leg2 = video_leg(other, ssrc=0xF0)
    leg2.attach(source)
    leg2.activate()
    assert other.packets == [] and len(up.items(rtcp.KeyframeRequest)) == plis + 1


async def test_a_leg_whose_keyframe_never_came_asks_again_until_one_does() -> None:
    """The publisher's first keyframe was lost (sent before its SSRC was bound, say) and
    the leg's first request went out before any packet: it asks again, and stops once
    the keyframe arrives."""
    up, sub = Upstream(), Subscriber()
    source = video_source(up, SourceConfig(keyframe_interval_s=0.0, keyframe_retry_s=0.05))
    leg = video_leg(sub)
    leg.attach(source)
    leg.activate()  # asks for a keyframe: nothing received yet, so no PLI can go out
    assert up.items(rtcp.KeyframeRequest) == []
    stream = vp8_stream()
    keys = [i for i, d in enumerate(stream) if is_keyframe_start(d)]
    feed(source, stream[1 : keys[1]])  # the stream without its first keyframe
    await up.wait_for(lambda: len(up.items(rtcp.KeyframeRequest)) >= 2)
    assert leg.waiting and not sub.packets
    feed(source, stream[keys[1] :])  # the keyframe asked for
    assert is_keyframe_start(sub.packets[0]) and not leg.waiting
    asked = len(up.items(rtcp.KeyframeRequest))
    # the pending check finds nobody waiting and schedules no other: no request follows
    await poll_until(lambda: source._keyframe_check is None, TIMEOUT)
    assert len(up.items(rtcp.KeyframeRequest)) == asked
