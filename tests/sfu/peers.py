"""aiortc peers for SFU tests: answer the plane's offers, publish replayed clips, count frames.

`PeerClient` talks to anything with the plane's `join` / `answer` / `candidate` methods: the
`MediaPlane` itself, or a socket.io client speaking to the signaling server (tests/signaling).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from devtools.media import Clip, Received, ReplayTrack, hook_publisher, receive_encoded
from devtools.poll import poll_until
from sfu._aiortc import COUNTERS

TIMEOUT = 10.0
SignalSink = Callable[[str, dict[str, Any] | None], Any]


class PlaneLike(Protocol):
    async def join(self, room_id: str, participant_id: str, sink: Any) -> None: ...

    async def answer(self, room_id: str, participant_id: str, answer: dict[str, Any]) -> None: ...

    async def candidate(
        self, room_id: str, participant_id: str, candidate: dict[str, Any] | None
    ) -> None: ...


class DecodeCounter:
    def __init__(self) -> None:
        self.calls = 0
        self.workers_before = COUNTERS.decoder_workers

    @property
    def decoder_workers(self) -> int:
        return COUNTERS.decoder_workers - self.workers_before


async def until(event: asyncio.Event, pred: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``pred()`` holds, re-checking whenever ``event`` fires."""

    async def loop() -> None:
        while not pred():
            event.clear()
            await event.wait()

    await asyncio.wait_for(loop(), timeout)


async def settle_tasks(baseline: int, timeout: float = TIMEOUT) -> int:
    """Wait (bounded) for the loop's task count to fall back to ``baseline``; the count."""
    with contextlib.suppress(TimeoutError):
        await poll_until(lambda: len(asyncio.all_tasks()) <= baseline, timeout)
    return len(asyncio.all_tasks())


Mode = Literal["fill", "add-first", "none"]


