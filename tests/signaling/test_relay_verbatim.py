"""The relay passes `offer` / `answer` / `candidate` on as the sender built them, in both
dialects (docs/protocol.md section 2), after the size and type checks."""

from __future__ import annotations

from typing import Any

from tests.clients import connected
from tests.server import InProcess

OFFER: dict[str, Any] = {
    "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
    "type": "offer",
    "x-app": {"layers": [1, "two", None], "simulcast": True},
}
CANDIDATE: dict[str, Any] = {
    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 9 typ host generation 0",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
    "relayProtocol": "udp",
}


async def test_video_dialect_relays_verbatim(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        for client in (alice, bob):
            await client.call("video:join-room", {"roomId": "v"})
        relays: list[tuple[str, str, Any]] = [
            ("video:offer", "offer", OFFER),
            ("video:answer", "answer", {"type": "answer", "sdp": "v=0\r\n", "extra": 1}),
            ("video:offer", "offer", {"type": "rollback"}),  # no sdp is added
            ("video:ice-candidate", "candidate", CANDIDATE),
            ("video:ice-candidate", "candidate", ""),  # end of candidates, as sent
            ("video:ice-candidate", "candidate", None),
        ]
        for event, key, value in relays:
            await alice.emit(event, {"to": bob.sid, key: value})
            got = await bob.next(event)
            assert got == {"from": alice.sid, key: value}
            if isinstance(value, dict):
                assert list(got[key]) == list(value)  # even the key order
        # The checks still apply before anything is relayed.
        await alice.emit("video:offer", {"to": bob.sid, "offer": {"type": "bogus", "sdp": ""}})
        assert (await alice.next("error"))["code"] == "INVALID_PAYLOAD"
        await alice.emit("video:offer", {"to": bob.sid, "offer": {**OFFER, "sdp": "a" * 100_001}})
        assert (await alice.next("error"))["code"] == "TOO_LARGE"
        assert bob.pending("video:offer") == []


async def test_guide_dialect_relays_verbatim(server: InProcess) -> None:
    async with connected(server.url, "host", "guest") as (host, guest):
        await host.call("create-room", "g")
        await guest.call("join-room", "g")
        for event, key, value in (
            ("offer", "offer", OFFER),
            ("answer", "answer", {"type": "answer", "sdp": "v=0\r\n", "extra": [1]}),
            ("ice-candidate", "candidate", CANDIDATE),
        ):
            await guest.emit(event, {"target": host.sid, key: value})
            assert await host.next(event) == {"from": guest.sid, key: value}
