"""Fan-out of encoded frames: one Source per published track, one ForwardTrack per
subscriber transceiver. Nothing here decodes; frames stay ``bytes`` until the subscriber's
sender packs them (``RTCRtpSender`` calls ``encoder.pack()`` for ``av.Packet``)."""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from collections.abc import Callable
from typing import Any

import av
from aiortc import RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from . import metrics
from ._aiortc_patch import EncodedFrame, FrameAssembler, install_passthrough, send_pli

logger = logging.getLogger(__name__)

_TIME_BASES: dict[int, fractions.Fraction] = {}


def _time_base(clock_rate: int) -> fractions.Fraction:
    tb = _TIME_BASES.get(clock_rate)
    if tb is None:
        tb = _TIME_BASES[clock_rate] = fractions.Fraction(1, clock_rate)
    return tb


class Source:
    """A publisher's track (camera, microphone or screen) as received by the SFU."""

    def __init__(
        self,
        kind: str,
        stream_id: str,
        keyframe_interval_s: float,
        spawn: Callable[[Any], None],
    ) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.subscribers: set[ForwardTrack] = set()
        self.keyframe_requests = 0
        self.frames = 0
        self._interval = keyframe_interval_s
        self._spawn = spawn
        self._receiver: RTCRtpReceiver | None = None
        self._assembler: FrameAssembler | None = None
        self._last_pli = -1e9
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._pli_metric = metrics.KEYFRAME_REQUESTS.labels(kind)
        self._packets_metric = metrics.RECEIVED_PACKETS.labels(kind)
        self._packets_seen = 0

    def bind(self, receiver: RTCRtpReceiver) -> None:
        """Take encoded frames from ``receiver`` (before its ``receive()`` runs)."""
        self._receiver = receiver
        self._assembler = install_passthrough(receiver, self.kind, self._on_frame, self._on_loss)

    def restart(self) -> None:
        """The publisher's m-line is reused (screen share again): start from a keyframe."""
        if self._assembler is not None:
            self._assembler.reset()

    @property
    def packets(self) -> int:
        return self._assembler.packets if self._assembler is not None else 0

    def _on_frame(self, frame: EncodedFrame) -> None:
        self.frames += 1
        packets = self.packets
        self._packets_metric.inc(packets - self._packets_seen)
        self._packets_seen = packets
        if not frame.clean and not frame.keyframe:
            # References may be missing: nobody gets frames until the next keyframe.
            for sub in self.subscribers:
                sub.gate()
            if self.subscribers:
                self.request_keyframe()
            return
        for sub in self.subscribers:
            sub.push(frame)

    def _on_loss(self) -> None:
        for sub in self.subscribers:
            sub.gate()
        self.request_keyframe()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe, at most once per keyframe interval."""
        if self._closed or self._timer is not None or self.kind != "video":
            return
        loop = asyncio.get_running_loop()
        wait = self._last_pli + self._interval - loop.time()
        if wait <= 0:
            self._send_pli()
        else:
            self._timer = loop.call_later(wait, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if any(sub.waiting for sub in self.subscribers):
            self._send_pli()

    def _send_pli(self) -> None:
        receiver, assembler = self._receiver, self._assembler
        if receiver is None or assembler is None or assembler.ssrc is None:
            return  # no media yet: the first frame is unclean and will ask again
        self._last_pli = asyncio.get_running_loop().time()
        self.keyframe_requests += 1
        self._pli_metric.inc()
        self._spawn(send_pli(receiver, assembler.ssrc))

    def close(self) -> None:
        """Stop asking for keyframes and let every subscriber go idle."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sub in list(self.subscribers):
            sub.detach()


class ForwardTrack(MediaStreamTrack):
    """The long-lived track of one subscriber transceiver; sources are switched inside.

    ``recv()`` returns ``av.Packet`` (so the sender packs instead of encoding), never
    raises while the track is live (a MediaStreamError would end the sender for good),
    starts on a keyframe and re-gates to the next keyframe after any drop. The queue is
    bounded: a subscriber that falls ``max_queue`` frames behind loses its backlog.
    """

    def __init__(self, kind: str, max_queue: int) -> None:
        super().__init__()
        self.kind = kind
        self.source: Source | None = None
        self.waiting = True
        self.frames = 0
        self.dropped = 0
        self._active = False
        self._max = max_queue
        self._queue: collections.deque[EncodedFrame] = collections.deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._epoch: tuple[int, int] | None = None
        self._base_in = 0
        self._base_out = 0
        self._last_out = -1
        self._step = 3000 if kind == "video" else 960
        self._frames_metric = metrics.FORWARDED_FRAMES.labels(kind)
        self._dropped_metric = metrics.DROPPED_FRAMES.labels(kind)

    def attach(self, source: Source) -> None:
        """Forward ``source`` from now on (frames flow once :meth:`activate` is called)."""
        self.detach()
        self.source = source
        source.subscribers.add(self)

    def detach(self) -> None:
        if self.source is not None:
            self.source.subscribers.discard(self)
        self.source = None
        self._active = False
        self._epoch = None
        self._queue.clear()

    def activate(self) -> None:
        """The subscriber's m-line is negotiated as sending: start on a fresh keyframe."""
        if self._active or self.source is None:
            return
        self._active = True
        self.waiting = True
        self.source.request_keyframe()

    def gate(self) -> None:
        """Accept nothing but a keyframe from now on (queued frames predate the loss)."""
        if self._active:
            self.waiting = True

    def push(self, frame: EncodedFrame) -> None:
        if not self._active:
            return
        if self.waiting:
            if not frame.keyframe:
                self.dropped += 1
                self._dropped_metric.inc()
                return
            self.waiting = False
        elif len(self._queue) >= self._max:
            # Too slow: drop the backlog and resume at the next keyframe.
            self.dropped += len(self._queue) + 1
            self._dropped_metric.inc(len(self._queue) + 1)
            self._queue.clear()
            if not frame.keyframe:
                self.waiting = True
                if self.source is not None:
                    self.source.request_keyframe()
                return
        self._queue.append(frame)
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def recv(self) -> av.Packet[Any]:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        frame = self._queue.popleft()
        # Rebase timestamps so pts stays monotonic per sender across source switches.
        epoch = (id(self.source), frame.epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._base_in = frame.timestamp
            self._base_out = self._last_out + self._step if self._last_out >= 0 else 0
        pts = frame.timestamp - self._base_in + self._base_out
        if pts <= self._last_out:
            pts = self._last_out + 1
        self._last_out = pts
        packet = av.Packet(frame.data)
        packet.pts = pts
        packet.time_base = _time_base(frame.clock_rate)
        self.frames += 1
        self._frames_metric.inc()
        return packet

    def stop(self) -> None:
        self.detach()
        super().stop()
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
