"""Engine.IO for the edge: a lean websocket loop, bounded buffers, and closes that close.

What python-engineio 4.15 does that we change (all of it private API, hence the pin):

- No per-message deflate, no task and no timer per message (the relay hot path; see
  benchmarks/README.md, "Profile"). Liveness is the websocket heartbeat's job.
- A frame that does not decode closes the connection for real: the websocket is closed (not
  just sent an Engine.IO CLOSE), within `CLOSE_TIMEOUT_S` even if the peer never answers,
  and nothing it sends afterwards is processed.
- The outgoing queue of each connection is measured (`Outbox`): a client that stops reading
  is cut off once its backlog passes `send_queue_max_bytes` or its oldest packet
  `send_queue_max_age_s`; the others never wait for it.
- Long-polling POSTs are decoded without tracebacks and never wait for the client to poll.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import time
from collections import deque
from typing import Any

import engineio
from aiohttp import WSCloseCode, WSMsgType
from aiohttp.http_websocket import WebSocketError
from aiohttp.web import WebSocketResponse
from engineio import async_socket, exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver

from signaling.edge.rejects import EdgePolicy, Rejects, closing

CLOSE_TIMEOUT_S = 2.0
"""How long a closing connection may take to say goodbye before its TCP connection is cut."""

Item = Any
"""A packet in the send queue (engine.io's `Packet` is untyped), or the end-of-queue None."""


class Oversize(Exception):
    """A websocket message larger than `max_http_buffer_size` (aiohttp refused it)."""


def _size(item: Item) -> int:
    data = item.data if item is not None else None
    return len(data) if isinstance(data, str | bytes) else 0


class Outbox(asyncio.Queue[Item]):
    """engine.io's send queue, measured: bytes waiting and when the oldest was queued."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._stamps: deque[tuple[float, int]] = deque()
        self.bytes = 0

    def _put(self, item: Item) -> None:
        super()._put(item)
        size = _size(item)
        self._stamps.append((time.monotonic(), size))
        self.bytes += size

    def _get(self) -> Item:
        item: Item = super()._get()
        _, size = self._stamps.popleft()
        self.bytes -= size
        return item

    def oldest_age(self, now: float) -> float:
        return now - self._stamps[0][0] if self._stamps else 0.0


def decode_packet(data: Any) -> eio_packet.Packet | None:
    """The Engine.IO packet of one websocket message; None when it does not decode."""
    if isinstance(data, str) and (not data or data[0] not in "0123456b"):
        return None
    try:
        pkt = eio_packet.Packet(encoded_packet=data)
    except (ValueError, TypeError, IndexError, binascii.Error):
        return None
    return pkt if 0 <= pkt.packet_type <= eio_packet.NOOP else None


def decode_payload(body: bytes) -> list[eio_packet.Packet] | None:
    """The packets of a long-poll POST body (`\\x1e`-separated); None if any does not decode.

    engine.io's own decoder refuses more than 16 packets, but socket.io-client batches its
    whole write buffer (a burst of ICE candidates): the size limit bounds the work instead.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return []
    packets = []
    for part in text.split("\x1e"):
        pkt = decode_packet(part)
        if pkt is None:
            return None
        packets.append(pkt)
    return packets


class PlainWebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """engine.io's aiohttp websocket without per-message deflate, with a bounded close.

    Signaling frames are small and already dense; compressing and inflating each one cost
    ~80 µs per relayed offer and ~100 KB of zlib state per connection.
    """

    close_code: int = WSCloseCode.OK

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._transport = request.transport
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size,
            compress=False,
            timeout=CLOSE_TIMEOUT_S,
            # Pings at engine.io's interval; a peer that stops answering is closed, which ends
            # the reader loop (and so the writer) without a timer per message.
            heartbeat=self.server.ping_interval,
        )
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self._sock.send_bytes(message)
        else:
            await self._sock.send_str(message)

    async def wait(self) -> str | bytes | None:
        """The next message; None once the websocket is closed."""
        msg = await self._sock.receive()
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        error = msg.data if msg.type is WSMsgType.ERROR else None
        if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
            raise Oversize
        return None

    async def close(self) -> None:
        """Closes the websocket; a peer that does not let us within CLOSE_TIMEOUT_S is cut."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._sock.close(code=self.close_code)
        except TimeoutError:
            self.abort()

    def abort(self) -> None:
        """Cuts the TCP connection at once (a peer that does not read cannot be closed)."""
        if self._transport is not None:
            self._transport.abort()


class EdgeSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    """One Engine.IO connection, closed for real and with bounded buffers."""

    queue: Outbox
    connected: bool
    upgraded: bool
    upgrading: bool
    closing: bool
    closed: bool

    def __init__(self, server: EdgeEngineServer, sid: str) -> None:
        super().__init__(server, sid)
        self.policy = server.edge_policy
        self.rejects = Rejects(self.policy)
        self.ws: PlainWebSocket | None = None
        self.overflowed = False
        self._watchdog: asyncio.TimerHandle | None = None

    # -- what the server sends --------------------------------------------------------------

    async def poll(self) -> list[eio_packet.Packet]:
        """engine.io's `poll` without a task and a timer per batch.

        The writer needs no timeout of its own: it ends when the reader ends (which puts the
        end-of-queue mark), and the reader ends when the websocket's heartbeat finds a dead peer.
        """
        try:
            first = await self.queue.get()
            self.queue.task_done()
        except asyncio.CancelledError:
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)
                break
            packets.append(pkt)
        return packets

    async def send(self, pkt: eio_packet.Packet) -> None:
        """Queues a packet, unless the client stopped reading: then it is cut off instead."""
        if self.closed or self.overflowed:
            return
        if pkt.packet_type != eio_packet.CLOSE and not self.closing:
            policy = self.policy
            queue = self.queue
            if queue.bytes > policy.send_queue_max_bytes or (
                queue.oldest_age(time.monotonic()) > policy.send_queue_max_age_s
            ):
                self._overflow(queue.bytes)
                return
        if not await self.check_ping_timeout():
            return
        self.queue.put_nowait(pkt)

    def _overflow(self, backlog: int) -> None:
        """The client stopped reading: drop its backlog and cut it off, never waiting on it."""
        self.overflowed = True
        closing(self.sid, "slow-reader", f"{backlog} bytes not read")
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
        if self.ws is not None:
            self.ws.abort()  # its reader loop ends and closes the socket
        else:
            self.server.spawn(self.close(wait=False, abort=True))

    # -- closing ------------------------------------------------------------------------------

    async def close(
        self, wait: bool = True, abort: bool = False, reason: str | None = None
    ) -> None:
        """engine.io's close, then the transport too: never waits for the client (`wait`)."""
        if self.closed or self.closing:
            return
        await super().close(wait=False, abort=abort, reason=reason)
        # The end-of-queue mark ends the websocket writer (which closes the websocket) or
        # answers a pending long-poll; the session is gone for any later request.
        self.queue.put_nowait(None)
        if self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]
        if self.ws is not None and self._watchdog is None:
            ws = self.ws
            self._watchdog = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S * 2, ws.abort)

    def drop(self, reason: str, detail: str, code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        """Marks the connection for closing with `code` (the caller then stops reading it)."""
        closing(self.sid, reason, detail)
        if self.ws is not None:
            self.ws.close_code = code

    # -- what the client sends ----------------------------------------------------------------

    async def receive_frame(self, data: Any) -> None:
        """One websocket message or long-poll packet; a frame that does not decode closes."""
        pkt = decode_packet(data)
        if pkt is None:
            self.drop("bad-frame", "not an Engine.IO packet", WSCloseCode.PROTOCOL_ERROR)
            await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        try:
            await self.receive(pkt)
        except exceptions.UnknownPacketError:
            # OPEN, PING or NOOP from a client: harmless, but not what a client sends.
            if self._unexpected(pkt):
                self.drop("garbage", "too many refused inputs")
                await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)

    def _unexpected(self, pkt: eio_packet.Packet) -> bool:
        """Counts a packet a client has no reason to send; True when the budget is spent."""
        return self.rejects.note(self.sid, "unexpected-packet", f"Engine.IO {pkt.packet_type}")

    async def _websocket_handler(self, ws: PlainWebSocket) -> None:
        """engine.io's websocket loop, lean (see the module docstring) and closing for real."""
        self.ws = ws
        if self.connected:
            if not await self._upgrade(ws):
                return
        else:
            self.connected = True
            self.upgraded = True
        writer = asyncio.ensure_future(self._writer(ws))
        max_size = self.server.max_http_buffer_size
        try:
            while not (self.closed or self.closing):
                try:
                    data = await ws.wait()
                except Oversize:
                    self._oversize(max_size)
                    break
                except (asyncio.CancelledError, OSError, RuntimeError):
                    break
                if data is None:
                    break
                if len(data) > max_size:  # aiohttp enforces it; this is the stock check
                    self._oversize(max_size)
                    break
                await self.receive_frame(data)
        finally:
            self.queue.put_nowait(None)
            try:
                await asyncio.wait_for(writer, CLOSE_TIMEOUT_S * 2)
            except (TimeoutError, asyncio.CancelledError):
                ws.abort()
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            if self._watchdog is not None:
                self._watchdog.cancel()

    def _oversize(self, limit: int) -> None:
        self.drop("oversize", f"a message over {limit} bytes", WSCloseCode.MESSAGE_TOO_BIG)

    async def _writer(self, ws: PlainWebSocket) -> None:
        while True:
            packets = await self.poll()
            if not packets:
                break
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except Exception:
                break
        await ws.close()

    async def _upgrade(self, ws: PlainWebSocket) -> bool:
        """engine.io's polling -> websocket upgrade (probe, then UPGRADE), without tracebacks."""
        self.upgrading = True  # hold packet sends during the upgrade
        try:
            probe = decode_packet(await ws.wait())
            if probe is None or probe.packet_type != eio_packet.PING or probe.data != "probe":
                return False
            await ws.send(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
            await self.queue.put(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
            upgrade = decode_packet(await ws.wait())
            if upgrade is None or upgrade.packet_type != eio_packet.UPGRADE:
                return False
        except (Oversize, OSError, RuntimeError):
            return False
        finally:
            self.upgrading = False
        self.upgraded = True
        return True

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """A long-poll POST: decoded without tracebacks; the first bad packet closes."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self.server.max_http_buffer_size:
            self.drop("oversize", f"a POST of {length} bytes")
            await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        body = await environ["wsgi.input"].read(length)
        packets = decode_payload(body)
        if packets is None:
            self.drop("bad-frame", "not an Engine.IO payload")
            await self.close(wait=False, reason=self.server.reason.TRANSPORT_ERROR)
            return
        for pkt in packets:
            if self.closed or self.closing:
                break
            try:
                await self.receive(pkt)
            except exceptions.UnknownPacketError:
                self._unexpected(pkt)


class EdgeEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's server with `EdgeSocket` connections and quiet sends to gone sessions."""

    _async: dict[str, Any]
    sockets: dict[str, EdgeSocket]

    def __init__(self, *args: Any, edge_policy: EdgePolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edge_policy = edge_policy or EdgePolicy()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._async = {**self._async, "websocket": PlainWebSocket}

    def create_queue(self, *args: Any, **kwargs: Any) -> Outbox:
        return Outbox(*args, **kwargs)

    async def send_packet(self, sid: str, pkt: eio_packet.Packet) -> None:
        socket = self.sockets.get(sid)
        if socket is not None and not socket.closed:
            await socket.send(pkt)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        """Closes every connection at once (graceful shutdown: clients reconnect elsewhere)."""
        for socket in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(socket.close(wait=False), CLOSE_TIMEOUT_S)
        self.sockets.clear()


def install() -> None:
    """engine.io builds `async_socket.AsyncSocket` for each connection: make that ours.

    Process-wide (as the previous method patches were); every engine.io server in this
    process is an `EdgeEngineServer`.
    """
    async_socket.AsyncSocket = EdgeSocket
