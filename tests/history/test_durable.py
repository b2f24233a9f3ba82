"""Durable history through the server: what users see after a restart, a SIGKILL, a cleanup.

Each test runs on SQLite and PostgreSQL (`database_url`), the notification rule on memory too.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from devtools.poll import poll_until
from signaling.domain import ChatMessage, Notification, User
from signaling.history import open_history, utcnow
from signaling.history.base import iso
from signaling.store.memory import MemoryStore
from tests.clients import Client, connected, first_of, http_json
from tests.server import ROOT, inprocess_server, running_server

KEY = "history-key"
API = {"Authorization": f"Bearer {KEY}"}


async def notify(url: str, user_id: str, message: str) -> str:
    status, body = await http_json(
        "POST",
        f"{url}/api/notifications",
        headers=API,
        json={"userId": user_id, "type": "invite", "message": message, "data": {"m": message}},
    )
    assert status == 202, body
    note_id: str = body["id"]
    return note_id


async def all_messages(url: str, study_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """Every stored message of a study, walking the pages back with `before`."""
    found: list[dict[str, Any]] = []
    before = ""
    while True:
        query = f"?limit={limit}" + (f"&before={before}" if before else "")
        status, body = await http_json(
            "GET", f"{url}/api/studies/{study_id}/messages{query}", headers=API
        )
        assert status == 200, body
        found = body["messages"] + found
        if not body["hasMore"]:
            return found
        before = body["messages"][0]["id"]


async def room_history(url: str, room_id: str) -> list[dict[str, Any]]:
    status, body = await http_json("GET", f"{url}/api/rooms/{room_id}/history", headers=API)
    assert status == 200, body
    calls: list[dict[str, Any]] = body["calls"]
    return calls


async def test_notifications_are_delivered_once_online_or_on_the_next_connect(
    any_database_url: str, tmp_path: Path
) -> None:
    async with inprocess_server(
        database_url=any_database_url, data_dir=tmp_path, api_key=KEY
    ) as server:
        missed = await notify(server.url, "ann", "while you were away")
        # Two tabs connect at once: exactly one of them gets what ann missed.
        tabs = [Client(server.url, "ann"), Client(server.url, "ann")]
        await asyncio.gather(*(tab.connect() for tab in tabs))
        try:
            first = await first_of(tabs, "notification")
            winner, note = first
            assert note == {
                "id": missed,
                "type": "invite",
                "message": "while you were away",
                "data": {"m": "while you were away"},
            }
            # Pushed while online: every tab gets it at once, and it is the loser's first.
            live = await notify(server.url, "ann", "live")
            for tab in tabs:
                assert (await tab.next("notification"))["id"] == live
            loser = tabs[1 - winner]
            assert loser.pending("notification") == []

            # A tab opened later gets neither again.
            async with connected(server.url, "ann") as (late,):
                marker = await notify(server.url, "ann", "marker")
                assert (await late.next("notification"))["id"] == marker
                for tab in tabs:
                    assert (await tab.next("notification"))["id"] == marker

                # Read in one tab: the others are told; nobody else may mark it.
                assert await tabs[0].call("notification-read", {"notificationId": live}) == {
                    "ok": True
                }
                assert await tabs[1].next("notification-read") == {"notificationId": live}
                assert await late.next("notification-read") == {"notificationId": live}
            async with connected(server.url, "ben") as (ben,):
                refused = await ben.call("notification-read", {"notificationId": live})
                assert refused["error"]["code"] == "NOT_FOUND"
                assert ben.pending("notification") == []
        finally:
            for tab in tabs:
                await tab.close()


async def test_a_restarted_server_shows_the_same_chat_calls_and_missed_notifications(
    database_url: str, tmp_path: Path
) -> None:
    settings: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": tmp_path,
        "api_key": KEY,
        "room_mode": "auto",
        "mesh_max": 2,
    }
    study, room = f"study-{tmp_path.name}", f"room-{tmp_path.name}"
    async with (
        inprocess_server(**settings) as first,
        connected(first.url, "ann", "ben", "cat") as (ann, ben, cat),
    ):
        for client in (ann, ben):
            await client.call("join-study", {"studyId": study})
        sent = [
            (await ann.call("message", {"studyId": study, "content": f"hello {i}"}))["id"]
            for i in range(3)
        ]
        assert (await ben.call("read", {"messageId": sent[1]}))["ok"] is True
        for client in (ann, ben, cat):  # the third joiner switches the room to sfu
            await client.call("video:join-room", {"roomId": room})
        said = await ben.call("video:chat", {"roomId": room, "content": "in the call"})
        await cat.call("video:leave-room", {"roomId": room})  # back to mesh
        assert await ann.next_where("video:mode-changed", lambda m: m["mode"] == "mesh")
        missed = await notify(first.url, "dan", "you missed the call")

    async with inprocess_server(**settings) as second:
        async with connected(second.url, "dan") as (dan,):
            assert (await dan.next("notification"))["id"] == missed
        async with connected(second.url, "eve", "dan") as (eve, dan_again):
            joined = await eve.call("join-study", {"studyId": study})
            assert [m["id"] for m in joined["messages"]] == sent
            assert [m["id"] for m in (await eve.next("chat-history"))["messages"]] == sent
            # dan's notification was delivered once: a later socket does not get it again.
            marker = await notify(second.url, "dan", "marker")
            assert (await dan_again.next("notification"))["id"] == marker

        messages = await all_messages(second.url, study)
        assert [(m["content"], m["user"]["id"]) for m in messages] == [
            (f"hello {i}", "ann") for i in range(3)
        ]
        assert [m["readBy"] for m in messages] == [[], ["ben"], []]
        (call,) = await room_history(second.url, room)
        assert call["endedAt"] is not None and call["durationS"] >= 0
        assert [m["mode"] for m in call["modes"]] == ["mesh", "sfu", "mesh"]
        people = {p["userId"]: p for p in call["participants"]}
        assert set(people) == {"ann", "ben", "cat"}
        assert all(p["leftAt"] is not None for p in people.values())
        assert people["cat"]["durationS"] <= people["ann"]["durationS"]
        assert [(m["id"], m["content"]) for m in call["chat"]] == [(said["id"], "in the call")]


async def test_sigkill_right_after_the_acks_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    env: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path),
        "API_KEY": KEY,
        "ROOM_MODE": "mesh",
    }
    study, room = f"study-{tmp_path.name}", f"room-{tmp_path.name}"
    async with running_server(**env) as node:
        clients = [await Client(node.url, f"user{i}").connect() for i in range(4)]
        for client in clients:
            await client.call("join-study", {"studyId": study})
            await client.call("video:join-room", {"roomId": room})

        async def burst(client: Client) -> list[Any]:
            calls = [
                client.call(
                    "message", {"studyId": study, "content": f"{client.auth['userId']} {i}"}
                )
                for i in range(40)
            ]
            calls += [
                client.call("video:chat", {"roomId": room, "content": f"v{i}"}) for i in range(10)
            ]
            return list(await asyncio.gather(*calls))

        acks = [ack for acks in await asyncio.gather(*(burst(c) for c in clients)) for ack in acks]
        node.kill()  # the moment the last ack arrived: no shutdown, no flush
        await node.process.wait()
        for client in clients:
            await client.close()
    assert all(ack["ok"] for ack in acks), [a for a in acks if not a["ok"]][:3]
    acked = {ack["id"] for ack in acks}
    assert len(acked) == 4 * 50

    async with running_server(**env) as again:
        stored = {m["id"] for m in await all_messages(again.url, study)}
        (call,) = await room_history(again.url, room)
        in_call = {m["id"] for m in call["chat"]}
        assert acked == stored | in_call and len(stored) == 160 and len(in_call) == 40
        # The call died with the node: the restarted node ended it at its last event.
        assert call["endedAt"] is not None
        assert all(p["leftAt"] is not None for p in call["participants"])


async def test_migrate_command_and_default_sqlite_under_data_dir(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "signaling",
        "migrate",
        cwd=ROOT,
        env={**env, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert b"newest schema" in out
    assert (tmp_path / "data" / "studycall.db").is_file()
    # The server's default (no DATABASE_URL) is that same file: messages land there.
    async with (
        inprocess_server(database_url=None, data_dir=tmp_path / "data", api_key=KEY) as server,
        connected(server.url, "ann") as (ann,),
    ):
        await ann.call("join-study", {"studyId": "s"})
        sent = await ann.call("message", {"studyId": "s", "content": "kept"})
        status, health = await http_json("GET", f"{server.url}/health")
        assert status == 200 and health["database"] == "ok"
    reader = open_history(None, tmp_path / "data", MemoryStore("n"), chat_cap=10)
    await reader.start()
    try:
        assert [m.id for m in await reader.recent_messages("s", 10)] == [sent["id"]]
    finally:
        await reader.close()


async def test_cleanup_deletes_history_older_than_history_days(
    database_url: str, tmp_path: Path
) -> None:
    study, user = f"old-{tmp_path.name}", f"old-{tmp_path.name}"
    seeded = open_history(database_url, tmp_path, MemoryStore("n"), chat_cap=10)
    await seeded.start()
    long_ago = iso(utcnow().replace(year=2000))
    old = ChatMessage(studyId=study, content="old", user=User(id="a", name="A"), createdAt=long_ago)
    await seeded.add_message(old)
    recent = ChatMessage(studyId=study, content="recent", user=User(id="a", name="A"))
    await seeded.add_message(recent)
    await seeded.add_notification(
        Notification(userId=user, type="t", message="old", createdAt=long_ago), delivered=False
    )
    await seeded.close()
    async with inprocess_server(
        database_url=database_url,
        data_dir=tmp_path,
        api_key=KEY,
        history_days=30,
        history_cleanup_s=0.1,
    ) as server:

        async def cleaned() -> bool:
            return [m["id"] for m in await all_messages(server.url, study)] == [recent.id]

        await poll_until(cleaned, 10, interval=0.05, message="old messages were not cleaned up")
        async with connected(server.url, user) as (client,):
            marker = await notify(server.url, user, "marker")
            assert (await client.next("notification"))["id"] == marker  # the old one is gone


async def test_history_routes_validate_and_need_the_key(tmp_path: Path) -> None:
    async with inprocess_server(database_url="memory", api_key=KEY) as server:
        base = f"{server.url}/api/studies/s/messages"
        status, _ = await http_json("GET", base)
        assert status == 401
        for query in ("?limit=0", "?limit=201", "?limit=x"):
            status, body = await http_json("GET", base + query, headers=API)
            assert (status, body["error"]["code"]) == (400, "INVALID_PAYLOAD"), query
        status, body = await http_json("GET", base + "?before=nope", headers=API)
        assert (status, body["error"]["code"]) == (404, "NOT_FOUND")
        status, body = await http_json("GET", base, headers=API)
        assert (status, body) == (200, {"studyId": "s", "messages": [], "hasMore": False})
        status, body = await http_json("GET", f"{server.url}/api/rooms/r/history", headers=API)
        assert (status, body) == (200, {"roomId": "r", "calls": []})
        status, _ = await http_json("GET", f"{server.url}/api/rooms/r/history?limit=0", headers=API)
        assert status == 400


async def test_a_message_the_database_refuses_is_neither_acked_nor_relayed(
    database_url: str, tmp_path: Path
) -> None:
    """The ack follows the commit: when the commit fails the sender hears so, nobody else
    sees the message, and the next message goes through again."""
    from sqlalchemy import text

    from signaling.history.database import create_engine, resolve_url

    async with (
        inprocess_server(database_url=database_url, data_dir=tmp_path) as server,
        connected(server.url, "ann", "ben") as (ann, ben),
    ):
        study = f"refused-{tmp_path.name}"
        for client in (ann, ben):
            await client.call("join-study", {"studyId": study})
        url = resolve_url(database_url, tmp_path)
        assert url is not None
        engine = create_engine(url)
        rename = "ALTER TABLE messages RENAME TO {0}"
        try:
            async with engine.begin() as conn:
                await conn.execute(text(rename.format("messages_away")))
            refused = await ann.call("message", {"studyId": study, "content": "lost?"})
            assert refused["ok"] is False and refused["error"]["code"] == "INTERNAL"
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("ALTER TABLE messages_away RENAME TO messages"))
            await engine.dispose()
        kept = await ann.call("message", {"studyId": study, "content": "kept"})
        assert kept["ok"] is True
        assert (await ben.next("message"))["content"] == "kept"  # "lost?" never reached ben
