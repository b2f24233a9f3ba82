"""Engine.IO and Socket.IO tuned for the signaling hot path.

python-socketio's defaults cost us most of our time per relayed offer (see
benchmarks/README.md, "Profile"): per-message deflate on every websocket frame, a binary scan
of every payload, and a task plus a timer per received and per sent engine.io message. What
this module changes keeps the wire identical; it reaches into python-engineio 4.15 and
python-socketio 5.18 internals, so both are pinned in pyproject.toml and checked here.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import orjson
import socketio
from aiohttp.web import WebSocketResponse
from engineio import async_socket, exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as aiohttp_driver

for _package, _series in (("python-engineio", "4.15."), ("python-socketio", "5.18.")):
    if not version(_package).startswith(_series):  # pragma: no cover
        raise RuntimeError(f"signaling.transport is written for {_package} {_series}x")


class JsonPackets:
    """socket.io packet JSON through orjson: faster, and the same text on the wire."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        return orjson.loads(text)


class JsonOnlyPacket(socketio.packet.Packet):  # type: ignore[misc]
    """The contract is JSON only: skip the scan for binary attachments in every payload."""

    uses_binary_events = False


class PlainWebSocket(aiohttp_driver.WebSocket):  # type: ignore[misc]
    """engine.io's aiohttp websocket without per-message deflate.

    Signaling frames are small and already dense; compressing and inflating each one cost
    ~80 µs per relayed offer and ~100 KB of zlib state per connection.
    """

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size,
            compress=False,
            timeout=2.0,
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


async def _poll(self: async_socket.AsyncSocket) -> list[eio_packet.Packet]:
    """engine.io's `poll` without a task and a timer per batch.

    The writer needs no timeout of its own: it ends when the reader ends (which puts the
    end-of-queue mark), and the reader ends when the websocket's heartbeat finds a dead peer.
    """
    try:
        packets = [await self.queue.get()]
        self.queue.task_done()
    except asyncio.CancelledError:
        raise exceptions.QueueEmpty() from None
    if packets == [None]:
        return []
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


_stock_websocket_handler = async_socket.AsyncSocket._websocket_handler


async def _websocket_handler(self: async_socket.AsyncSocket, ws: Any) -> None:
    """engine.io's websocket loop without a task and a timer per received message.

    Liveness is the websocket heartbeat's job (`PlainWebSocket`: one reusable timer per
    connection) and engine.io's own ping check; a timer per message cost ~70 µs per relayed
    offer. A polling client upgrading to websocket keeps the stock path (once per client).
    """
    if self.connected:
        await _stock_websocket_handler(self, ws)
        return
    self.connected = True
    self.upgraded = True
    max_size = self.server.max_http_buffer_size

    async def writer() -> None:
        while True:
            try:
                packets = await self.poll()
            except exceptions.QueueEmpty:
                break
            if not packets:
                break
            try:
                for pkt in packets:
                    await ws.send(pkt.encode())
            except Exception:
                break
        await ws.close()

    writer_task = asyncio.ensure_future(writer())
    while True:
        try:
            data = await ws.wait()
        except (asyncio.CancelledError, OSError, RuntimeError):
            break
        except Exception:
            break
        if data is None:
            break
        if len(data) > max_size:
            break
        try:
            await self.receive(eio_packet.Packet(encoded_packet=data))
        except exceptions.UnknownPacketError:
            pass
        except exceptions.SocketIsClosedError:
            break
        except Exception:
            self.server.logger.exception("Unknown receive error")
    await self.queue.put(None)
    await writer_task
    await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


def install(server: socketio.AsyncServer) -> None:
    """Applies the lean transport to `server` (and engine.io's socket class, process-wide)."""
    async_socket.AsyncSocket.poll = _poll
    async_socket.AsyncSocket._websocket_handler = _websocket_handler
    server.eio._async = {**server.eio._async, "websocket": PlainWebSocket}


# Relay events that skip python-socketio's packet objects and namespace dispatch: decoded once
# with orjson and handed to the same Hub dispatcher (rate limit, validation, errors unchanged).
# Only ack-less events on the default namespace start exactly like this.
FAST_EVENTS = ('2["video:offer",', '2["video:answer",', '2["video:ice-candidate",')


def fast_event(data: Any) -> tuple[str, list[Any]] | None:
    """`(event, args)` for a hot-path relay packet, None for anything else."""
    if not isinstance(data, str) or not data.startswith(FAST_EVENTS):
        return None
    try:
        decoded = orjson.loads(data[1:])
    except orjson.JSONDecodeError:
        return None
    return decoded[0], decoded[1:]


def encode_event(event: str, data: Any) -> str:
    """The text of a socket.io EVENT packet on the default namespace."""
    return "2" + orjson.dumps([event, data]).decode()
