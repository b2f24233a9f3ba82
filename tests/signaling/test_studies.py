"""Studies, presence, study chat, notifications, task events: docs/protocol.md sections 4 and 7."""

from __future__ import annotations

from tests.clients import connected, http_json
from tests.server import InProcess, inprocess_server

API = {"Authorization": "Bearer test-key"}


async def test_presence_both_dialects(server: InProcess) -> None:
    async with connected(server.url, "ann", "ben") as (ann, ben):
        ack = await ann.call("presence:join-study", {"studyId": "s"})
        assert ack["ok"] is True and [u["id"] for u in ack["online"]] == ["ann"]
        await ben.call("join-study", {"studyId": "s"})
        for name in ("presence:user-online", "user-online"):
            assert await ann.next(name) == {
                "userId": "ben",
                "user": {"id": "ben", "name": "ben", "avatar": None},
            }
        assert await ann.next("member-joined") == {
            "studyId": "s",
            "userId": "ben",
            "userName": "ben",
        }

        # A second tab of Ben's is not a new arrival, and closing one tab keeps him online.
        async with connected(server.url, "ben") as (ben2,):
            await ben2.call("join-study", {"studyId": "s"})
            await ben2.call("leave-study", {"studyId": "s"})
        await ben.call("presence:leave-study", {"studyId": "s"})
        assert await ann.next("user-offline") == {"userId": "ben"}
        assert await ann.next("presence:user-offline") == {"userId": "ben"}
        assert await ann.next("member-left") == {"studyId": "s", "userId": "ben"}
        assert ann.pending("user-online") == [] and ann.pending("user-offline") == []


async def test_disconnect_takes_user_offline(server: InProcess) -> None:
    async with connected(server.url, "ann", "ben") as (ann, ben):
        await ann.call("join-study", {"studyId": "s"})
        await ben.call("join-study", {"studyId": "s"})
        await ben.close()
        assert await ann.next("user-offline") == {"userId": "ben"}


async def test_messages_typing_read_and_history(server: InProcess) -> None:
    async with connected(server.url, "ann", "ben") as (ann, ben):
        await ann.call("join-study", {"studyId": "s"})
        await ben.call("join-study", {"studyId": "s"})
        ack = await ann.call("message", {"studyId": "s", "content": "hi", "fileId": "f1"})
        assert ack["ok"] is True
        for c in (ann, ben):
            message = await c.next("message")
            assert message["id"] == ack["id"] and message["studyId"] == "s"
            assert message["content"] == "hi" and message["fileId"] == "f1"
            assert message["user"]["id"] == "ann" and message["createdAt"].endswith("Z")

        await ben.emit("typing", {"studyId": "s"})
        typing = await ann.next("typing")
        assert typing["userId"] == "ben" and typing["userName"] == "ben"
        assert ben.pending("typing") == []

        assert (await ben.call("read", {"messageId": ack["id"]}))["ok"] is True
        read = await ann.next("read")
        assert read["messageId"] == ack["id"] and read["userId"] == "ben"
        unknown = await ben.call("read", {"messageId": "nope"})
        assert unknown["error"]["code"] == "NOT_FOUND"

        async with connected(server.url, "cat") as (cat,):
            joined = await cat.call("join-study", {"studyId": "s"})
            assert [m["content"] for m in joined["messages"]] == ["hi"]
            history = await cat.next("chat-history")
            assert history["studyId"] == "s" and history["messages"][0]["id"] == ack["id"]


async def test_history_keeps_the_last_hundred() -> None:
    # A burst above the default rate limit, so this server allows more.
    async with inprocess_server(rate_burst=1000) as server, connected(server.url, "ann") as (ann,):
        await ann.call("join-study", {"studyId": "big"})
        for i in range(105):
            assert (await ann.call("message", {"studyId": "big", "content": f"m{i}"}))["ok"]
        async with connected(server.url, "ben") as (ben,):
            joined = await ben.call("join-study", {"studyId": "big"})
            contents = [m["content"] for m in joined["messages"]]
            assert len(contents) == 100 and contents[0] == "m5" and contents[-1] == "m104"


async def test_non_member_cannot_message(server: InProcess) -> None:
    async with connected(server.url, "ann") as (ann,):
        refused = await ann.call("message", {"studyId": "s", "content": "x"})
        assert refused["error"]["code"] == "NOT_IN_ROOM"


async def test_notifications_and_task_events_through_the_api(server: InProcess) -> None:
    async with connected(server.url, "ann", "ann", "ben") as (tab1, tab2, ben):
        await ben.call("join-study", {"studyId": "s"})
        status, body = await http_json(
            "POST",
            server.url + "/api/notifications",
            headers=API,
            json={
                "userId": "ann",
                "type": "invite",
                "message": "Join us",
                "studyId": "s",
                "data": {"k": 1},
            },
        )
        assert status == 202 and body["ok"] is True
        for tab in (tab1, tab2):
            note = await tab.next("notification")
            assert note == {
                "id": body["id"],
                "type": "invite",
                "message": "Join us",
                "studyId": "s",
                "data": {"k": 1},
            }
        assert ben.pending("notification") == []

        await tab1.call("notification-read", {"notificationId": body["id"]})
        assert await tab2.next("notification-read") == {"notificationId": body["id"]}

        status, _ = await http_json(
            "POST",
            server.url + "/api/studies/s/events",
            headers=API,
            json={
                "event": "task-updated",
                "data": {"taskId": "t", "status": "done", "updatedBy": "ann"},
            },
        )
        assert status == 202
        assert await ben.next("task-updated") == {
            "taskId": "t",
            "status": "done",
            "updatedBy": "ann",
        }
        await http_json(
            "POST",
            server.url + "/api/studies/s/events",
            headers=API,
            json={"event": "task-assigned", "data": {"taskId": "t", "assigneeId": "ben"}},
        )
        assert await ben.next("task-assigned") == {"taskId": "t", "assigneeId": "ben"}


async def test_api_needs_the_key(server: InProcess) -> None:
    status, body = await http_json(
        "POST", server.url + "/api/notifications", json={"userId": "a", "type": "t", "message": "m"}
    )
    assert status == 401 and body["error"]["code"] == "FORBIDDEN"
    status, _ = await http_json(
        "POST",
        server.url + "/api/notifications",
        headers={"Authorization": "Bearer wrong"},
        json={"userId": "a", "type": "t", "message": "m"},
    )
    assert status == 401
    status, body = await http_json(
        "POST",
        server.url + "/api/studies/s/events",
        headers=API,
        json={"event": "drop-tables", "data": {}},
    )
    assert status == 400 and body["error"]["code"] == "INVALID_PAYLOAD"