class PeerClient:
    """A client of the SFU: answers its offers, publishes a replayed clip, counts frames.

    ``fill``: puts its tracks on the offered recvonly m-lines after applying the offer.
    ``add-first``: ``addTrack`` before applying the first offer (browsers doing that get
    their transceivers associated with the recvonly m-lines and answer ``sendonly``).
    ``trickle``: strips candidates from the answer and sends them via ``candidate()``.
    ``sendrecv_answer``: answers ``sendrecv`` on the SFU's recvonly m-lines.
    """

    def __init__(
        self,
        plane: PlaneLike,
        room: str,
        pid: str,
        video: Clip | None,
        audio: Clip | None,
        mode: Mode = "fill",
        trickle: bool = False,
        keep_frames: bool = True,
        sendrecv_answer: bool = False,
    ) -> None:
        self.plane = plane
        self.room = room
        self.id = pid
        self.mode = mode
        self.trickle = trickle
        self.sendrecv_answer = sendrecv_answer
        self.keep = keep_frames
        # aiortc answering a BUNDLE offer with BALANCED leaves the 2nd m-line of a kind
        # on a discarded transport (see docs/aiortc.md): clients use MAX_BUNDLE too.
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.changed = asyncio.Event()
        self.offers: list[str] = []
        self.answered = 0
        self.msids: dict[str, str] = {}
        self.received: dict[str, Received] = {}
        self.mic = ReplayTrack(audio) if audio and mode != "none" else None
        self.cam = ReplayTrack(video) if video and mode != "none" else None
        self.screen = ReplayTrack(video) if video and mode != "none" else None
        self.sharing = False
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        self._closing = False
        self._task = asyncio.create_task(self._run())
        self.errors: list[BaseException] = []

    async def sink(self, kind: str, payload: dict[str, Any] | None) -> None:
        self._inbox.put_nowait((kind, payload))

    async def join(self) -> None:
        await self.plane.join(self.room, self.id, self.sink)

    async def _run(self) -> None:
        while True:
            kind, payload = await self._inbox.get()
            if self._closing:
                return
            if kind != "offer" or payload is None:
                continue
            try:
                await self._on_offer(payload)
            except Exception as exc:  # surfaced by the tests
                self.errors.append(exc)
            self.changed.set()

    def _own_tracks(self, kind: str) -> list[ReplayTrack]:
        if kind == "audio":
            return [self.mic] if self.mic else []
        tracks = [self.cam] if self.cam else []
        if self.sharing and self.screen:
            tracks.append(self.screen)
        return tracks

    async def _on_offer(self, offer: dict[str, Any]) -> None:
        if self.mode == "add-first" and not self.offers:
            for track in (self.mic, self.cam):
                if track is not None:
                    hook_publisher(self.pc.addTrack(track), track)
        self.offers.append(offer["sdp"])
        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        parsed = SessionDescription.parse(offer["sdp"])
        for media in parsed.media:
            if media.msid:
                self.msids[media.rtp.muxId] = media.msid.split()[0]
        used = {id(t.sender.track) for t in self.pc.getTransceivers() if t.sender.track}
        for t in self.pc.getTransceivers():
            mid = t.mid
            assert mid is not None
            if mid not in self.received:
                self.received[mid] = receive_encoded(
                    t.receiver,
                    t.kind,
                    lambda mid=mid: self.msids.get(mid, ""),  # type: ignore[misc]
                    self.changed.set,
                    keep=self.keep,
                )
            # The SFU wants to receive on m-lines it offered recvonly.
            if t._offerDirection == "sendonly" and t.sender.track is None:
                free = [x for x in self._own_tracks(t.kind) if id(x) not in used]
                if free:
                    t.direction = "sendonly"
                    t.sender.replaceTrack(free[0])
                    hook_publisher(t.sender, free[0])
                    used.add(id(free[0]))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        sdp = self.pc.localDescription.sdp
        if self.sendrecv_answer:  # a sloppy client: sendrecv where only sendonly is allowed
            sdp = sdp.replace("a=sendonly", "a=sendrecv")
        if not self.trickle:
            await self.plane.answer(self.room, self.id, {"type": "answer", "sdp": sdp})
        else:
            lines = sdp.splitlines()
            candidates = [x[2:] for x in lines if x.startswith("a=candidate:")]
            stripped = "\r\n".join(
                x for x in lines if not x.startswith(("a=candidate:", "a=end-of-candidates"))
            )
            await self.plane.answer(
                self.room, self.id, {"type": "answer", "sdp": stripped + "\r\n"}
            )
            first_mid = parsed.media[0].rtp.muxId
            for cand in candidates:
                await self.plane.candidate(
                    self.room,
                    self.id,
                    {"candidate": cand, "sdpMid": first_mid, "sdpMLineIndex": 0},
                )
            await self.plane.candidate(self.room, self.id, None)
        self.answered += 1

    def frames_by_stream(self, kind: str) -> dict[str, list[tuple[bool, int, float]]]:
        """Frames received per publisher stream id (in arrival order)."""
        out: dict[str, list[tuple[bool, int, float]]] = {}
        for mid, rec in self.received.items():
            t = next(x for x in self.pc.getTransceivers() if x.mid == mid)
            if t.kind != kind:
                continue
            for stream, key, ts, at in rec.frames:
                out.setdefault(stream, []).append((key, ts, at))
        return out

    def count_from(self, kind: str, stream: str) -> int:
        return len(self.frames_by_stream(kind).get(stream, []))

    def mline_count(self) -> int:
        return len(re.findall(r"^m=", self.offers[-1], re.M)) if self.offers else 0

    async def wait_frames(self, kind: str, streams: list[str], n: int = 5) -> None:
        await until(self.changed, lambda: all(self.count_from(kind, s) >= n for s in streams))

    async def close(self) -> None:
        # A cancel that lands inside aiortc while an offer is being answered can be
        # swallowed there (the task then waits for the next offer for ever): the flag,
        # and a message to wake the loop, end it either way.
        self._closing = True
        self._inbox.put_nowait(("", None))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.pc.close()
        for track in (self.mic, self.cam, self.screen):
            if track is not None:
                track.stop()


