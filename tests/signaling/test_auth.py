"""Auth (docs/protocol.md section 1): open mode, HS256 JWTs, the verify URL, the membership URL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from aiohttp import web

from tests.clients import TIMEOUT, Client, connected
from tests.server import inprocess_server

# 64 bytes: long enough for HS512 too, so PyJWT makes the wrong-algorithm tokens without warnings.
SECRET = "s" * 64
OTHER = "o" * 64


def token(
    sub: str | None = "alice", *, key: str = SECRET, algorithm: str = "HS256", **claims: Any
) -> str:
    body: dict[str, Any] = {
        "name": "Alice Liddell",
        "avatar": "https://a.example/a.png",
        "exp": int(time.time()) + 300,
        **claims,
    }
    if sub is not None:
        body["sub"] = sub
    return jwt.encode(body, key, algorithm=algorithm)


def unsigned(sub: str = "alice") -> str:
    """A token with `alg: none` (PyJWT can make one, the server must not accept it)."""
    claims = {"sub": sub, "exp": int(time.time()) + 300}
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


async def refusal(url: str, auth: Any) -> str:
    """Connects with `auth` and returns the `connect_error` message; fails if it connects."""
    sio = socketio.AsyncClient(reconnection=False)
    messages: list[Any] = []

    @sio.on("connect_error")  # type: ignore[untyped-decorator]
    async def on_error(data: Any) -> None:
        messages.append(data)

    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio.connect(url, auth=auth, transports=["websocket"], wait_timeout=TIMEOUT)
    finally:
        await sio.disconnect()
    assert len(messages) == 1, messages
    data = messages[0]
    return str(data["message"] if isinstance(data, dict) else data)


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as response:
        body: dict[str, Any] = await response.json()
        return body


@asynccontextmanager
async def app_server(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> AsyncIterator[str]:
    """A stand-in for the application's backend (verify or check-member) on port 0."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


# -- open mode ---------------------------------------------------------------------------------


async def test_open_mode_name_from_auth_and_health() -> None:
    async with inprocess_server(room_mode="mesh") as server:
        assert (await health(server.url))["auth"] == "open"
        async with (
            connected(server.url, "alice", name="Alice A.") as (alice,),
            connected(server.url, "bob") as (bob,),
        ):
            await alice.call("video:join-room", {"roomId": "r"})
            await bob.call("video:join-room", {"roomId": "r"})
            joined = await alice.next("video:user-joined")
            assert joined["user"] == {"id": "bob", "name": "bob", "avatar": None}
            state = await bob.next("video:room-state")
            assert state["participants"][0]["user"] == {
                "id": "alice",
                "name": "Alice A.",
                "avatar": None,
            }
        # Auth that names no user is a misconfigured client, not an anonymous one.
        assert await refusal(server.url, {"name": "no id"}) == "Authentication required"
        assert await refusal(server.url, {"userId": ""}) == "Authentication required"


async def test_open_mode_without_auth_is_an_anonymous_guest() -> None:
    async with (
        inprocess_server(room_mode="mesh") as server,
        connected(server.url, "alice") as (alice,),
    ):
        guest = await Client(server.url, None).connect()
        try:
            await alice.call("video:join-room", {"roomId": "r"})
            ack = await guest.call("video:join-room", {"roomId": "r"})
            assert ack["ok"] is True
            joined = await alice.next("video:user-joined")
            assert joined["userId"] == f"guest:{guest.sid}"
            assert joined["user"] == {
                "id": f"guest:{guest.sid}",
                "name": f"Guest {guest.sid[:4]}",
                "avatar": None,
            }
        finally:
            await guest.close()


@pytest.mark.parametrize("mode", ["jwt", "verify-url"])
async def test_no_auth_is_refused_when_auth_is_configured(mode: str) -> None:
    settings = (
        {"jwt_secret": SECRET} if mode == "jwt" else {"auth_verify_url": "http://127.0.0.1:9/"}
    )
    async with inprocess_server(room_mode="mesh", **settings) as server:
        assert (await health(server.url))["auth"] == mode
        assert await refusal(server.url, None) == "Authentication required"
        assert await refusal(server.url, {}) == "Authentication required"


