"""Offer/answer on one server-offered connection: one offer outstanding, changes coalesced.

The SFU makes every offer on its connections. While an offer waits for its answer, later
changes (someone joins, leaves, shares a screen) only mark the connection as due, and
ride in one offer sent once the answer is in. An offer left unanswered is sent again once
after ``answer_timeout_s``; if that one goes unanswered too, ``on_unanswered`` is called.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp

from .answers import answer_problem
from .errors import MediaError

logger = logging.getLogger(__name__)

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_SENDS = {"sendrecv": True, "sendonly": True, "recvonly": False, "inactive": False}
_RECVS = {"sendrecv": True, "sendonly": False, "recvonly": True, "inactive": False}


class NegotiationError(Exception):
    """The client's description cannot be applied; the message says why, in words."""


def direction_of(send: bool, recv: bool) -> str:
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly"}.get(
        (send, recv), "inactive"
    )


def sections(sdp: str) -> list[list[str]]:
    """The lines of each m= section (the session part is left out)."""
    out: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def clamp_directions(answer_sdp: str, offer_sdp: str) -> str:
    """Each answered direction made a subset of what was offered (RFC 3264 section 6).

    A non-compliant ``sendrecv`` answer to a recvonly m-line would otherwise make aiortc
    think it must send on a transceiver that has nothing to send.
    """
    offered = [
        next((line[2:] for line in section if line[2:] in DIRECTIONS), "sendrecv")
        for section in sections(offer_sdp)
    ]
    lines = answer_sdp.splitlines()
    index = -1
    for i, line in enumerate(lines):
        if line.startswith("m="):
            index += 1
        elif index >= 0 and line.startswith("a=") and line[2:] in DIRECTIONS:
            ours = offered[index] if index < len(offered) else "inactive"
            theirs = line[2:]
            clamped = direction_of(_SENDS[theirs] and _RECVS[ours], _RECVS[theirs] and _SENDS[ours])
            lines[i] = "a=" + clamped
    return "\r\n".join(lines) + "\r\n"


def ssrcs_by_mid(sdp: str) -> dict[str, tuple[int | None, int | None]]:
    """(media SSRC, RTX SSRC) each m-line of a description announces (``a=ssrc``, FID)."""
    out: dict[str, tuple[int | None, int | None]] = {}
    for section in sections(sdp):
        mid = None
        ssrcs: list[int] = []
        fid: tuple[int, int] | None = None
        for line in section:
            if line.startswith("a=mid:"):
                mid = line[6:].strip()
            elif line.startswith("a=ssrc-group:FID "):
                parts = line.split()
                if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
                    fid = (int(parts[1]), int(parts[2]))
            elif line.startswith("a=ssrc:"):
                first = line[7:].split(" ", 1)[0]
                if first.isdigit() and int(first) not in ssrcs:
                    ssrcs.append(int(first))
        if mid is None:
            continue
        if fid is not None:
            out[mid] = fid
        elif ssrcs:
            out[mid] = (ssrcs[0], None)
        else:
            out[mid] = (None, None)
    return out


def describe(exc: Exception) -> str:
    """What is wrong with a description, for the client (never Python's exception text)."""
    name = type(exc).__name__
    text = str(exc)
    if name == "InvalidAccessError" and "m-line" in text.lower():
        return "the answer's m-lines do not match the offer"
    if name == "InvalidAccessError":
        return "the answer lacks what WebRTC requires (ICE credentials or a DTLS fingerprint)"
    if name == "OperationError":
        return "the answer has no codec in common with the offer"
    if name == "InvalidStateError":
        return "the connection cannot take an answer now"
    return "the answer is not a valid session description"


class Negotiator:
    """Serialises the offers of one connection and applies the client's answers."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        send_offer: Callable[[dict[str, Any]], Awaitable[None]],
        answer_timeout_s: float,
        on_unanswered: Callable[[], Awaitable[None]],
    ) -> None:
        self.pc = pc
        self.lock = asyncio.Lock()
        self.in_flight = False
        self.pending = False
        self.closed = False
        self.offers = 0
        self._send_offer = send_offer
        self._timeout = answer_timeout_s
        self._on_unanswered = on_unanswered
        self._offer: dict[str, Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._resent = False
        self._tasks: set[asyncio.Future[Any]] = set()

    async def negotiate(self) -> None:
        """Send a new offer now, or mark one due after the outstanding answer."""
        if self.closed:
            return
        if self.in_flight:
            self.pending = True
            return
        self.in_flight = True
        self.pending = False
        async with self.lock:
            if self.closed:
                return
            try:
                offer = await self.pc.createOffer()
                await self.pc.setLocalDescription(offer)
            except InvalidStateError:
                self.closed = True  # the connection closed under us: nothing to offer
                return
            self._offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        self.offers += 1
        self._resent = False
        self._arm()
        await self._send_offer(self._offer)

    async def apply_answer(self, answer: dict[str, Any]) -> None:
        """The client's answer to the outstanding offer (raises `NegotiationError`)."""
        if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str):
            raise NegotiationError("an answer is {type: 'answer', sdp: string}")
        if answer.get("type", "answer") != "answer":
            raise NegotiationError("the SFU makes every offer: send it an answer")
        async with self.lock:
            if self.closed:
                return
            local = self.pc.localDescription
            if not self.in_flight or local is None or self.pc.signalingState != "have-local-offer":
                raise NegotiationError("no offer from the SFU is waiting for an answer")
            problem = answer_problem(answer["sdp"], local.sdp)
            if problem is not None:
                raise NegotiationError(problem)
            sdp = clamp_directions(answer["sdp"], local.sdp)
            try:
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                logger.info("sfu: answer refused (%s)", type(exc).__name__)
                raise NegotiationError(describe(exc)) from None
            self.in_flight = False
            self._disarm()

    def _arm(self) -> None:
        self._disarm()
        if self._timeout > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.closed or not self.in_flight or self._offer is None:
            return
        if not self._resent:
            self._resent = True
            self._arm()
            self._spawn(self._send_offer(self._offer))
        else:
            self._spawn(self._on_unanswered())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        self.closed = True
        self._disarm()


def parse_candidate(candidate: dict[str, Any] | None) -> RTCIceCandidate | None:
    """A trickled browser candidate, bundled on the first m-line; None ends the candidates.

    Everything is bundled on the first m-line's transport, whatever mid the client names
    (aiortc only feeds candidates to unbundled transceivers)."""
    if candidate is not None and not isinstance(candidate, dict):
        raise MediaError("candidate must be an object or null")
    text = candidate.get("candidate") if candidate else None
    if not text:
        return None
    if not isinstance(text, str):
        raise MediaError("candidate.candidate must be a string")
    try:
        ice = candidate_from_sdp(text.removeprefix("candidate:"))
    except (AssertionError, ValueError, IndexError):
        raise MediaError("the candidate is not an ICE candidate line") from None
    ice.sdpMLineIndex = 0
    ice.sdpMid = None
    return ice