class SocketPlane:
    """The SFU seen through the signaling server: the contract's `to: "sfu"` events.

    `PeerClient(SocketPlane(client), room, client.sid, ...)` answers the server's
    `video:offer { from: "sfu" }` with `video:answer { to: "sfu" }` over a real socket.io client.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sink: Any = None
        self.joined: dict[str, Any] | None = None

    async def join(self, room_id: str, participant_id: str, sink: Any) -> None:
        self.sink = sink

        async def on_offer(payload: dict[str, Any]) -> None:
            await self.client.events["video:offer"].put(payload)
            if payload.get("from") == "sfu":
                await sink("offer", payload["offer"])

        self.client.sio.on("video:offer", on_offer)
        self.joined = await self.client.call("video:join-room", {"roomId": room_id, "sfu": True})

    async def answer(self, room_id: str, participant_id: str, answer: dict[str, Any]) -> None:
        await self.client.emit("video:answer", {"to": "sfu", "answer": answer})

    async def candidate(
        self, room_id: str, participant_id: str, candidate: dict[str, Any] | None
    ) -> None:
        await self.client.emit("video:ice-candidate", {"to": "sfu", "candidate": candidate})


class MeshPeer:
    """A client written like the documents' (one connection per peer, a new connection for
    every offer received, streams keyed by the peer), talking to the plane directly.

    It offers to the peers it is told about (`offer_to`), answers every offer the SFU makes
    as a peer, and counts the encoded frames it receives from each peer.
    """

    def __init__(
        self,
        plane: Any,
        room: str,
        pid: str,
        video: Clip | None,
        audio: Clip | None,
        offers_to_newcomers: bool = True,
    ) -> None:
        self.plane = plane
        self.room = room
        self.id = pid
        self.offers_to_newcomers = offers_to_newcomers
        self.clips = [c for c in (audio, video) if c is not None]
        self.tracks: list[ReplayTrack] = []
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.closing: list[RTCPeerConnection] = []
        self.received: dict[str, list[Received]] = {}
        self.offers: dict[str, list[str]] = {}
        self.answers: dict[str, list[str]] = {}
        self.kinds: list[tuple[str, str]] = []
        """(peer, "offer" | "reoffer") of every offer the SFU made as a peer."""
        self.changed = asyncio.Event()
        self.errors: list[BaseException] = []
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    async def join(self, offer_existing: bool = False) -> None:
        await self.plane.join_mesh(
            self.room,
            self.id,
            self.sink,
            offers_to_newcomers=self.offers_to_newcomers,
            offer_existing=offer_existing,
        )

    async def sink(self, peer: str, kind: str, payload: dict[str, Any] | None) -> None:
        if kind in ("offer", "reoffer") and payload is not None:
            self.kinds.append((peer, kind))
            self._inbox.put_nowait((peer, payload))

    def _new_pc(self, peer: str) -> RTCPeerConnection:
        old = self.pcs.pop(peer, None)
        if old is not None:
            self.closing.append(old)  # closed with the client (the documents' never close it)
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pcs[peer] = pc
        self.received[peer] = []
        # (aiortc stops a sender's track when its connection closes; browsers do not: each
        # connection gets tracks of its own, as a browser's would all run from one camera)
        for clip in self.clips:
            track = ReplayTrack(clip)
            self.tracks.append(track)
            hook_publisher(pc.addTrack(track), track)
        return pc

    def _count(self, peer: str, pc: RTCPeerConnection) -> None:
        for t in pc.getTransceivers():
            self.received[peer].append(
                receive_encoded(t.receiver, t.kind, lambda peer=peer: peer, self.changed.set)  # type: ignore[misc]
            )

    async def offer_to(self, peer: str) -> None:
        """The documents' sendOffer(peer): a new connection with the camera, an offer."""
        pc = self._new_pc(peer)
        self._count(peer, pc)
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.plane.offer(
            self.room, self.id, peer, {"type": "offer", "sdp": pc.localDescription.sdp}
        )
        self.answers.setdefault(peer, []).append(answer.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        self.changed.set()

    async def _run(self) -> None:
        while True:
            peer, offer = await self._inbox.get()
            if self._closing:
                return
            try:
                pc = self._new_pc(peer)
                await pc.setRemoteDescription(RTCSessionDescription(**offer))
                self._count(peer, pc)
                await pc.setLocalDescription(await pc.createAnswer())
                self.offers.setdefault(peer, []).append(offer["sdp"])
                await self.plane.answer(
                    self.room, self.id, {"type": "answer", "sdp": pc.localDescription.sdp}, peer
                )
            except Exception as exc:
                self.errors.append(exc)
            self.changed.set()

    def frames_from(self, peer: str, kind: str = "video") -> int:
        pc = self.pcs.get(peer)
        if pc is None:
            return 0
        kinds = [t.kind for t in pc.getTransceivers()]
        return sum(
            len(r.frames)
            for r, k in zip(self.received.get(peer, []), kinds, strict=False)
            if k == kind
        )

    async def wait_frames(self, peers: list[str], n: int = 5, kind: str = "video") -> None:
        starts = {p: self.frames_from(p, kind) for p in peers}
        await until(
            self.changed, lambda: all(self.frames_from(p, kind) >= starts[p] + n for p in peers)
        )

    def sending_links(self) -> list[str]:
        """Peers whose connection carries this client's own media (its upload)."""
        return [
            peer
            for peer, pc in self.pcs.items()
            if any(
                t.currentDirection in ("sendrecv", "sendonly") and t.sender.track
                for t in pc.getTransceivers()
            )
        ]

    async def close(self) -> None:
        self._closing = True  # as in PeerClient.close: a swallowed cancel still ends the loop
        self._inbox.put_nowait(("", {}))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for pc in [*self.pcs.values(), *self.closing]:
            await pc.close()
        for track in self.tracks:
            track.stop()
