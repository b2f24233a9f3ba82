"""Pairing (section 5) and the HTTP routes (section 7)."""

from __future__ import annotations

import asyncio

from tests.clients import connected, http_json
from tests.server import InProcess, inprocess_server

API = {"Authorization": "Bearer test-key"}


async def test_pairing_matches_longest_waiting(server: InProcess) -> None:
    async with connected(server.url, "a", "b", "c") as (a, b, c):
        assert await a.call("pair:request", {}) == {"status": "waiting"}
        assert await b.call("pair:request", {}) == {
            "status": "matched",
            "roomId": (await a.next("pair:matched"))["roomId"],
        }
        matched_b = await b.next("pair:matched")
        assert matched_b["peer"] == {
            "socketId": a.sid,
            "user": {"id": "a", "name": "a", "avatar": None},
        }
        assert matched_b["initiator"] is False
        # Paired clients signal with video: events in a mesh room of two.
        await a.emit("video:offer", {"to": b.sid, "offer": {"type": "offer", "sdp": "s"}})
        assert (await b.next("video:offer"))["from"] == a.sid
        assert (await c.call("pair:request", {})) == {"status": "waiting"}
        assert await c.call("pair:cancel", {}) == {"ok": True, "cancelled": True}
        await b.close()
        assert (await a.next("video:user-left"))["userId"] == "b"


async def test_pair_initiator_flags(server: InProcess) -> None:
    async with connected(server.url, "a", "b") as (a, b):
        await a.call("pair:request", {})
        await b.call("pair:request", {})
        flags = sorted(
            [
                (await a.next("pair:matched"))["initiator"],
                (await b.next("pair:matched"))["initiator"],
            ]
        )
        assert flags == [False, True]
        state = (await http_json("GET", server.url + "/rooms"))[1]
        (room,) = state["rooms"]
        assert room["mode"] == "mesh" and room["userCount"] == 2


async def test_health_metrics_rooms(server: InProcess) -> None:
    async with connected(server.url, "a", "b") as (a, b):
        await a.call("video:join-room", {"roomId": "r"})
        await b.call("video:join-room", {"roomId": "r"})
        status, health = await http_json("GET", server.url + "/health")
        assert status == 200 and health["status"] == "ok" and health["connections"] == 2
        assert health["auth"] == "open" and health["redis"] == "disabled"
        assert health["node"] and health["uptime"] >= 0 and health["timestamp"].endswith("Z")
        _, metrics = await http_json("GET", server.url + "/metrics")
        assert metrics["connections"] == 2 and metrics["rooms"] == 1
        assert metrics["roomDetails"] == [{"name": "video:r", "participants": 2, "mode": "mesh"}]
        assert metrics["memory"]["rss"] > 0
        _, rooms = await http_json("GET", server.url + "/rooms")
        (room,) = rooms["rooms"]
        assert {k: room[k] for k in ("id", "name", "userCount", "mode")} == {
            "id": "r",
            "name": "video:r",
            "userCount": 2,
            "mode": "mesh",
        }

        import aiohttp

        async with (
            aiohttp.ClientSession() as http,
            http.get(server.url + "/metrics/prometheus") as response,
        ):
            text = await response.text()
        assert response.status == 200
        assert 'signaling_events_total{event="video:join-room"}' in text
        assert "signaling_connections" in text


async def test_delete_room_closes_it(server: InProcess) -> None:
    async with connected(server.url, "a", "b") as (a, b):
        await a.call("video:join-room", {"roomId": "r"})
        await b.call("create-room", "r")
        status, _ = await http_json("DELETE", server.url + "/api/rooms/r", headers=API)
        assert status == 200
        assert await a.next("video:room-closed") == {"roomId": "r", "reason": "closed-by-server"}
        assert (await b.next("room-closed"))["reason"] == "closed-by-server"
        _, rooms = await http_json("GET", server.url + "/rooms")
        assert rooms["rooms"] == []
        status, body = await http_json("DELETE", server.url + "/api/rooms/r", headers=API)
        assert status == 404 and body["error"]["code"] == "NOT_FOUND"


async def test_api_disabled_without_key() -> None:
    async with inprocess_server(room_mode="mesh") as server:
        status, body = await http_json(
            "DELETE", server.url + "/api/rooms/x", headers={"Authorization": "Bearer "}
        )
        assert status == 403 and body["error"]["code"] == "FORBIDDEN"


async def test_cors_follows_allowed_origins() -> None:
    import aiohttp

    async with (
        inprocess_server(allowed_origins=["http://app.example"]) as server,
        aiohttp.ClientSession() as http,
    ):
        ok = {"Origin": "http://app.example"}
        async with http.get(server.url + "/health", headers=ok) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"
        bad = {"Origin": "http://evil.example"}
        async with http.get(server.url + "/health", headers=bad) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get(
            server.url + "/socket.io/?EIO=4&transport=polling", headers=bad
        ) as response:
            assert "Access-Control-Allow-Origin" not in response.headers
        async with http.get(
            server.url + "/socket.io/?EIO=4&transport=polling", headers=ok
        ) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "http://app.example"


async def test_sigterm_tells_clients_and_exits_promptly() -> None:
    """Graceful shutdown: clients hear `server:shutdown`, the process exits 0 within seconds."""
    from tests.server import running_server

    async with running_server(ROOM_MODE="mesh") as node, connected(node.url, "a") as (a,):
        await a.call("video:join-room", {"roomId": "r"})
        node.process.terminate()
        assert await a.next("server:shutdown") == {"reconnect": True}
        assert await asyncio.wait_for(node.process.wait(), 5) == 0
