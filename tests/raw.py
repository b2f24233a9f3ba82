"""Hand-made Engine.IO / Socket.IO clients for the edge tests: frames exactly as written.

`RawSocket` speaks websocket through aiohttp (answering engine.io pings, nothing else),
`RawPolling` speaks long-polling with plain HTTP requests, and `stalled_websocket` opens a
websocket over a TCP socket that never reads again (a client that stops reading).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

import aiohttp

TIMEOUT = 5.0
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)


def ws_url(url: str) -> str:
    return url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"


def event(name: str, *args: Any, ack: int | None = None) -> str:
    """A Socket.IO EVENT packet inside an Engine.IO MESSAGE (`42["name",...]`)."""
    return "42" + ("" if ack is None else str(ack)) + json.dumps([name, *args])


class RawSocket:
    """One websocket connection driven frame by frame."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.sid = ""  # the Socket.IO session id once connected

    async def open(self) -> RawSocket:
        self.ws = await self.http.ws_connect(ws_url(self.url), autoping=True, max_msg_size=0)
        opened = await self.recv()
        assert opened.startswith("0{"), opened
        return self

    async def connect(self, auth: dict[str, Any] | None = None) -> str:
        await self.send("40" + (json.dumps(auth) if auth is not None else ""))
        reply = await self.recv()
        assert reply.startswith("40{"), reply
        self.sid = json.loads(reply[2:])["sid"]
        return self.sid

    async def send(self, data: str | bytes) -> None:
        assert self.ws is not None
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def recv(self, timeout: float = TIMEOUT) -> str:
        """The next text frame that is not an engine.io ping (pings are answered)."""
        assert self.ws is not None
        while True:
            message = await self.ws.receive(timeout)
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"websocket {message.type.name}")
            if message.data == "2":
                await self.ws.send_str("3")
                continue
            return str(message.data)

    async def recv_event(self, timeout: float = TIMEOUT) -> tuple[str, Any]:
        """The next EVENT (`42[...]`) as (name, first argument), skipping anything else."""
        while True:
            frame = await self.recv(timeout)
            if frame.startswith("42["):
                name, *args = json.loads(frame[2:])
                return name, args[0] if args else None

    async def recv_ack(self, ack: int, timeout: float = TIMEOUT) -> Any:
        prefix = f"43{ack}["
        while True:
            frame = await self.recv(timeout)
            if frame.startswith(prefix):
                data = json.loads(frame[len(prefix) - 1 :])
                return data[0] if data else None

    async def closed_by_server(self, timeout: float = TIMEOUT) -> bool:
        """Waits (bounded) for the server to close the websocket; reading all until then."""
        assert self.ws is not None

        async def until_closed() -> None:
            assert self.ws is not None
            while True:
                message = await self.ws.receive()
                if message.type in CLOSED or message.type is aiohttp.WSMsgType.ERROR:
                    return

        try:
            await asyncio.wait_for(until_closed(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class RawPolling:
    """One long-polling session driven request by request."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.base = url + "/socket.io/?EIO=4&transport=polling"
        self.url = ""
        self.sid = ""

    async def open(self) -> RawPolling:
        status, text = await self.get(self.base)
        assert status == 200 and text.startswith("0{"), text
        self.url = f"{self.base}&sid={json.loads(text[1:])['sid']}"
        return self

    async def get(self, url: str | None = None) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT * 2)
        async with self.http.get(url or self.url, timeout=timeout) as response:
            return response.status, await response.text()

    async def post(self, *packets: str | bytes) -> int:
        body: bytes | str
        if len(packets) == 1 and isinstance(packets[0], bytes):
            body = packets[0]
        else:
            body = "\x1e".join(
                "b" + base64.b64encode(p).decode() if isinstance(p, bytes) else p for p in packets
            )
        timeout = aiohttp.ClientTimeout(total=TIMEOUT * 2)
        async with self.http.post(self.url, data=body, timeout=timeout) as response:
            await response.read()
            return response.status

    async def connect(self, auth: dict[str, Any] | None = None) -> str:
        await self.post("40" + (json.dumps(auth) if auth is not None else ""))
        status, text = await self.get()
        assert status == 200 and text.startswith("40{"), text
        self.sid = json.loads(text[2:].split("\x1e")[0])["sid"]
        return self.sid


@dataclass
class Stalled:
    """A websocket whose client stopped reading: the kernel buffers fill, then the server's."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            head = bytes([0x81, 0x80 | size])
        else:
            head = bytes([0x81, 0x80 | 126]) + size.to_bytes(2, "big")
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + body)
        await self.writer.drain()

    def close(self) -> None:
        self.writer.transport.abort()


async def stalled_websocket(url: str, auth: dict[str, Any]) -> Stalled:
    """Opens a websocket and connects with `auth`, reading only the handshake; then nothing.

    A tiny receive buffer makes the kernel hold little for it, so the server's own queue
    for this client is what grows when its room is busy.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {host}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    stalled = Stalled(reader, writer)
    await asyncio.wait_for(_frame(reader), TIMEOUT)  # engine.io OPEN
    await stalled.send("40" + json.dumps(auth))
    await asyncio.wait_for(_frame(reader), TIMEOUT)  # socket.io CONNECT
    return stalled


async def _frame(reader: asyncio.StreamReader) -> bytes:
    """One unmasked server frame (the handshake's: small, text)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return await reader.readexactly(size)
