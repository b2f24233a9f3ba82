"""Socket.IO for the edge: which client packets reach a handler, and what the rest get.

python-socketio 5.18 dispatches any event name a client sends to any handler registered
under it, its own lifecycle handlers included (a client emitting `disconnect` ran our
disconnect cleanup), logs a traceback for a packet it cannot decode and keeps partial binary
packets without bound. Here (private API, hence the pin):

- Only events registered with `register_event` are dispatched. Reserved names (Socket.IO's
  lifecycle events and whatever this server handles for itself) and unknown names are
  refused with INVALID_PAYLOAD, as the error event or the ack the client asked for.
- A framed EVENT whose JSON does not decode (deep nesting, a lone surrogate) is refused the
  same way; a packet whose framing is broken closes the connection.
- Binary attachments (the contract is JSON) are counted, never kept, and refused once the
  packet is complete; more than one message's worth (`max_http_buffer_size`) closes.
- Unsolicited acks, events for a namespace the client did not join and the like are
  counted and budgeted (`rejects.Rejects`), never logged one by one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import socketio
from aiohttp import WSCloseCode
from socketio import packet as sio_packet

from signaling.edge import frames
from signaling.edge.engine import EdgeEngineServer, EdgeSocket
from signaling.errors import InvalidPayload, SignalingError, error_ack, error_event

Dispatch = Callable[[str, list[Any], bool], Awaitable[Any]]
"""`dispatch(sid, args, acked)`: runs one client event and returns its ack payload."""
AckError = Callable[[SignalingError], Any]

LIFECYCLE_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)
"""Socket.IO's own event names (socket.io-parser's RESERVED_EVENTS): never a client event."""


class JsonPackets:
    """Socket.IO packet JSON through orjson: faster, and the same text on the wire."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


class JsonOnlyPacket(socketio.packet.Packet):  # type: ignore[misc]
    """The contract is JSON only: skip the scan for binary attachments in every payload."""

    uses_binary_events = False


@dataclass(frozen=True)
class ClientEvent:
    dispatch: Dispatch
    ack_error: AckError


@dataclass
class PendingBinary:
    """A binary packet waiting for its attachments: what is needed to refuse it, no data."""

    header: frames.Header
    event: str
    is_ack: bool
    received: int = 0
    size: int = 0


