"""The guide's unprefixed dialect: docs/protocol.md section 3."""

from __future__ import annotations

from tests.clients import connected, http_json
from tests.server import InProcess


async def test_create_join_relay_and_leave(server: InProcess) -> None:
    async with connected(server.url, "host", "guest", "third") as (host, guest, third):
        assert await host.call("create-room", "g1") == {"success": True, "roomId": "g1"}
        again = await guest.call("create-room", "g1")
        assert again["success"] is False and again["error"] == "room already exists"
        joined = await guest.call("join-room", "g1")
        assert joined == {"success": True, "roomId": "g1", "existingUsers": [host.sid]}
        note = await host.next("user-joined")
        assert note["userId"] == guest.sid and note["timestamp"].endswith("Z")

        await guest.emit("offer", {"target": host.sid, "offer": {"type": "offer", "sdp": "x"}})
        assert await host.next("offer") == {
            "from": guest.sid,
            "offer": {"type": "offer", "sdp": "x"},
        }
        await host.emit("answer", {"target": guest.sid, "answer": {"type": "answer", "sdp": "y"}})
        assert (await guest.next("answer"))["from"] == host.sid
        await host.emit("ice-candidate", {"target": guest.sid, "candidate": {"candidate": "c"}})
        assert await guest.next("ice-candidate") == {
            "from": host.sid,
            "candidate": {"candidate": "c"},
        }

        await third.call("join-room", "g1")
        await third.emit("leave-room")
        left = await host.next_where("user-left", lambda e: e["userId"] == third.sid)
        assert left["timestamp"].endswith("Z")


async def test_guide_rooms_are_apart_from_video_rooms(server: InProcess) -> None:
    async with connected(server.url, "a", "b") as (a, b):
        await a.call("create-room", "same")
        await b.call("video:join-room", {"roomId": "same"})
        state = await b.next("video:room-state")
        assert state["participants"] == []
        _, rooms = await http_json("GET", server.url + "/rooms")
        kinds = sorted((r["name"], r["kind"], r["userCount"]) for r in rooms["rooms"])
        assert kinds == [("same", "guide", 1), ("video:same", "video", 1)]


async def test_host_leaving_closes_room(server: InProcess) -> None:
    async with connected(server.url, "host", "guest") as (host, guest):
        await host.call("create-room", "g2")
        await guest.call("join-room", "g2")
        await host.close()
        closed = await guest.next("room-closed")
        assert closed["reason"] == "host-left" and closed["message"]
        assert closed["timestamp"].endswith("Z")
        missing = await guest.call("join-room", "g2")
        assert missing["success"] is False and missing["error"] == "room does not exist"


async def test_bad_room_ids_and_oversize_offer(server: InProcess) -> None:
    async with connected(server.url, "host", "guest") as (host, guest):
        for bad in ("", "x" * 101, 42, None):
            ack = await host.call("create-room", bad)
            assert ack["success"] is False and ack["code"] == "INVALID_PAYLOAD"
        await host.call("create-room", "g3")
        await guest.call("join-room", "g3")
        huge = {"type": "offer", "sdp": "a" * 100_001}
        await guest.emit("offer", {"target": host.sid, "offer": huge})
        error = await guest.next("error")
        assert error["type"] == "offer-error" and error["code"] == "TOO_LARGE"
        await guest.emit("ice-candidate", {"target": "nobody", "candidate": {}})
        assert (await guest.next("error"))["type"] == "ice-error"
        await guest.emit("offer", {"target": host.sid, "offer": {"type": "offer", "sdp": "ok"}})
        assert (await host.next("offer"))["offer"]["sdp"] == "ok"
