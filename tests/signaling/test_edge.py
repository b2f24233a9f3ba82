"""The edge (signaling/edge): what a client's raw frames can and cannot do (issue 13).

Reserved and unknown event names, payloads that do not decode, binary attachments, broken
framing, closes that close, the budget for refused input and the log it leaves, on both the
websocket and the long-polling transport.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from signaling.edge.engine import CLOSE_TIMEOUT_S
from signaling.edge.server import LIFECYCLE_EVENTS
from tests.clients import Client, http_json
from tests.raw import RawPolling, RawSocket, event
from tests.server import InProcess, inprocess_server

ROOM = "edge-room"


@asynccontextmanager
async def room_with_bystander(
    **settings: Any,
) -> AsyncIterator[tuple[InProcess, Client, RawSocket]]:
    """A server, a python-socketio bystander and a raw socket `raw` in one video room."""
    async with (
        inprocess_server(room_mode="mesh", **settings) as server,
        aiohttp.ClientSession() as http,
    ):
        bob = await Client(server.url, "bob").connect()
        raw = await RawSocket(http, server.url).open()
        try:
            await bob.call("video:join-room", {"roomId": ROOM})
            await raw.connect({"userId": "raw"})
            await raw.send(event("video:join-room", {"roomId": ROOM}, ack=1))
            assert (await raw.recv_ack(1))["ok"] is True
            assert (await bob.next("video:user-joined"))["userId"] == "raw"
            yield server, bob, raw
        finally:
            await raw.close()
            await bob.close()


async def still_served(raw: RawSocket, bob: Client, text: str, ack: int = 900) -> None:
    """`raw` is alive and served as itself, and `bob` got nothing before its chat."""
    await raw.send(event("video:chat", {"roomId": ROOM, "content": text}, ack=ack))
    assert (await raw.recv_ack(ack))["ok"] is True
    chat = await bob.next("video:chat")
    assert (chat["content"], chat["user"]["id"]) == (text, "raw")
    for name in ("video:user-left", "video:user-joined", "error"):
        assert bob.pending(name) == [], name


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- reserved and unknown names ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LIFECYCLE_EVENTS))
async def test_lifecycle_names_are_refused_never_dispatched(name: str) -> None:
    async with room_with_bystander() as (server, bob, raw):
        before = counter("signaling_rejected_total", reason="reserved-event")
        await raw.send(event(name, "x"))
        message = f"{name!r} is a reserved event name"
        assert await raw.recv_event() == (
            "error",
            {"code": "INVALID_PAYLOAD", "message": message, "event": name},
        )
        await raw.send(event(name, {"userId": "impersonated"}, ack=7))
        ack = await raw.recv_ack(7)
        assert ack["ok"] is False and ack["error"]["code"] == "INVALID_PAYLOAD"
        assert counter("signaling_rejected_total", reason="reserved-event") == before + 2
        # No fake departure, no new identity: bob heard nothing, the count is unchanged.
        await still_served(raw, bob, f"after-{name}")
        _, health = await http_json("GET", server.url + "/health")
        assert health["connections"] == 2


async def test_a_python_socketio_client_cannot_fake_its_departure_or_identity() -> None:
    """The issue's attack with python-socketio's own client: `disconnect` and `connect` events."""
    async with inprocess_server(room_mode="mesh") as server:
        bob = await Client(server.url, "bob").connect()
        mallory = await Client(server.url, "mallory").connect()
        try:
            for client in (bob, mallory):
                await client.call("video:join-room", {"roomId": ROOM})
                await client.call("join-study", {"studyId": "s"})
            await bob.next("video:user-joined")
            await mallory.sio.emit("disconnect", "x")
            assert (await mallory.next("error"))["event"] == "disconnect"
            refused = await mallory.call("connect", {"userId": "impersonated"})
            assert refused["error"]["code"] == "INVALID_PAYLOAD"
            ack = await mallory.call("video:chat", {"roomId": ROOM, "content": "me"})
            assert ack["ok"] is True
            assert (await bob.next("video:chat"))["user"]["id"] == "mallory"
            for name in ("video:user-left", "presence:user-offline", "member-left", "user-left"):
                assert bob.pending(name) == [], name
        finally:
            await mallory.close()
            await bob.close()


async def test_unknown_events_get_invalid_payload_and_the_ack_arrives() -> None:
    async with room_with_bystander() as (_, bob, raw):
        await raw.send(event("no-such-event", {"a": 1}))
        name, error = await raw.recv_event()
        assert name == "error" and error["code"] == "INVALID_PAYLOAD"
        assert error["event"] == "no-such-event"
        await raw.send(event("no-such-event", ack=3))
        ack = await raw.recv_ack(3)
        assert ack["ok"] is False and ack["error"]["code"] == "INVALID_PAYLOAD"
        assert set(ack["error"]) == {"code", "message"}
        # A 10,000-character name is refused; what is echoed is bounded.
        await raw.send(event("e" * 10_000))
        _, error = await raw.recv_event()
        assert error["code"] == "INVALID_PAYLOAD" and len(error["event"]) <= 128
        await still_served(raw, bob, "after-unknown")


# -- payloads that do not decode ------------------------------------------------------------------

UNDECODABLE = {
    "lone-surrogate": ('42["video:chat",{"roomId":"edge-room","content":"\\ud83d"}]', "video:chat"),
    "deep-json": ('42["video:chat",' + "[" * 1100 + "]" * 1100 + "]", "video:chat"),
    "nan": ('42["video:chat",{"roomId":"edge-room","content":NaN}]', "video:chat"),
    "infinity": ('42["video:offer",{"to":"x","n":1e999}]', "video:offer"),
    "truncated": ('42["video:chat",{"roomId":"edge-room"', "video:chat"),
    "name-not-a-string": ("42[42,{}]", ""),
    "not-an-array": ('42{"a":1}', ""),
    "empty-array": ("42[]", ""),
    "no-body": ("42", ""),
}


@pytest.mark.parametrize("frame,name", UNDECODABLE.values(), ids=list(UNDECODABLE))
async def test_framed_but_undecodable_payloads_get_invalid_payload(frame: str, name: str) -> None:
    async with room_with_bystander() as (_, bob, raw):
        await raw.send(frame)
        kind, error = await raw.recv_event()
        assert kind == "error", (kind, error)
        assert error["code"] == "INVALID_PAYLOAD" and error["event"] == name
        assert "Traceback" not in error["message"] and "line 1" not in error["message"]
        # With an ack id the refusal is the ack.
        await raw.send("42" + "11" + frame[2:])
        assert (await raw.recv_ack(11))["error"]["code"] == "INVALID_PAYLOAD"
        await still_served(raw, bob, f"after-{name or 'frame'}")


async def test_binary_attachments_are_refused_then_bounded() -> None:
    async with room_with_bystander() as (server, bob, raw):
        # A complete binary event (what python-socketio sends for bytes): refused, alive.
        placeholders = '{"a":{"_placeholder":true,"num":0},"b":{"_placeholder":true,"num":1}}'
        await raw.send('452-["offer",' + placeholders + "]")
        await raw.send(b"\x00" * 10)
        await raw.send(b"\x01" * 10)
        _, error = await raw.recv_event()
        assert error == {
            "code": "INVALID_PAYLOAD",
            "message": "binary attachments are not supported: send JSON",
            "event": "offer",
            "type": "offer-error",
        }
        await still_served(raw, bob, "after-binary")
        # Attachments that never complete the packet: closed past one message's worth.
        await raw.send('4510-["video:chat",{"_placeholder":true,"num":0}]')
        size = server.application.settings.max_http_buffer_size
        for _ in range(3):
            await raw.send(b"\x02" * (size // 2 + 1))
        assert await raw.closed_by_server(timeout=2 * CLOSE_TIMEOUT_S + 1)
        assert (await bob.next("video:user-left"))["userId"] == "raw"
        assert server.application.sockets.server._binary_packet == {}


# -- broken framing closes, for real ---------------------------------------------------------------

BROKEN = {
    "engine-type-9": "9",
    "engine-type-letter": "x42",
    "engine-empty": "",
    "socketio-type-7": "47",
    "socketio-type-letter": "4x",
    "connect-error-from-client": '44{"message":"x"}',
    "binary-without-count": '45["video:chat",{}]',
    "too-many-attachments": '4511-["video:chat",{}]',
    "ack-id-too-long": "42" + "9" * 40 + '["video:chat",{}]',
    "connect-auth-not-json": '40{"userId":',
    "bad-base64": "b!!!",
}


@pytest.mark.parametrize("frame", BROKEN.values(), ids=list(BROKEN))
async def test_broken_frames_close_the_websocket_in_bounded_time(frame: str) -> None:
    async with room_with_bystander() as (server, bob, raw):
        await raw.send(frame)
        assert await raw.closed_by_server(timeout=2 * CLOSE_TIMEOUT_S + 1), "websocket left open"
        assert (await bob.next("video:user-left"))["userId"] == "raw"
        sio = server.application.sockets.server
        assert len(sio.eio.sockets) == 1 and len(sio.environ) == 1
        assert bob.pending("video:user-left") == []


@pytest.mark.parametrize(
    "frames",
    [[b"\x00binary"], ['451-["video:chat",{"_placeholder":true,"num":0}]', "42[]"]],
    ids=["unannounced-binary", "text-where-an-attachment-was-due"],
)
async def test_attachment_framing_errors_close(frames: list[str | bytes]) -> None:
    async with room_with_bystander() as (_, bob, raw):
        for frame in frames:
            await raw.send(frame)
        assert await raw.closed_by_server(timeout=2 * CLOSE_TIMEOUT_S + 1)
        assert (await bob.next("video:user-left"))["userId"] == "raw"


async def test_an_engine_io_close_from_the_client_closes_the_websocket() -> None:
    async with room_with_bystander() as (server, bob, raw):
        await raw.send("1")
        assert await raw.closed_by_server(timeout=2 * CLOSE_TIMEOUT_S + 1)
        assert (await bob.next("video:user-left"))["userId"] == "raw"
        _, health = await http_json("GET", server.url + "/health")
        assert health["connections"] == 1


async def test_open_close_cycles_leave_no_state_behind() -> None:
    """CONNECT, a broken frame and another CONNECT in one burst, 150 times: nothing stays."""
    async with room_with_bystander() as (server, bob, stays), aiohttp.ClientSession() as http:
        sio = server.application.sockets.server
        for n in range(150):
            raw = await RawSocket(http, server.url).open()
            await raw.connect({"userId": f"cycle-{n}"})
            await raw.send("4x")
            await raw.send('40{"userId":"again"}')
            await raw.send(event("video:join-room", {"roomId": ROOM}))
            assert await raw.closed_by_server(timeout=2 * CLOSE_TIMEOUT_S + 1)
        assert set(server.application.sockets.conns) == {bob.sid, stays.sid}
        assert len(sio.eio.sockets) == 2 and len(sio.environ) == 2
        assert len(sio.manager.rooms["/"][None]) == 2 and sio._binary_packet == {}
        assert bob.pending("video:user-joined") == []


async def test_a_transport_that_closes_during_a_slow_handshake_leaves_no_session() -> None:
    """verify-URL auth answers after the client closed (long-polling: the CONNECT and the
    close travel in separate requests): the session must not outlive its connection."""
    release = asyncio.Event()
    asked = asyncio.Event()

    async def verify(request: aiohttp.web.Request) -> aiohttp.web.Response:
        asked.set()
        await release.wait()
        return aiohttp.web.json_response({"user": {"id": "slow", "name": "Slow"}})

    from tests.signaling.test_auth import app_server

    async with (
        app_server("/verify", verify) as verify_url,
        inprocess_server(room_mode="mesh", auth_verify_url=verify_url) as server,
        aiohttp.ClientSession() as http,
    ):
        poll = await RawPolling(http, server.url).open()
        handshake = asyncio.ensure_future(poll.post('40{"userId":"slow","token":"t"}'))
        await asyncio.wait_for(asked.wait(), 5)
        assert await poll.post("1") == 200  # engine.io CLOSE while the auth check runs
        sio = server.application.sockets.server
        assert sio.eio.sockets == {}
        release.set()
        await asyncio.wait_for(handshake, 5)
        assert server.application.sockets.conns == {}
        assert sio.manager.rooms.get("/", {}).get(None) is None
        _, health = await http_json("GET", server.url + "/health")
        assert health["connections"] == 0


# -- the budget and the log -----------------------------------------------------------------------


async def test_a_client_that_keeps_sending_garbage_is_disconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with room_with_bystander(reject_budget=5, reject_refill_per_s=0) as (_, bob, raw):
        for n in range(5):
            await raw.send(event(f"junk-{n}"))
            assert (await raw.recv_event())[0] == "error"
        await raw.send(event("junk-last"))
        frames = []
        while True:
            try:
                frames.append(await raw.recv(timeout=2 * CLOSE_TIMEOUT_S + 1))
            except ConnectionError:
                break
        assert "41" in frames, frames  # socket.io DISCONNECT: the official client won't retry
        assert (await bob.next("video:user-left"))["userId"] == "raw"
    lines = [r for r in caplog.records if r.name == "signaling.edge"]
    assert len(lines) == 2, [r.getMessage() for r in lines]  # one refusal, one close
    assert all(r.exc_info is None for r in caplog.records)


async def test_floods_of_bad_input_log_no_tracebacks_and_few_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's 200 `connect` events (400 tracebacks before) and more, from one socket."""
    caplog.set_level(logging.DEBUG)
    async with room_with_bystander(reject_budget=10_000) as (_, bob, raw):
        for n in range(200):
            await raw.send(event("connect", {"userId": f"imp-{n}"}))
            await raw.send('42["video:chat",{"roomId":"edge-room","content":"\\udc00"}]')
            await raw.send("43[1]")  # an ack nobody asked for
        await still_served(raw, bob, "after-flood", ack=901)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in warnings if "refused" in r.getMessage()]) == 1
    assert all(r.exc_info is None for r in caplog.records), "a traceback for client input"
    assert sum(len(r.getMessage()) for r in caplog.records) < 10_000