class EdgeServer(socketio.AsyncServer):  # type: ignore[misc]
    after_connect: Callable[[str], None] | None = None
    """Called once a client has been told it is connected (its CONNECT was answered)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("json", JsonPackets)
        kwargs.setdefault("serializer", JsonOnlyPacket)
        # Handlers run in order, one at a time per socket (an offer before its candidates).
        kwargs.setdefault("async_handlers", False)
        super().__init__(**kwargs)
        self.client_events: dict[str, ClientEvent] = {}

    def _engineio_server_class(self) -> type[EdgeEngineServer]:
        return EdgeEngineServer

    def register_event(self, event: str, dispatch: Dispatch, ack_error: AckError) -> None:
        """Makes `event` a client event; no other name a client sends is ever dispatched."""
        if event in LIFECYCLE_EVENTS or event in self.reserved_events:
            raise ValueError(f"{event!r} is a Socket.IO lifecycle event")
        self.client_events[event] = ClientEvent(dispatch, ack_error)

    # -- what the sockets layer needs (private API behind public methods) ----------------------

    async def send_local(self, sid: str, event: str, data: Any) -> bool:
        """Sends an event straight to a socket of this process, skipping the message queue.

        With a message queue python-socketio otherwise publishes every emit, even to a
        local socket. False when `sid` has no engine.io session here.
        """
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            return False
        await self.eio.send(eio_sid, frames.encode_event(event, data))
        return True

    def start_queue(self) -> None:
        """Starts the message queue's pub/sub listener now, once.

        Otherwise it starts only with the first client (AIORTC.md), and python-socketio
        initialises it again on the first connection unless told it is done: a second
        listener, and every cross-node emit delivered twice.
        """
        self.manager.initialize()
        self.manager_initialized = True

    async def close_transports(self) -> None:
        """Closes every transport (websocket and long-poll alike) so the web server stops
        at once; socket.io clients see a transport close and reconnect by themselves."""
        await self.eio.close_all()

    def is_reserved(self, event: str) -> bool:
        return (
            event in LIFECYCLE_EVENTS
            or event in self.reserved_events
            or event in self.handlers.get("/", {})
        )

    # -- rejections ---------------------------------------------------------------------------

    def _socket(self, eio_sid: str) -> EdgeSocket | None:
        sock = self.eio.sockets.get(eio_sid)
        if not isinstance(sock, EdgeSocket) or sock.closed or sock.closing:
            return None
        return sock

    async def note_rejected(self, sid: str, reason: str, detail: str) -> None:
        """Counts a refused input of socket `sid` (validation errors, from the dispatcher)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        sock = self._socket(eio_sid) if eio_sid is not None else None
        if sock is not None:
            await self._note(sock, reason, detail)

    async def _note(self, sock: EdgeSocket, reason: str, detail: str) -> bool:
        """Counts and maybe logs; closes a connection past its budget. True when closed."""
        if not sock.rejects.note(sock.sid, reason, detail):
            return False
        await self._drop(sock, "garbage", f"{sock.rejects.total} refused inputs", notify=True)
        return True

    async def _drop(self, sock: EdgeSocket, reason: str, detail: str, notify: bool = False) -> None:
        """Closes the connection for real; `notify` tells a socket.io client not to reconnect."""
        code = WSCloseCode.MESSAGE_TOO_BIG if reason == "oversize" else WSCloseCode.POLICY_VIOLATION
        sock.drop(reason, detail, code)
        if notify:
            for namespace in list(self.manager.get_namespaces()):
                sid = self.manager.sid_from_eio_sid(sock.sid, namespace)
                if sid is not None and self.manager.is_connected(sid, namespace):
                    await self.disconnect(sid, namespace=namespace, ignore_queue=True)
        await sock.close(wait=False, abort=False, reason=self.reason.SERVER_DISCONNECT)

    async def _refuse(
        self,
        sock: EdgeSocket,
        header: frames.Header,
        event: str,
        message: str,
        reason: str,
    ) -> None:
        """INVALID_PAYLOAD for a packet no handler takes: as the ack if one was asked for."""
        if await self._note(sock, reason, f"{event[: frames.MAX_EVENT_CHARS]!r}: {message}"):
            return
        error = InvalidPayload(message)
        known = self.client_events.get(event)
        echoed = event[: frames.MAX_EVENT_CHARS]
        if header.ack_id is not None:
            ack = (known.ack_error if known is not None else error_ack)(error)
            pkt = self.packet_class(
                sio_packet.ACK, namespace=header.namespace, id=header.ack_id, data=[ack]
            )
        else:
            pkt = self.packet_class(
                sio_packet.EVENT,
                namespace=header.namespace,
                data=["error", error_event(error, echoed)],
            )
        await self._send_packet(sock.sid, pkt)

    # -- dispatch -----------------------------------------------------------------------------

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        fast = frames.fast_event(data)
        if fast is not None and eio_sid not in self._binary_packet:
            event, args = fast
            sid = self.manager.sid_from_eio_sid(eio_sid, "/")
            entry = self.client_events.get(event)
            if sid is not None and entry is not None and self.manager.is_connected(sid, "/"):
                await entry.dispatch(sid, args, False)
                return
        sock = self._socket(eio_sid)
        if sock is None:
            return  # nothing from a connection that is closing is acted on
        try:
            await self._dispatch(sock, data)
        except frames.BadFrame as exc:
            await self._drop(sock, "bad-frame", str(exc))

    async def _dispatch(self, sock: EdgeSocket, data: Any) -> None:
        eio_sid = sock.sid
        pending = self._binary_packet.get(eio_sid)
        if pending is not None:
            await self._attachment(sock, pending, data)
            return
        if not isinstance(data, str):
            raise frames.BadFrame("binary data that no packet announced")
        header = frames.parse(data)
        kind = header.type
        if kind == frames.EVENT:
            await self._event(sock, header)
        elif kind == frames.CONNECT:
            await self._connect(sock, header)
        elif kind == frames.DISCONNECT:
            await self._handle_disconnect(eio_sid, header.namespace, self.reason.CLIENT_DISCONNECT)
        elif kind == frames.ACK:
            await self._note(sock, "unexpected-ack", "the server asked for no ack")
        elif kind in (frames.BINARY_EVENT, frames.BINARY_ACK):
            sid = self.manager.sid_from_eio_sid(eio_sid, header.namespace)
            if sid is None or not self.manager.is_connected(sid, header.namespace):
                raise frames.BadFrame("a binary packet before connecting")
            self._binary_packet[eio_sid] = PendingBinary(
                header=header,
                event=frames.event_name_of(header.body) if kind == frames.BINARY_EVENT else "",
                is_ack=kind == frames.BINARY_ACK,
            )
        else:
            raise frames.BadFrame("clients do not send CONNECT_ERROR")

    async def _attachment(self, sock: EdgeSocket, pending: PendingBinary, data: Any) -> None:
        if not isinstance(data, bytes):
            raise frames.BadFrame("a text packet where a binary attachment was due")
        pending.received += 1
        pending.size += len(data)
        limit = self.eio.max_http_buffer_size
        if pending.size > limit:
            await self._drop(sock, "oversize", f"binary attachments over {limit} bytes")
            return
        if pending.received < pending.header.attachments:
            return
        del self._binary_packet[sock.sid]
        if pending.is_ack:
            await self._note(sock, "unexpected-ack", "the server asked for no ack")
            return
        await self._refuse(
            sock,
            pending.header,
            pending.event,
            "binary attachments are not supported: send JSON",
            "binary-attachment",
        )

    async def _event(self, sock: EdgeSocket, header: frames.Header) -> None:
        sid = self.manager.sid_from_eio_sid(sock.sid, header.namespace)
        if sid is None or not self.manager.is_connected(sid, header.namespace):
            # No namespace session to answer on (before CONNECT, after DISCONNECT).
            await self._note(sock, "not-connected", f"an event for {header.namespace[:64]!r}")
            return
        try:
            event, args = frames.decode_event(header.body)
        except frames.BadPayload as exc:
            await self._refuse(sock, header, exc.event, exc.message, "undecodable-payload")
            return
        entry = self.client_events.get(event)
        if entry is None:
            if self.is_reserved(event):
                await self._refuse(
                    sock, header, event, f"{event!r} is a reserved event name", "reserved-event"
                )
            else:
                await self._refuse(
                    sock, header, event, f"unknown event {event[:64]!r}", "unknown-event"
                )
            return
        result = await entry.dispatch(sid, args, header.ack_id is not None)
        if header.ack_id is not None:
            await self._send_packet(
                sock.sid,
                self.packet_class(
                    sio_packet.ACK,
                    namespace=header.namespace,
                    id=header.ack_id,
                    data=[] if result is None else [result],
                ),
            )

    async def _connect(self, sock: EdgeSocket, header: frames.Header) -> None:
        try:
            auth = frames.decode_json(header.body) if header.body else None
        except frames.BadPayload:
            raise frames.BadFrame("the CONNECT packet's auth is not JSON") from None
        if self.manager.sid_from_eio_sid(sock.sid, header.namespace) is not None:
            await self._note(sock, "duplicate-connect", "already connected to this namespace")
        await self._handle_connect(sock.sid, header.namespace, auth)

    async def _handle_connect(self, eio_sid: str, namespace: str, data: Any) -> None:
        # The connect handler runs before the client is told it is connected; what must reach
        # the client after that (missed notifications) waits for `after_connect`.
        await super()._handle_connect(eio_sid, namespace, data)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return  # refused
        if self._socket(eio_sid) is None:
            # The transport closed while the handshake ran (a slow auth check): undo what the
            # handshake registered, or its session would outlive its connection.
            await self._handle_disconnect(eio_sid, namespace, self.reason.TRANSPORT_CLOSE)
            return
        if self.after_connect is not None:
            self.after_connect(sid)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._binary_packet.pop(eio_sid, None)
        await super()._handle_eio_disconnect(eio_sid, reason)
