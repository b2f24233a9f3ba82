"""Operations: what the server writes to its logs, and what it never writes."""

from __future__ import annotations

import json
import logging

import jwt
import pytest
import socketio

from signaling.logs import JsonFormatter
from tests.clients import Client
from tests.server import inprocess_server

SECRET = "log-test-secret-long-enough-for-hs256"


async def test_no_sdp_or_token_in_logs_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    token = jwt.encode({"sub": "ann", "name": "Ann"}, SECRET, algorithm="HS256")
    sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=UNIQUE-SDP-MARKER\r\n"
    async with inprocess_server(room_mode="mesh", jwt_secret=SECRET) as server:
        ann = await Client(server.url, "ann", token=token).connect()
        bob_token = jwt.encode({"sub": "bob"}, SECRET, algorithm="HS256")
        bob = await Client(server.url, "bob", token=bob_token).connect()
        forged = Client(server.url, "eve", token=token + "x")
        try:
            await ann.call("video:join-room", {"roomId": "r"})
            await bob.call("video:join-room", {"roomId": "r"})
            await ann.emit("video:offer", {"to": bob.sid, "offer": {"type": "offer", "sdp": sdp}})
            assert (await bob.next("video:offer"))["offer"]["sdp"] == sdp
            with pytest.raises(socketio.exceptions.ConnectionError):
                await forged.connect()
        finally:
            await ann.close()
            await bob.close()
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "UNIQUE-SDP-MARKER" not in text
    assert token not in text and bob_token not in text and SECRET not in text
    assert "AUTH IS OPEN" not in text  # JWT mode is not announced as open


def test_json_log_lines_are_objects() -> None:
    record = logging.LogRecord(
        "signaling", logging.WARNING, __file__, 1, "node %s gone", ("n1",), None
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning" and entry["msg"] == "node n1 gone"
    assert entry["logger"] == "signaling" and entry["ts"].endswith("+00:00")
