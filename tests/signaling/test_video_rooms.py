"""Video rooms through python-socketio's AsyncClient: docs/protocol.md section 2 (mesh)."""

from __future__ import annotations

from typing import Any

from tests.clients import Client, connected
from tests.server import InProcess

OFFER = {"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 10}
ANSWER = {"type": "answer", "sdp": "v=0\r\n"}


async def test_join_room_state_and_user_joined(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        ack = await alice.call("video:join-room", {"roomId": "r1"})
        assert ack == {"ok": True, "mode": "mesh", "self": alice.sid, "participants": []}
        state = await alice.next("video:room-state")
        assert state["roomId"] == "r1" and state["self"] == alice.sid
        assert state["participants"] == [] and state["chat"] == []
        assert state["mode"] == "mesh" and state["iceServers"] == []

        await bob.emit("video:join-room", {"roomId": "r1", "studyId": "s1"})
        state = await bob.next("video:room-state")
        (other,) = state["participants"]
        assert other["socketId"] == alice.sid and other["userId"] == "alice"
        assert other["user"] == {"id": "alice", "name": "alice", "avatar": None}
        assert other["isMuted"] is False and other["isVideoOff"] is False
        assert other["isSharingScreen"] is False and other["joinedAt"].endswith("Z")
        joined = await alice.next("video:user-joined")
        assert joined == {
            "socketId": bob.sid,
            "userId": "bob",
            "user": {"id": "bob", "name": "bob", "avatar": None},
        }


async def test_offer_answer_candidate_relay(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        await alice.call("video:join-room", {"roomId": "r"})
        await bob.call("video:join-room", {"roomId": "r"})
        await bob.emit("video:offer", {"to": alice.sid, "offer": OFFER})
        assert await alice.next("video:offer") == {"from": bob.sid, "offer": OFFER}
        await alice.emit("video:answer", {"to": bob.sid, "answer": ANSWER})
        assert await bob.next("video:answer") == {"from": alice.sid, "answer": ANSWER}
        candidate = {
            "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        }
        await alice.emit("video:ice-candidate", {"to": bob.sid, "candidate": candidate})
        assert await bob.next("video:ice-candidate") == {"from": alice.sid, "candidate": candidate}
        await alice.emit("video:ice-candidate", {"to": bob.sid, "candidate": None})
        assert await bob.next("video:ice-candidate") == {"from": alice.sid, "candidate": None}


async def test_relay_refused_outside_room(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob", "eve") as (alice, bob, eve):
        await alice.call("video:join-room", {"roomId": "r"})
        await bob.call("video:join-room", {"roomId": "r"})
        await eve.call("video:join-room", {"roomId": "other"})
        # Eve is in another room: refused, and Alice never sees it.
        await eve.emit("video:offer", {"to": alice.sid, "offer": OFFER})
        error = await eve.next("error")
        assert error == {
            "code": "NOT_FOUND",
            "message": "no such participant in your room",
            "event": "video:offer",
        }
        # Not in any room at all.
        await eve.emit("video:leave-room", {"roomId": "other"})
        await eve.emit("video:answer", {"to": alice.sid, "answer": ANSWER})
        assert (await eve.next("error"))["code"] == "NOT_IN_ROOM"
        # The next offer Alice receives is Bob's: nothing of Eve's got through.
        await bob.emit("video:offer", {"to": alice.sid, "offer": OFFER})
        assert (await alice.next("video:offer"))["from"] == bob.sid
        assert alice.pending("video:offer") == []


async def test_leave_and_disconnect_emit_user_left(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob", "carol") as (alice, bob, carol):
        for c in (alice, bob, carol):
            await c.call("video:join-room", {"roomId": "r"})
        await bob.emit("video:leave-room", {"roomId": "r"})
        assert await alice.next_where("video:user-left", lambda e: e["socketId"] == bob.sid) == {
            "socketId": bob.sid,
            "userId": "bob",
        }
        carol_sid = carol.sid
        await carol.close()
        left = await alice.next_where("video:user-left", lambda e: e["socketId"] == carol_sid)
        assert left["userId"] == "carol"
        await alice.call("video:leave-room", {"roomId": "r"})
        async with connected(server.url, "dave") as (dave,):
            await dave.call("video:join-room", {"roomId": "r"})
            assert (await dave.next("video:room-state"))["participants"] == []


async def test_joining_second_room_leaves_first(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        await alice.call("video:join-room", {"roomId": "a"})
        await bob.call("video:join-room", {"roomId": "a"})
        await bob.call("video:join-room", {"roomId": "b"})
        left = await alice.next("video:user-left")
        assert left == {"socketId": bob.sid, "userId": "bob"}


async def test_media_state_flags(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        await alice.call("video:join-room", {"roomId": "r"})
        await bob.call("video:join-room", {"roomId": "r"})
        await bob.emit("video:toggle-audio", {"roomId": "r", "isMuted": True})
        expected: dict[str, Any] = {
            "socketId": bob.sid,
            "userId": "bob",
            "isMuted": True,
            "isVideoOff": False,
            "isSharingScreen": False,
        }
        assert await alice.next("video:media-state-changed") == expected
        await bob.emit("video:toggle-video", {"roomId": "r", "isVideoOff": True})
        expected["isVideoOff"] = True
        assert await alice.next("video:media-state-changed") == expected
        await bob.emit("video:start-screen-share", {"roomId": "r"})
        expected["isSharingScreen"] = True
        assert await alice.next("video:media-state-changed") == expected
        await bob.emit("video:stop-screen-share", {"roomId": "r"})
        expected["isSharingScreen"] = False
        assert await alice.next("video:media-state-changed") == expected
        # A newcomer sees the flags in room-state.
        async with connected(server.url, "carol") as (carol,):
            await carol.call("video:join-room", {"roomId": "r"})
            state = await carol.next("video:room-state")
            flags = {p["userId"]: (p["isMuted"], p["isVideoOff"]) for p in state["participants"]}
            assert flags == {"alice": (False, False), "bob": (True, True)}


async def test_chat_with_history(server: InProcess) -> None:
    async with connected(server.url, "alice", "bob") as (alice, bob):
        await alice.call("video:join-room", {"roomId": "r"})
        await bob.call("video:join-room", {"roomId": "r"})
        ack = await alice.call("video:chat", {"roomId": "r", "content": "hello"})
        assert ack["ok"] is True and isinstance(ack["id"], str)
        for c in (alice, bob):
            message = await c.next("video:chat")
            assert message["id"] == ack["id"] and message["content"] == "hello"
            assert message["roomId"] == "r" and message["user"]["id"] == "alice"
            assert message["createdAt"].endswith("Z")
        async with connected(server.url, "late") as (late,):
            await late.call("video:join-room", {"roomId": "r"})
            state = await late.next("video:room-state")
            assert [m["content"] for m in state["chat"]] == ["hello"]
        refused = await bob.call("video:chat", {"roomId": "elsewhere", "content": "x"})
        assert refused == {
            "ok": False,
            "error": {"code": "NOT_IN_ROOM", "message": "not in this room"},
        }


async def test_room_full(server: InProcess) -> None:
    limit = server.application.settings.max_participants
    clients = [await Client(server.url, f"u{i}").connect() for i in range(limit + 1)]
    try:
        for c in clients[:limit]:
            assert (await c.call("video:join-room", {"roomId": "full"}))["ok"] is True
        refused = await clients[-1].call("video:join-room", {"roomId": "full"})
        assert refused["ok"] is False and refused["error"]["code"] == "ROOM_FULL"
    finally:
        for c in clients:
            await c.close()