# -- JWT ---------------------------------------------------------------------------------------


@pytest.fixture
async def jwt_url() -> AsyncIterator[str]:
    async with inprocess_server(room_mode="mesh", jwt_secret=SECRET) as server:
        yield server.url


async def test_jwt_valid_token_carries_name_and_avatar(jwt_url: str) -> None:
    assert (await health(jwt_url))["auth"] == "jwt"
    alice = await Client(jwt_url, "alice", token=token(), name="ignored").connect()
    bob = await Client(jwt_url, "bob", token=token("bob", name="Bob", avatar=None)).connect()
    try:
        await bob.call("video:join-room", {"roomId": "r"})
        await alice.call("video:join-room", {"roomId": "r"})
        joined = await bob.next("video:user-joined")
        assert joined == {
            "socketId": alice.sid,
            "userId": "alice",
            "user": {"id": "alice", "name": "Alice Liddell", "avatar": "https://a.example/a.png"},
        }
    finally:
        await alice.close()
        await bob.close()


@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({"userId": "alice", "token": token(key=OTHER)}, id="forged-signature"),
        pytest.param({"userId": "alice", "token": token()[:-2] + "xx"}, id="tampered"),
        pytest.param({"userId": "alice", "token": unsigned()}, id="alg-none"),
        pytest.param(
            {"userId": "alice", "token": token(key=OTHER, algorithm="HS512")}, id="hs512-other-key"
        ),
        pytest.param(
            {"userId": "alice", "token": token(key=SECRET, algorithm="HS512")}, id="hs512-same-key"
        ),
        pytest.param({"userId": "alice", "token": token(exp=int(time.time()) - 60)}, id="expired"),
        pytest.param({"userId": "alice", "token": token("mallory")}, id="sub-mismatch"),
        pytest.param({"userId": "alice", "token": token(None)}, id="no-sub"),
        pytest.param({"userId": "alice"}, id="missing-token"),
        pytest.param({"userId": "alice", "token": ""}, id="empty-token"),
        pytest.param({"userId": "alice", "token": 42}, id="token-not-a-string"),
        pytest.param({"userId": "alice", "token": "not.a.jwt"}, id="garbage"),
        pytest.param({"userId": "alice", "token": token(rooms="r1")}, id="rooms-not-a-list"),
    ],
)
async def test_jwt_refused(jwt_url: str, auth: dict[str, Any]) -> None:
    assert await refusal(jwt_url, auth) == "Authentication failed"


async def test_jwt_missing_user_id(jwt_url: str) -> None:
    assert await refusal(jwt_url, {"token": token()}) == "Authentication required"


async def test_jwt_rooms_claim(jwt_url: str) -> None:
    limited = await Client(jwt_url, "alice", token=token(rooms=["r1", "g1"])).connect()
    host = await Client(jwt_url, "hal", token=token("hal", rooms=["r1"], role="host")).connect()
    try:
        assert (await limited.call("video:join-room", {"roomId": "r1"}))["ok"] is True
        refused = await limited.call("video:join-room", {"roomId": "r2"})
        assert refused["ok"] is False and refused["error"]["code"] == "FORBIDDEN"
        await limited.emit("video:join-room", {"roomId": "r3"})
        error = await limited.next("error")
        assert error["code"] == "FORBIDDEN" and error["event"] == "video:join-room"
        # The refused join did not take Alice out of r1.
        ack = await limited.call("video:chat", {"roomId": "r1", "content": "still here"})
        assert ack["ok"] is True
        # Guide rooms follow the same claim.
        assert (await limited.call("create-room", "g1"))["success"] is True
        guide = await limited.call("create-room", "g2")
        assert guide["success"] is False and guide["error"]
        # A host ignores the rooms claim.
        assert (await host.call("video:join-room", {"roomId": "r2"}))["ok"] is True
        assert (await host.call("join-room", "g1"))["success"] is True
    finally:
        await limited.close()
        await host.close()


