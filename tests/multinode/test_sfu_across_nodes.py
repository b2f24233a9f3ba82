"""An sfu room whose clients sit on two nodes: each client's media runs on its own node.

The nodes' pools talk over Redis pub/sub and pipe each published track once to the other
node over UDP; SIGKILL of one node leaves the survivors' media untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks._media import Clip
from tests.clients import Client, http_json
from tests.multinode.cluster import rooms_of, two_nodes
from tests.server import ServerProcess
from tests.sfu.peers import PeerClient, SocketPlane, until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
ROOM = "x"


async def media_of(node: ServerProcess) -> dict[str, Any]:
    """The `sfu` part of one node's `/metrics`: what its own media workers carry."""
    status, body = await http_json("GET", f"{node.url}/metrics")
    assert status == 200, body
    sfu: dict[str, Any] = body["sfu"]
    return sfu


async def media_until(
    node: ServerProcess, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """Bounded wait for a state of a node's media that no event announces."""
    deadline = time.monotonic() + timeout
    while True:
        media = await media_of(node)
        if pred(media):
            return media
        if time.monotonic() > deadline:
            raise AssertionError(f"media of {node.url} never got there: {media}")
        await asyncio.sleep(0.1)


async def more_frames(peer: PeerClient, publisher: str, n: int) -> None:
    """Bounded wait for ``n`` more video and audio frames of ``publisher`` at ``peer``."""
    video, audio = peer.count_from("video", publisher), peer.count_from("audio", publisher)

    def grown() -> bool:
        return (
            peer.count_from("video", publisher) > video + n
            and peer.count_from("audio", publisher) > audio + n
        )

    await until(peer.changed, grown)


def pipes(media: dict[str, Any]) -> int:
    return sum(int(worker["pipes"]) for worker in media["workers"])


async def test_sfu_room_split_across_nodes_runs_media_where_the_sockets_are_and_survives_a_node(
    redis_url: str, vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with two_nodes(redis_url, f"sfu-{uuid.uuid4().hex[:8]}", mode="sfu") as (a, b):
        made: dict[str, tuple[Client, PeerClient]] = {}
        try:
            # ann is on node a; ben and cat are on node b.
            for name, node in (("ann", a), ("ben", b), ("cat", b)):
                client = await Client(node.url, name).connect()
                peer = PeerClient(SocketPlane(client), ROOM, client.sid, vp8_clip, opus_clip)
                made[name] = (client, peer)
                await peer.join()
            group = {name: peer for name, (_, peer) in made.items()}
            for peer in group.values():
                others = [p.id for p in group.values() if p is not peer]
                await peer.wait_frames("video", others, n=5)
                await peer.wait_frames("audio", others, n=3)
                for other in others:
                    assert peer.frames_by_stream("video")[other][0][0] is True

            # Each client's peer connection is on the node that holds its socket; the
            # other node's participants are known there without one, fed by the pipe.
            media_a, media_b = await media_of(a), await media_of(b)
            assert media_a["total"]["peer_connections"] == 1
            assert media_b["total"]["peer_connections"] == 2
            assert media_a["rooms"][ROOM]["participants"] == 3
            assert media_b["rooms"][ROOM]["participants"] == 3
            # Each published track crosses once: ann's two to b, ben's and cat's four to a.
            assert (pipes(media_a), pipes(media_b)) == (2, 4)

            # Node a dies: ann leaves every room view within the node TTL, node b stops
            # piping to it, and ben and cat keep each other's media all along.
            ben, cat = group["ben"], group["cat"]
            ann_sid = made["ann"][0].sid
            a.kill()
            killed_at = time.monotonic()
            for name in ("ben", "cat"):
                client = made[name][0]
                remaining = 10.0 - (time.monotonic() - killed_at)
                left = await client.next("video:user-left", timeout=remaining)
                assert (left["socketId"], left["userId"]) == (ann_sid, "ann")
            assert (await rooms_of(b))[ROOM] == 2
            media_b = await media_until(b, lambda m: pipes(m) == 0)
            assert media_b["rooms"][ROOM]["participants"] == 2
            assert media_b["total"]["peer_connections"] == 2
            for peer, them in ((ben, cat), (cat, ben)):
                await more_frames(peer, them.id, 10)
            # ... without a pause: the frames between them never stopped for the kill.
            for peer, them in ((ben, cat), (cat, ben)):
                times = [at for _, _, at in peer.frames_by_stream("video")[them.id]]
                around = [at for at in times if at >= killed_at - 1.0]
                gap = max(y - x for x, y in itertools.pairwise(around))
                assert gap < 1.5, f"{peer.id} got no frame of {them.id} for {gap:.2f} s"
            for name in ("ben", "cat"):
                client, peer = made[name]
                assert peer.errors == []
                assert client.pending("error") == []
            print(
                f"dead node's participant removed {time.monotonic() - killed_at:.2f} s after kill"
            )
        finally:
            for client, peer in made.values():
                await peer.close()
                await client.close()
