"""Every use of aiortc's and aioice's private internals (written for aiortc 1.16.0, aioice 0.13.0).

aiortc keeps ICE, DTLS, SDP and the transceivers; the SFU owns the RTP/RTCP media path.
To take it over it reaches into these private names, and nothing else does:

* ``aioice.ice.StunProtocol.datagram_received`` (class-wide, by :func:`install`): RTP and
  RTCP datagrams (first byte 128-191, which no STUN message has) skip the STUN parse that
  would fail on them anyway and go straight to the connection, as before.
* ``aioice.ice.Connection.data_received`` (per SFU connection, by :func:`tap`): RTP/RTCP
  datagrams go to the SFU's handler on the event loop, synchronously; DTLS and everything
  else still reach aiortc's DTLS transport through aioice's queue.
* ``aioice.ice.Connection._nominated``: the selected candidate pair, to send on.
* ``RTCDtlsTransport._rx_srtp`` / ``._tx_srtp`` / ``._state``: the SRTP sessions once the
  DTLS handshake is done.
* ``RTCRtpSender.send`` / ``RTCRtpReceiver.receive`` (per transceiver, by
  :func:`take_over`): replaced by no-ops, so aiortc's RTP/RTCP loops and decoder thread
  never start for SFU media; ``_ssrc`` / ``_rtx_ssrc`` / ``_stream_id`` / ``_track_id``
  are what aiortc writes into ``a=ssrc`` and ``a=msid``.
* ``RTCRtpTransceiver._codecs`` / ``._headerExtensions`` / ``._offerDirection``: what was
  negotiated (payload types, extension ids) and what the remote offered.
* ``RTCPeerConnection._RTCPeerConnection__cname``: the CNAME written into the SDP.

Test and benchmark peers (plain aiortc clients) use :func:`replace_jitter_buffer`,
:func:`send_pli` and :func:`hook_keyframe_requests` to count encoded frames without
decoding and to answer keyframe requests from a replayed clip.
Bump the pinned versions only after re-reading those files.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import aioice
import aiortc
import aiortc.rtcrtpreceiver as _rtcrtpreceiver
from aioice.ice import Connection, StunProtocol
from aiortc import RTCDtlsTransport, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from pylibsrtp import Session

AIORTC_VERSION = "1.16.0"
AIOICE_VERSION = "0.13.0"
if aiortc.__version__ != AIORTC_VERSION:  # pragma: no cover - guards an upgrade
    raise ImportError(f"sfu reaches into aiortc {AIORTC_VERSION}, found {aiortc.__version__}")
if aioice.__version__ != AIOICE_VERSION:  # pragma: no cover - guards an upgrade
    raise ImportError(f"sfu reaches into aioice {AIOICE_VERSION}, found {aioice.__version__}")

DatagramHandler = Callable[[bytes], None]


async def close_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc``; a caller cancelled meanwhile does not cancel aiortc's own close.

    aiortc closes a connection by itself (in a task) once its DTLS transport closed, and
    any other `close()` awaits that task's bare future: a cancelled awaiter (the plane
    shutting down while a lost connection is released) would cancel the future, and
    aiortc's task would then fail setting its result (InvalidStateError)."""
    await asyncio.shield(pc.close())


class Counters:
    """Process-wide counts that let tests prove aiortc's media loops never run for the SFU."""

    def __init__(self) -> None:
        self.taken_over = 0
        """Transceivers whose RTP path the SFU owns."""
        self.owned_loops = 0
        """aiortc send/receive loops or decoder threads started for those (must stay 0)."""
        self.decoder_workers = 0
        """Decoder threads started in this process for receivers nobody took over."""
        self.passthrough_receivers = 0
        """Receivers whose jitter buffer a test peer replaced (they never decode)."""


COUNTERS = Counters()
_OWNED = "_sfu_owned"
_installed = False


def install() -> None:
    """Applies the class-wide patches (idempotent); the SFU calls it before any connection."""
    global _installed
    if _installed:
        return
    _installed = True
    stun_received = StunProtocol.datagram_received

    def datagram_received(self: StunProtocol, data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes) and data and 127 < data[0] < 192:
            self.receiver.data_received(data, self.local_candidate.component)
            return
        stun_received(self, data, addr)

    StunProtocol.datagram_received = datagram_received  # type: ignore[method-assign]

    for cls, names in (
        (RTCRtpSender, ("_run_rtp", "_run_rtcp")),
        (RTCRtpReceiver, ("_run_rtcp",)),
    ):
        for name in names:
            setattr(cls, name, _counting(getattr(cls, name)))

    original_worker = _rtcrtpreceiver.decoder_worker

    def decoder_worker(
        loop: Any, input_q: queue.Queue[Any], output_q: Any, decode_error: threading.Event
    ) -> None:
        if isinstance(input_q, _NoDecodeQueue):
            COUNTERS.passthrough_receivers += 1
            return
        COUNTERS.decoder_workers += 1
        original_worker(loop, input_q, output_q, decode_error)

    _rtcrtpreceiver.decoder_worker = decoder_worker