# -- verify URL --------------------------------------------------------------------------------

USERS = {"good-alice": ("alice", "Alice V.", "https://v.example/alice.png")}


async def verify(request: web.Request) -> web.Response:
    """The documents' /api/auth/verify: Bearer token -> { user }, else 401."""
    header = request.headers.get("Authorization", "")
    body = await request.json()
    known = USERS.get(header.removeprefix("Bearer "))
    if not header.startswith("Bearer ") or known is None or body.get("userId") != known[0]:
        return web.json_response({"error": "unauthorized"}, status=401)
    user_id, name, avatar = known
    return web.json_response({"user": {"id": user_id, "name": name, "avatar": avatar}})


async def test_verify_url_accepts_and_refuses() -> None:
    async with (
        app_server("/api/auth/verify", verify) as verify_url,
        inprocess_server(room_mode="mesh", auth_verify_url=verify_url) as server,
    ):
        assert (await health(server.url))["auth"] == "verify-url"
        alice = await Client(server.url, "alice", token="good-alice").connect()
        try:
            ack = await alice.call("video:join-room", {"roomId": "v"})
            assert ack["ok"] is True
            async with connected(server.url, "alice", token="good-alice") as (tab,):
                await tab.call("video:join-room", {"roomId": "v"})
                joined = await alice.next("video:user-joined")
                assert joined["user"] == {
                    "id": "alice",
                    "name": "Alice V.",
                    "avatar": "https://v.example/alice.png",
                }
        finally:
            await alice.close()
        for auth in (
            {"userId": "alice", "token": "bad"},
            {"userId": "bob", "token": "good-alice"},  # the backend says the token is not Bob's
            {"userId": "alice"},
        ):
            assert await refusal(server.url, auth) == "Authentication failed", auth
        assert await refusal(server.url, {"token": "good-alice"}) == "Authentication required"


# -- membership URL ----------------------------------------------------------------------------

MEMBERS = {("alice", "room", "team"), ("alice", "study", "s1")}


async def check_member(request: web.Request) -> web.Response:
    """The documents' check-member: 200 for members, 403 otherwise."""
    body = await request.json()
    user = body.get("userId")
    if "roomId" in body and (user, "room", body["roomId"]) in MEMBERS:
        return web.json_response({"member": True})
    if "studyId" in body and "roomId" not in body and (user, "study", body["studyId"]) in MEMBERS:
        return web.json_response({"member": True})
    return web.json_response({"member": False}, status=403)


async def test_membership_url_guards_rooms_and_studies() -> None:
    async with (
        app_server("/check-member", check_member) as member_url,
        inprocess_server(room_mode="mesh", membership_url=member_url) as server,
        connected(server.url, "alice", "bob") as (alice, bob),
    ):
        assert (await alice.call("video:join-room", {"roomId": "team"}))["ok"] is True
        refused = await bob.call("video:join-room", {"roomId": "team"})
        assert refused == {
            "ok": False,
            "error": {"code": "FORBIDDEN", "message": refused["error"]["message"]},
        }
        await bob.emit("video:join-room", {"roomId": "team"})
        assert (await bob.next("error"))["code"] == "FORBIDDEN"
        assert (await alice.call("join-study", {"studyId": "s1"}))["ok"] is True
        for event in ("join-study", "presence:join-study"):
            refused = await bob.call(event, {"studyId": "s1"})
            assert refused["ok"] is False and refused["error"]["code"] == "FORBIDDEN", event
        refused = await alice.call("join-study", {"studyId": "s2"})
        assert refused["ok"] is False and refused["error"]["code"] == "FORBIDDEN"
        # Bob never got in: Alice heard nothing of him, and his chat is refused.
        assert alice.pending("video:user-joined") == [] and alice.pending("member-joined") == []
        refused = await bob.call("message", {"studyId": "s1", "content": "let me in"})
        assert refused["error"]["code"] == "NOT_IN_ROOM"
        assert (await bob.call("create-room", "team"))["success"] is False
