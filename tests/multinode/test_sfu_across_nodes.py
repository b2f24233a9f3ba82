"""An sfu room whose clients sit on two nodes: one node's SFU carries the whole room."""

from __future__ import annotations

import uuid

import pytest

from devtools.media import Clip
from tests.clients import Client
from tests.multinode.cluster import two_nodes
from tests.sfu.peers import PeerClient, SocketPlane

pytestmark = pytest.mark.redis


async def test_sfu_room_split_across_nodes_forwards_everyone(
    redis_url: str, vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with two_nodes(redis_url, f"sfu-{uuid.uuid4().hex[:8]}", mode="sfu") as (a, b):
        made: list[tuple[Client, PeerClient]] = []
        try:
            # ann opens the room on node a (its SFU carries the room); ben and cat are on b.
            for name, node in (("ann", a), ("ben", b), ("cat", b)):
                client = await Client(node.url, name).connect()
                peer = PeerClient(SocketPlane(client), "x", client.sid, vp8_clip, opus_clip)
                made.append((client, peer))
                await peer.join()
            group = [peer for _, peer in made]
            for peer in group:
                others = [p.id for p in group if p is not peer]
                await peer.wait_frames("video", others, n=5)
                await peer.wait_frames("audio", others, n=3)
                for other in others:
                    assert peer.frames_by_stream("video")[other][0][0] is True
                assert peer.errors == []
        finally:
            for client, peer in made:
                await peer.close()
                await client.close()
