"""Two server processes on one Redis behave as one server to clients split across them.

Each test starts its own two nodes (own key prefix) on the session's throwaway Redis, connects
real python-socketio clients to both and checks what the clients see.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.multinode.cluster import clients, node, rooms_of, two_nodes
from tests.server import ServerProcess

pytestmark = pytest.mark.redis

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ANSWER = {"type": "answer", "sdp": OFFER["sdp"]}
CANDIDATE = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}


async def test_video_room_spans_two_nodes(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    room = f"room-{uuid.uuid4().hex[:6]}"
    async with clients(("alice", a.url), ("bob", b.url), ("carol", a.url)) as (alice, bob, carol):
        ack = await alice.call("video:join-room", {"roomId": room})
        assert ack["ok"] is True and ack["participants"] == []
        await alice.next("video:room-state")

        # Bob joins from the other node: both see each other.
        await bob.call("video:join-room", {"roomId": room})
        state = await bob.next("video:room-state")
        assert [(p["socketId"], p["userId"]) for p in state["participants"]] == [
            (alice.sid, "alice")
        ]
        joined = await alice.next("video:user-joined")
        assert (joined["socketId"], joined["userId"]) == (bob.sid, "bob")
        assert joined["user"]["name"] == "Bob"

        # The mesh relay crosses nodes in both directions, each message exactly once
        # (a duplicate of the first offer would arrive in place of the second).
        renegotiation = {**OFFER, "sdp": OFFER["sdp"] + "a=renegotiation\r\n"}
        for offer in (OFFER, renegotiation):
            await bob.sio.emit("video:offer", {"to": alice.sid, "offer": offer})
        for offer in (OFFER, renegotiation):
            assert await alice.next("video:offer") == {"from": bob.sid, "offer": offer}
        await alice.sio.emit("video:answer", {"to": bob.sid, "answer": ANSWER})
        assert await bob.next("video:answer") == {"from": alice.sid, "answer": ANSWER}
        for candidate in (CANDIDATE, None):
            await alice.sio.emit("video:ice-candidate", {"to": bob.sid, "candidate": candidate})
            got = await bob.next("video:ice-candidate")
            assert got == {"from": alice.sid, "candidate": candidate}

        # Media flags and chat set on node B are what node A reports to a newcomer.
        await bob.call("video:toggle-audio", {"roomId": room, "isMuted": True})
        flags = await alice.next("video:media-state-changed")
        assert (flags["socketId"], flags["isMuted"], flags["isVideoOff"]) == (bob.sid, True, False)
        chat_ack = await bob.call("video:chat", {"roomId": room, "content": "hello from b"})
        assert chat_ack["ok"] is True
        message = await alice.next("video:chat")
        assert (message["id"], message["content"]) == (chat_ack["id"], "hello from b")

        await carol.call("video:join-room", {"roomId": room})
        state = await carol.next("video:room-state")
        seen = {p["userId"]: p for p in state["participants"]}
        assert set(seen) == {"alice", "bob"}
        assert seen["bob"]["isMuted"] is True and seen["alice"]["isMuted"] is False
        assert [m["content"] for m in state["chat"]] == ["hello from b"]
        assert (await bob.next("video:user-joined"))["userId"] == "carol"

        # ... and the other way round: a flag set on A, seen by a newcomer on B.
        await alice.call("video:toggle-video", {"roomId": room, "isVideoOff": True})
        assert (await bob.next("video:media-state-changed"))["isVideoOff"] is True
        async with clients(("dora", b.url)) as (dora,):
            await dora.call("video:join-room", {"roomId": room})
            state = await dora.next("video:room-state")
            seen = {p["userId"]: p for p in state["participants"]}
            assert set(seen) == {"alice", "bob", "carol"}
            assert (seen["alice"]["isVideoOff"], seen["bob"]["isMuted"]) == (True, True)
            assert [m["id"] for m in state["chat"]] == [chat_ack["id"]]
            # The listing is the same whichever node answers.
            assert (await rooms_of(a))[room] == 4
            assert await rooms_of(a) == await rooms_of(b)
        for other in (alice, bob, carol):
            assert (await other.next("video:user-left"))["userId"] == "dora"

        # A relay to a socket outside the room is refused, even one on the other node.
        async with clients(("mallory", b.url)) as (mallory,):
            await mallory.sio.emit("video:offer", {"to": alice.sid, "offer": OFFER})
            assert (await mallory.next("error"))["code"] == "NOT_IN_ROOM"

        # Leaving on node B is seen on node A; a disconnect counts as leaving.
        await bob.call("video:leave-room", {"roomId": room})
        for other in (alice, carol):
            assert (await other.next("video:user-left"))["socketId"] == bob.sid
        carol_sid = carol.sid
        await carol.sio.disconnect()
        left = await alice.next("video:user-left")
        assert (left["socketId"], left["userId"]) == (carol_sid, "carol")
        assert (await rooms_of(b))[room] == 1
        assert alice.pending("video:offer") == []


async def test_pairing_matches_clients_on_different_nodes(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    async with clients(("xavier", a.url), ("yvonne", b.url)) as (xavier, yvonne):
        assert await xavier.call("pair:request", {}) == {"status": "waiting"}
        await yvonne.call("pair:request", {})
        mx = await xavier.next("pair:matched")
        my = await yvonne.next("pair:matched")
        assert mx["roomId"] == my["roomId"]
        assert (mx["peer"]["socketId"], my["peer"]["socketId"]) == (yvonne.sid, xavier.sid)
        assert sorted([mx["initiator"], my["initiator"]]) == [False, True]
        # They are in one room: the relay works and leaving is seen across nodes.
        await xavier.sio.emit("video:offer", {"to": yvonne.sid, "offer": OFFER})
        assert (await yvonne.next("video:offer"))["from"] == xavier.sid
        await yvonne.call("video:leave-room", {"roomId": mx["roomId"]})
        assert (await xavier.next("video:user-left"))["socketId"] == yvonne.sid


async def test_guide_rooms_and_studies_span_two_nodes(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    room, study = f"guide-{uuid.uuid4().hex[:6]}", f"study-{uuid.uuid4().hex[:6]}"
    async with clients(("host", a.url), ("guest", b.url)) as (host, guest):
        # Guide dialect: created on A, joined from B, host leaving closes it on B.
        assert await host.call("create-room", room) == {"success": True, "roomId": room}
        ack = await guest.call("join-room", room)
        assert (ack["success"], ack["existingUsers"]) == (True, [host.sid])
        assert (await host.next("user-joined"))["userId"] == guest.sid
        await guest.sio.emit("offer", {"target": host.sid, "offer": OFFER})
        assert await host.next("offer") == {"from": guest.sid, "offer": OFFER}
        assert (await rooms_of(b))[room] == 2
        await host.emit("leave-room")
        assert (await guest.next("room-closed"))["reason"] == "host-left"
        assert room not in await rooms_of(a)

        # Studies: presence and chat cross nodes; history is served by either node.
        await host.call("presence:join-study", {"studyId": study})
        await guest.call("presence:join-study", {"studyId": study})
        online = await host.next("presence:user-online")
        assert online["userId"] == "guest"
        sent = await guest.call("message", {"studyId": study, "content": "from b"})
        message = await host.next("message")
        assert (message["id"], message["content"]) == (sent["id"], "from b")
        await host.call("presence:leave-study", {"studyId": study})
        assert (await guest.next("presence:user-offline"))["userId"] == "host"
        rejoin = await host.call("join-study", {"studyId": study})
        assert [m["content"] for m in rejoin["messages"]] == ["from b"]


async def test_killed_node_leaves_no_ghosts(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    """SIGKILL node B: node A removes B's participants, guide hosts, presence and queue."""
    a, b = nodes
    room, guide, study = (f"{kind}-{uuid.uuid4().hex[:6]}" for kind in ("room", "guide", "study"))
    async with clients(
        ("alice", a.url), ("hank", a.url), ("bob", b.url), ("bert", b.url), ("dave", b.url)
    ) as (alice, hank, bob, bert, dave):
        for client in (alice, bob, bert):
            await client.call("video:join-room", {"roomId": room})
        for client in (alice, bob):
            await client.call("presence:join-study", {"studyId": study})
        await bert.call("create-room", guide)
        await hank.call("join-room", guide)
        assert await dave.call("pair:request", {}) == {"status": "waiting"}
        assert (await rooms_of(a))[room] == 3
        gone = {bob.sid: "bob", bert.sid: "bert"}

        b.kill()
        killed_at = time.monotonic()
        left: dict[str, str] = {}
        while len(left) < len(gone):
            remaining = 10.0 - (time.monotonic() - killed_at)
            event = await alice.next("video:user-left", timeout=remaining)
            left[event["socketId"]] = event["userId"]
        elapsed = time.monotonic() - killed_at
        assert left == gone
        remaining = 10.0 - (time.monotonic() - killed_at)
        assert (await alice.next("presence:user-offline", timeout=remaining))["userId"] == "bob"
        assert (await hank.next("room-closed", timeout=remaining))["reason"] == "host-left"
        listed = await rooms_of(a)
        assert listed.get(room) == 1 and guide not in listed
        # The dead node's waiting client is not matched with anyone.
        async with clients(("erin", a.url)) as (erin,):
            assert await erin.call("pair:request", {}) == {"status": "waiting"}
        print(f"dead node's participants removed {elapsed:.2f} s after SIGKILL")


async def test_node_restarted_with_the_same_id_leaves_no_ghosts(redis_url: str) -> None:
    """SIGKILL node B and restart it as B before its heartbeat expires (fixed NODE_ID)."""
    prefix = f"mn-{uuid.uuid4().hex[:8]}"
    # A long TTL makes sure B is back before anyone could have seen it dead.
    async with two_nodes(redis_url, prefix, ttl_s=30) as (a, b):
        room = "room"
        async with clients(("alice", a.url), ("bob", b.url)) as (alice, bob):
            for client in (alice, bob):
                await client.call("video:join-room", {"roomId": room})
            b.kill()
            async with node(redis_url, prefix, "b", ttl_s=30):
                left = await alice.next("video:user-left", timeout=5)
                assert left["userId"] == "bob"
                assert (await rooms_of(a)).get(room) == 1
