"""Pre-encoded media for tests and benchmarks: encode once, replay as av.Packet.

Publishing pre-encoded packets keeps the load generators cheap (aiortc's sender only
packs them), so what we measure is the server.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import av
import numpy as np
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from devtools.frames import EncodedFrame, FrameAssembler, install_assembler
from sfu._aiortc import hook_keyframe_requests

VIDEO_CLOCK = 90000
AUDIO_CLOCK = 48000


@dataclass(frozen=True)
class Clip:
    """Encoded frames of one track; frame 0 is a keyframe."""

    kind: str
    frames: list[bytes]
    keyframes: list[bool]
    fps: float
    clock_rate: int


def _video_context(
    codec: str, width: int, height: int, fps: int, bitrate: int
) -> av.video.codeccontext.VideoCodecContext:
    ctx = cast(av.video.codeccontext.VideoCodecContext, av.CodecContext.create(codec, "w"))
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = fractions.Fraction(1, fps)
    ctx.framerate = fractions.Fraction(fps, 1)
    ctx.bit_rate = bitrate
    return ctx


def _encode_pattern(
    ctx: av.video.codeccontext.VideoCodecContext, count: int
) -> tuple[list[bytes], list[bool]]:
    """A moving gradient over a blinking checkerboard: cheap to make, not too easy to code."""
    frames: list[bytes] = []
    keys: list[bool] = []
    yy, xx = np.mgrid[0 : ctx.height, 0 : ctx.width]
    for i in range(count):
        img = np.zeros((ctx.height, ctx.width, 3), dtype=np.uint8)
        img[..., 0] = (xx + 4 * i) % 256
        img[..., 1] = (yy + 2 * i) % 256
        img[..., 2] = ((xx // 16 + yy // 16 + i // 5) % 2) * 200
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        for packet in ctx.encode(frame):
            frames.append(bytes(packet))
            keys.append(bool(packet.is_keyframe))
    for packet in ctx.encode(None):
        frames.append(bytes(packet))
        keys.append(bool(packet.is_keyframe))
    return frames, keys


def encode_vp8_clip(
    width: int = 160, height: int = 120, fps: int = 30, seconds: float = 2.0, bitrate: int = 300_000
) -> Clip:
    """Encode a moving synthetic pattern with libvpx; one keyframe at the start."""
    ctx = _video_context("libvpx", width, height, fps, bitrate)
    ctx.gop_size = 10_000
    ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames, keys = _encode_pattern(ctx, int(seconds * fps))
    assert keys[0], "the first VP8 frame must be a keyframe"
    return Clip("video", frames, keys, float(fps), VIDEO_CLOCK)


def encode_h264_clip(
    width: int = 160, height: int = 120, fps: int = 30, seconds: float = 1.0
) -> Clip:
    """Encode the same pattern with libx264 (baseline, Annex B, one IDR at the start)."""
    ctx = _video_context("libx264", width, height, fps, 300_000)
    ctx.options = {
        "profile": "baseline",
        "preset": "ultrafast",
        "tune": "zerolatency",
        "x264-params": "keyint=10000:min-keyint=10000:scenecut=0",
    }
    frames, keys = _encode_pattern(ctx, int(seconds * fps))
    assert keys[0], "the first H264 frame must be an IDR"
    return Clip("video", frames, keys, float(fps), VIDEO_CLOCK)


def encode_opus_clip(seconds: float = 1.0) -> Clip:
    """Encode a 440 Hz tone in 20 ms Opus frames."""
    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = AUDIO_CLOCK
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.time_base = fractions.Fraction(1, AUDIO_CLOCK)
    frames: list[bytes] = []
    samples = 960
    t = np.arange(int(seconds * AUDIO_CLOCK)) / AUDIO_CLOCK
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    for i in range(0, len(tone) - samples + 1, samples):
        chunk = np.repeat(tone[i : i + samples], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = i
        for packet in ctx.encode(frame):
            frames.append(bytes(packet))
    for packet in ctx.encode(None):
        frames.append(bytes(packet))
    return Clip("audio", frames, [True] * len(frames), 50.0, AUDIO_CLOCK)


class ReplayTrack(MediaStreamTrack):
    """Plays a Clip in real time as ``av.Packet`` (the sender packs, never encodes).

    A keyframe request (hooked from the sender's PLI handling) restarts the clip at its
    keyframe. ``pts_jitter`` adds a known pseudo-random offset (< 1/3 frame) to each
    pts so a receiver can align its frames with ``sent`` by timestamp differences.
    """

    def __init__(self, clip: Clip, pts_jitter: bool = False) -> None:
        super().__init__()
        self.kind = clip.kind
        self.clip = clip
        self.keyframe_requests = 0
        self.sent: dict[int, float] = {}
        self.sent_count = 0
        self._index = 0
        self._n = 0
        self._start: float | None = None
        self._step = int(clip.clock_rate / clip.fps)
        self._jitter = pts_jitter
        self._time_base = fractions.Fraction(1, clip.clock_rate)

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._index = 0

    def pts_of(self, n: int) -> int:
        if not self._jitter:
            return n * self._step
        # quadratic, so differences of offsets identify the frame (a linear one would not)
        return n * self._step + (n * n * 7919 + n * 104729) % 997

    async def recv(self) -> av.Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        target = self._start + self._n / self.clip.fps
        if target > now:
            await asyncio.sleep(target - now)
        data = self.clip.frames[self._index]
        self._index = (self._index + 1) % len(self.clip.frames)
        packet = av.Packet(data)
        packet.pts = self.pts_of(self._n)
        packet.time_base = self._time_base
        if self._jitter:
            self.sent[packet.pts] = time.monotonic()
        self._n += 1
        self.sent_count += 1
        return packet


def hook_publisher(sender: RTCRtpSender, track: ReplayTrack) -> None:
    """Let the publisher's sender answer PLI/FIR by restarting the clip at a keyframe."""
    hook_keyframe_requests(sender, track.request_keyframe)


@dataclass
class Received:
    """What one receiving m-line got (no decoding: frames come from FrameAssembler)."""

    frames: list[tuple[str, bool, int, float]] = field(default_factory=list)
    """(stream id at arrival, keyframe, RTP timestamp, monotonic arrival time)"""
    assembler: FrameAssembler | None = None


def receive_encoded(
    receiver: RTCRtpReceiver,
    kind: str,
    stream_id: Callable[[], str],
    on_frame: Callable[[], None] | None = None,
    keep: bool = True,
) -> Received:
    """Record encoded frames arriving at ``receiver`` (install before ``receive()``)."""
    received = Received()

    def frame_cb(frame: EncodedFrame) -> None:
        if keep:
            received.frames.append(
                (stream_id(), frame.keyframe, frame.timestamp, frame.received_at)
            )
        if on_frame is not None:
            on_frame()

    received.assembler = install_assembler(receiver, kind, frame_cb, lambda: None)
    return received
