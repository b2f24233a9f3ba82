"""A client that stops reading while its room floods (issue 13, items 3 and 8).

The real server process: a flooder fills the room with 4 KB chat messages, a reader reads
them all, and a third client stopped reading after its handshake (`tests.raw.Stalled`:
a 4 KB receive buffer, then nothing). The stalled one must be cut off once its backlog
passes the configured size (or age), in bounded time, with the server's memory bounded,
and the reader must get every message, in order.
"""

from __future__ import annotations

import asyncio
import resource

import pytest

from tests.clients import Client, http_json
from tests.raw import stalled_websocket
from tests.server import ServerProcess, running_server

ROOM = "flood"
CHAT = "x" * 3_900
PAGE = resource.getpagesize()


def rss(node: ServerProcess) -> int:
    with open(f"/proc/{node.process.pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.mark.parametrize(
    "bound,max_bytes,max_age",
    [("size", "1000000", "600"), ("age", "100000000", "1.0")],
)
async def test_a_client_that_stops_reading_is_cut_off_and_nobody_else_waits(
    bound: str, max_bytes: str, max_age: str
) -> None:
    async with running_server(
        ROOM_MODE="mesh",
        RATE_PER_SECOND="100000",
        RATE_BURST="100000",
        SEND_QUEUE_MAX_BYTES=max_bytes,
        SEND_QUEUE_MAX_AGE_S=max_age,
    ) as node:
        flooder = await Client(node.url, "flooder").connect()
        reader = await Client(node.url, "reader").connect()
        try:
            for client in (flooder, reader):
                await client.call("video:join-room", {"roomId": ROOM})
            stalled = await stalled_websocket(node.url, {"userId": "stalled"})
            await stalled.send('42["video:join-room",{"roomId":"flood"}]')
            assert (await reader.next("video:user-joined"))["userId"] == "stalled"
            baseline = rss(node)
            peak = baseline
            left = asyncio.ensure_future(
                reader.next_where("video:user-left", lambda e: e["userId"] == "stalled", 30)
            )
            loop = asyncio.get_running_loop()
            started = loop.time()
            sent = 0
            while not left.done():
                ack = await flooder.call("video:chat", {"roomId": ROOM, "content": CHAT})
                assert ack["ok"] is True
                sent += 1
                if sent % 100 == 0:
                    peak = max(peak, rss(node))
                assert sent * len(CHAT) < 64_000_000, "still not cut off after 64 MB"
            elapsed = loop.time() - started
            peak = max(peak, rss(node))
            await left
            # The reader got every message, in order, while the other was being cut off.
            for _ in range(sent):
                message = await reader.next("video:chat")
                assert message["content"] == CHAT
            assert reader.pending("video:chat") == []
            _, health = await http_json("GET", node.url + "/health")
            assert health["connections"] == 2
            growth = peak - baseline
            print(
                f"{bound}: cut off after {sent} messages ({sent * len(CHAT) / 1e6:.1f} MB) "
                f"in {elapsed:.2f} s; server RSS {baseline / 1e6:.0f} MB, "
                f"peak +{growth / 1e6:.1f} MB"
            )
            assert growth < 40_000_000
            stalled.close()
        finally:
            await flooder.close()
            await reader.close()
