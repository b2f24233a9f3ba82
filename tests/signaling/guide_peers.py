"""A guide-dialect client with real aiortc connections, written from the guide's hooks.

The guide's flow (document 004, 4.2.3-4.2.5): the joiner offers to every `existingUsers`
of its `join-room` ack, every member offers to a newcomer on `user-joined`, each offer
received gets a new `RTCPeerConnection` and an answer, answers and candidates go to the
connection kept for `from`, `user-left` closes it. Remote media is keyed by the stream id
the other side puts in its description. Replayed clips (never encoded here), and the
encoded frames received per peer are counted without decoding.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription

from devtools.media import Clip, Received, ReplayTrack, hook_publisher, receive_encoded
from tests.clients import Client
from tests.sfu.peers import until


def stream_ids(sdp: str) -> dict[str, str]:
    """mid -> the MediaStream id a description gives that m-line's track."""
    out: dict[str, str] = {}
    for media in SessionDescription.parse(sdp).media:
        if media.msid and media.rtp.muxId:
            out[media.rtp.muxId] = media.msid.split()[0]
    return out


class GuidePeer:
    """One page of the guide's client; ``chat`` adds the guide's 6.5 DataChannel to offers;
    ``lower_offers`` applies the guide's glare rule (7.4: only the lower socket id offers)."""

    def __init__(
        self,
        url: str,
        video: Clip | None,
        audio: Clip | None = None,
        chat: bool = False,
        lower_offers: bool = False,
    ):
        self.client = Client(url, None)  # the guide's client sends no auth: a guest
        self.clips = [c for c in (audio, video) if c is not None]
        self.chat = chat
        self.lower_offers = lower_offers
        self.channels: dict[str, Any] = {}
        self.messages: list[tuple[str, str]] = []
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.all_pcs: list[RTCPeerConnection] = []
        self.tracks: list[ReplayTrack] = []
        self.received: dict[int, list[tuple[str, Received]]] = {}  # id(pc) -> (kind, counts)
        self.streams: dict[int, dict[str, str]] = {}  # id(pc) -> mid -> remote stream id
        self.offers_from: list[str] = []
        self.answers: dict[str, str] = {}
        self.errors: list[Any] = []
        self.failures: list[BaseException] = []
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def sid(self) -> str:
        return self.client.sid

    async def connect(self) -> GuidePeer:
        sio = self.client.sio
        sio.on("offer", lambda data: self._spawn(self._on_offer(data)))
        sio.on("answer", lambda data: self._spawn(self._on_answer(data)))
        sio.on("user-joined", lambda data: self._spawn(self.maybe_offer(data["userId"])))
        sio.on("user-left", self._on_user_left)
        sio.on("error", self._on_error)
        await self.client.connect()
        return self

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_error(self, data: Any) -> None:
        self.errors.append(data)
        self.changed.set()

    async def _on_user_left(self, data: dict[str, Any]) -> None:
        pc = self.pcs.pop(data["userId"], None)
        if pc is not None:
            await pc.close()
        self.changed.set()

    async def create(self, room: str) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call("create-room", room)
        return ack

    async def join(self, room: str) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call("join-room", room)
        for user in ack.get("existingUsers", []):  # useVideoChat: offer to everyone there
            self._spawn(self.maybe_offer(user))
        return ack

    async def maybe_offer(self, peer: str) -> None:
        if not self.lower_offers or self.sid < peer:
            await self.send_offer(peer)

    def _chat(self, peer: str, channel: Any) -> None:
        """The guide's createDataChannel / ondatachannel: messages kept by sender."""
        self.channels[peer] = channel

        def on_message(message: str) -> None:
            self.messages.append((peer, message))
            self.changed.set()

        channel.on("message", on_message)
        channel.on("open", self.changed.set)

    def _new_pc(self, peer: str) -> RTCPeerConnection:
        pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.pcs[peer] = pc
        self.all_pcs.append(pc)
        for clip in self.clips:  # a browser's connections all send one camera; here each
            track = ReplayTrack(clip)  # gets a replay of its own (aiortc stops tracks on close)
            self.tracks.append(track)
            hook_publisher(pc.addTrack(track), track)
        return pc

    def _count(self, pc: RTCPeerConnection) -> None:
        streams = self.streams.setdefault(id(pc), {})
        counts = self.received.setdefault(id(pc), [])
        for t in pc.getTransceivers():
            mid = t.mid or ""
            counts.append(
                (
                    t.kind,
                    receive_encoded(
                        t.receiver,
                        t.kind,
                        lambda mid=mid: streams.get(mid, ""),  # type: ignore[misc]
                        self.changed.set,
                    ),
                )
            )

    async def send_offer(self, peer: str) -> None:
        """useWebRTC's sendOffer (with the DataChannel of 6.5 when ``chat``)."""
        try:
            pc = self._new_pc(peer)
            if self.chat:
                self._chat(peer, pc.createDataChannel("chat"))
            await pc.setLocalDescription(await pc.createOffer())
            self._count(pc)
            offer = {"type": "offer", "sdp": pc.localDescription.sdp}
            await self.client.emit("offer", {"target": peer, "offer": offer})
        except Exception as exc:
            self.failures.append(exc)

    async def _on_offer(self, data: dict[str, Any]) -> None:
        try:
            peer = data["from"]
            self.offers_from.append(peer)
            pc = self._new_pc(peer)
            pc.on("datachannel", lambda channel: self._chat(peer, channel))
            await pc.setRemoteDescription(RTCSessionDescription(**data["offer"]))
            self.streams[id(pc)] = stream_ids(data["offer"]["sdp"])
            self._count(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            answer = {"type": "answer", "sdp": pc.localDescription.sdp}
            await self.client.emit("answer", {"target": peer, "answer": answer})
        except Exception as exc:
            self.failures.append(exc)
        self.changed.set()

    async def _on_answer(self, data: dict[str, Any]) -> None:
        peer = data["from"]
        self.answers[peer] = data["answer"]["sdp"]
        pc = self.pcs.get(peer)
        try:
            if pc is not None:
                self.streams.setdefault(id(pc), {}).update(stream_ids(data["answer"]["sdp"]))
                await pc.setRemoteDescription(RTCSessionDescription(**data["answer"]))
        except Exception as exc:
            self.failures.append(exc)
        self.changed.set()

    def frames(self, peer: str, kind: str = "video") -> dict[str, int]:
        """Frames received on the connection kept for ``peer``, by the stream id they came
        under (the guide keys remote streams by it)."""
        pc = self.pcs.get(peer)
        out: dict[str, int] = {}
        for k, received in self.received.get(id(pc), []) if pc is not None else []:
            if k == kind:
                for stream, *_ in received.frames:
                    out[stream] = out.get(stream, 0) + 1
        return out

    async def wait_frames(self, peers: list[str], n: int = 5, kind: str = "video") -> None:
        """Until the connection kept for each peer brought ``n`` more frames under that
        peer's socket id as stream id."""
        start = {p: self.frames(p, kind).get(p, 0) for p in peers}
        await until(
            self.changed,
            lambda: all(self.frames(p, kind).get(p, 0) >= start[p] + n for p in peers),
        )

    def uploads(self) -> list[str]:
        """Peers whose connection carries this page's own camera."""
        return [
            peer
            for peer, pc in self.pcs.items()
            if any(
                t.kind == "video"
                and t.currentDirection in ("sendrecv", "sendonly")
                and t.sender.track is not None
                for t in pc.getTransceivers()
            )
        ]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.client.close()
        for pc in self.all_pcs:
            await pc.close()
        for track in self.tracks:
            track.stop()
