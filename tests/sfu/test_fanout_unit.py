"""Keyframe gating, bounded queues and pts rebasing of the fan-out (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

from sfu._aiortc_patch import EncodedFrame, FrameAssembler
from sfu.forward import ForwardTrack, Source


def _frame(ts: int, key: bool, clean: bool = True, epoch: int = 0) -> EncodedFrame:
    return EncodedFrame(
        data=b"\x00" if key else b"\x01",
        timestamp=ts,
        clock_rate=90000,
        keyframe=key,
        clean=clean,
        epoch=epoch,
        packets=1,
        received_at=0.0,
    )


def _source(requests: list[int]) -> Source:
    source = Source("video", "alice", 0.5, lambda coro: coro.close())
    source.request_keyframe = lambda: requests.append(1)  # type: ignore[method-assign]
    return source


async def test_slow_subscriber_drops_its_backlog_and_resumes_on_a_keyframe() -> None:
    requests: list[int] = []
    source = _source(requests)
    track = ForwardTrack("video", max_queue=3)
    track.attach(source)
    source._on_frame(_frame(0, key=True))
    assert track.frames == 0 and requests == []  # not negotiated yet: nothing queued
    track.activate()
    assert requests == [1]  # a new subscriber asks for a keyframe
    source._on_frame(_frame(3000, key=False))  # not a keyframe: dropped
    for ts in (6000, 9000, 12000):
        source._on_frame(_frame(ts, key=ts == 6000))
    assert len(track._queue) == 3  # nobody reads: the queue is full
    source._on_frame(_frame(18000, key=False))  # overflow: backlog gone, wait for a key
    assert len(track._queue) == 0 and track.waiting and requests == [1, 1]
    source._on_frame(_frame(21000, key=False))
    assert len(track._queue) == 0
    source._on_frame(_frame(24000, key=True))
    packet = await asyncio.wait_for(track.recv(), 1)
    assert bytes(packet) == b"\x00" and packet.pts == 0


async def test_loss_gates_every_subscriber_and_pts_stay_monotonic_across_sources() -> None:
    requests: list[int] = []
    alice, bob = _source(requests), _source(requests)
    track = ForwardTrack("video", max_queue=10)
    track.attach(alice)
    track.activate()
    alice._on_frame(_frame(90000, key=True))
    alice._on_frame(_frame(93000, key=False))
    alice._on_frame(_frame(99000, key=False, clean=False))  # frames were lost before it
    alice._on_frame(_frame(102000, key=False))
    pts = [(await asyncio.wait_for(track.recv(), 1)).pts for _ in range(2)]
    assert pts == [0, 3000] and track.waiting
    # the m-line is reused for bob, whose clock starts elsewhere
    track.attach(bob)
    track.activate()
    bob._on_frame(_frame(5, key=True))
    bob._on_frame(_frame(3005, key=False))
    pts += [(await asyncio.wait_for(track.recv(), 1)).pts for _ in range(2)]
    assert pts == [0, 3000, 6000, 9000]


def test_assembler_emits_on_the_marker_bit_and_flags_loss() -> None:
    frames: list[EncodedFrame] = []
    losses: list[int] = []

    class Codec:
        name = "VP8"
        clockRate = 90000

    class Pkt:
        def __init__(self, seq: int, ts: int, marker: int, key: bool, start: bool) -> None:
            self.ssrc = 1
            self.sequence_number = seq
            self.timestamp = ts
            self.marker = marker
            self.payload_type = 96
            self.payload = bytes([0x10 if start else 0x00, 0])
            self._data = bytes([0x00 if key else 0x01]) if start else b"\x02"

    codecs: dict[int, Any] = {96: Codec()}
    asm = FrameAssembler("video", codecs, frames.append, lambda: losses.append(1), capacity=8)
    asm.add(Pkt(10, 100, 0, True, True))
    asm.add(Pkt(11, 100, 1, True, False))
    assert [(f.keyframe, f.clean, f.packets) for f in frames] == [(True, False, 2)]
    asm.add(Pkt(13, 200, 1, False, False))  # 12 missing: nothing yet
    asm.add(Pkt(12, 200, 0, False, True))  # retransmission fills the hole
    assert [(f.keyframe, f.clean) for f in frames[1:]] == [(False, True)]
    asm.add(Pkt(15, 300, 1, False, False))  # 14 lost for good
    for seq in range(16, 24):
        asm.add(Pkt(seq, 400 + seq, 1, False, True))
    assert losses == [1]
    assert any(not f.clean for f in frames[2:])
    assert frames[-1].timestamp == 400 + 23
