"""Two nodes on one PostgreSQL and one Redis keep one history: chat, notifications, calls."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.clients import Client, first_of, http_json
from tests.history.test_durable import KEY, all_messages, notify, room_history
from tests.multinode.cluster import clients, two_nodes

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


async def test_two_nodes_on_one_postgresql_keep_one_history(
    redis_url: str, postgres_url: str
) -> None:
    prefix = f"hist-{uuid.uuid4().hex[:8]}"
    study, room = f"study-{prefix}", f"room-{prefix}"
    async with two_nodes(redis_url, prefix, DATABASE_URL=postgres_url, API_KEY=KEY) as (a, b):
        async with clients(("ann", a.url), ("ben", b.url)) as (ann, ben):
            # Chat sent on A is history on B; a read mark made on B is seen through A.
            for client in (ann, ben):
                await client.call("join-study", {"studyId": study})
            sent = await ann.call("message", {"studyId": study, "content": "from a"})
            assert (await ben.next("message"))["id"] == sent["id"]
            await ben.call("read", {"messageId": sent["id"]})
            (stored,) = await all_messages(a.url, study)
            assert (stored["id"], stored["readBy"]) == (sent["id"], ["ben"])

            # ben is online on B: a notification posted to A reaches him at once, once.
            live = await notify(a.url, "ben", "live")
            assert (await ben.next("notification"))["id"] == live

            # A call with a participant on each node, recorded as one call.
            await ann.call("video:join-room", {"roomId": room})
            await ben.call("video:join-room", {"roomId": room})
            await ben.call("video:leave-room", {"roomId": room})
            assert (await ann.next("video:user-left"))["userId"] == "ben"

        # cat is offline everywhere: posted to A, delivered when cat connects to B, once.
        missed = await notify(a.url, "cat", "missed")
        both = [Client(b.url, "cat"), Client(a.url, "cat")]
        await asyncio.gather(*(c.connect() for c in both))
        try:
            winner, note = await first_of(both, "notification")
            assert note["id"] == missed
            # Both are online now: a marker reaches both, and nothing came before it.
            marker = await notify(a.url, "cat", "marker")
            for client in both:
                assert (await client.next("notification"))["id"] == marker
            assert both[1 - winner].pending("notification") == []
        finally:
            for client in both:
                await client.close()

        for node in (a, b):
            (call,) = await room_history(node.url, room)
            assert [p["userId"] for p in call["participants"]] == ["ann", "ben"]
            assert call["endedAt"] is not None  # ann's disconnect ended it
        status, health = await http_json("GET", f"{b.url}/health")
        assert (status, health["database"], health["redis"]) == (200, "ok", "ok")