def _counting(method: Callable[..., Any]) -> Callable[..., Any]:
    async def run(self: Any, *args: Any) -> Any:
        if getattr(self, _OWNED, False):
            COUNTERS.owned_loops += 1
        return await method(self, *args)

    return run


# ------------------------------------------------------------------------------- SFU side


def take_over(transceiver: RTCRtpTransceiver) -> None:
    """Keeps aiortc's RTP/RTCP loops (and its decoder thread) from ever starting for it."""
    if getattr(transceiver.sender, _OWNED, False):
        return

    async def no_loops(_: Any) -> None:
        return None

    for part in (transceiver.sender, transceiver.receiver):
        setattr(part, _OWNED, True)
    transceiver.sender.send = no_loops  # type: ignore[method-assign,assignment]
    transceiver.receiver.receive = no_loops  # type: ignore[method-assign,assignment]
    COUNTERS.taken_over += 1


def ice_connection(dtls: RTCDtlsTransport) -> Connection:
    return dtls.transport._connection


def tap(dtls: RTCDtlsTransport, handler: DatagramHandler, rtcp: bool = True) -> None:
    """Delivers the connection's RTP (and RTCP, unless ``rtcp`` is False) datagrams to
    ``handler`` on the event loop; everything else still goes to aiortc."""
    connection = ice_connection(dtls)
    if getattr(connection, _OWNED, False):
        return
    setattr(connection, _OWNED, True)
    stock = connection.data_received

    if rtcp:

        def data_received(data: bytes, component: int) -> None:
            if 127 < data[0] < 192:
                handler(data)
            else:
                stock(data, component)

    else:

        def data_received(data: bytes, component: int) -> None:
            if 127 < data[0] < 192 and not (len(data) > 1 and 191 < data[1] < 224):
                handler(data)
            else:
                stock(data, component)

    connection.data_received = data_received  # type: ignore[method-assign]


def srtp_sessions(dtls: RTCDtlsTransport) -> tuple[Session, Session] | None:
    """(inbound, outbound) SRTP sessions, once the DTLS handshake has finished."""
    if dtls._state != DtlsState.CONNECTED or dtls._rx_srtp is None:
        return None
    return dtls._rx_srtp, dtls._tx_srtp


def nominated_pairs(dtls: RTCDtlsTransport) -> dict[int, Any]:
    """aioice's nominated candidate pairs by component (a live dict: 1 is RTP, once ICE is up)."""
    pairs: dict[int, Any] = ice_connection(dtls)._nominated
    return pairs


def is_plain_udp(pair: Any) -> bool:
    """A host/srflx pair: its protocol sends with ``transport.sendto`` (TURN frames data)."""
    return type(pair.protocol) is StunProtocol


def negotiated(transceiver: RTCRtpTransceiver) -> tuple[list[Any], list[Any]]:
    """(codecs, header extensions) as negotiated: payload types and ids of this m-line."""
    return list(transceiver._codecs), list(transceiver._headerExtensions)


def offered_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """The direction the remote's last offer implies for us (None until it offered)."""
    direction: str | None = transceiver._offerDirection
    return direction


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    """(media SSRC, RTX SSRC) aiortc announced for this sender in ``a=ssrc``."""
    return int(sender._ssrc), int(sender._rtx_ssrc)


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """The MediaStream id aiortc writes into this m-line's ``a=msid``."""
    sender._stream_id = stream_id


def cname(pc: RTCPeerConnection) -> str:
    return str(pc._RTCPeerConnection__cname)  # type: ignore[attr-defined]


# --------------------------------------------------------------------- test and bench peers


class _NoDecodeQueue(queue.Queue[Any]):
    """Marks a receiver whose decoder thread must not run."""


def replace_jitter_buffer(receiver: RTCRtpReceiver, buffer: Any) -> dict[int, Any]:
    """Puts ``buffer`` (``add(packet) -> (bool, None)``) in place of the receiver's jitter
    buffer and keeps its decoder thread from decoding; returns its codecs by payload type.

    Must be called before ``receive()`` runs (before the description is applied)."""
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_queue = _NoDecodeQueue()  # type: ignore[attr-defined]
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    return codecs


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """Asks the sender behind ``receiver`` for a keyframe (RTCP PLI)."""
    await receiver._send_rtcp_pli(media_ssrc)


def hook_keyframe_requests(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Routes PLI/FIR that reach ``sender`` (a no-op flag in aiortc) to ``callback``."""
    sender._send_keyframe = callback  # type: ignore[method-assign]