# -- long-polling -------------------------------------------------------------------------------


async def test_long_polling_refuses_the_same_and_closes_for_real() -> None:
    async with (
        inprocess_server(room_mode="mesh") as server,
        aiohttp.ClientSession() as http,
    ):
        poll = await RawPolling(http, server.url).open()
        await poll.connect({"userId": "poller"})
        await poll.post(
            event("disconnect"),
            event("nope", ack=4),
            '42["video:chat",{"roomId":"r","content":"\\ud83d"}]',
            *[event("video:toggle-audio", {"roomId": "r", "isMuted": True}) for _ in range(20)],
        )
        status, text = await poll.get()
        assert status == 200
        replies = text.split("\x1e")
        assert json.loads(replies[0][2:])[1]["event"] == "disconnect"
        assert json.loads(replies[1][3:])[0]["error"]["code"] == "INVALID_PAYLOAD"
        assert json.loads(replies[2][2:])[1]["message"].startswith("payload holds a lone")
        assert len(replies) == 23  # more than engine.io's 16-packet payload limit was read
        # A broken packet: the waiting GET gets the CLOSE, the session is gone.
        pending = asyncio.ensure_future(poll.get())
        await asyncio.sleep(0)
        await poll.post("4x")
        status, text = await asyncio.wait_for(pending, 2 * CLOSE_TIMEOUT_S + 1)
        assert (status, text) == (200, "1")
        assert (await poll.get())[0] == 400
        # A POST over the size limit closes its session too.
        big = await RawPolling(http, server.url).open()
        await big.connect({"userId": "big"})
        await big.post("4" + "x" * (server.application.settings.max_http_buffer_size + 10))
        assert (await big.get())[0] in (200, 400)
        assert (await big.get())[0] == 400
        _, health = await http_json("GET", server.url + "/health")
        assert health["connections"] == 0
        assert server.application.sockets.server.eio.sockets == {}
