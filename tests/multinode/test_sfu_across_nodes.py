"""An sfu room whose clients sit on two nodes: each client's media runs on its own node.

The nodes' pools talk over Redis pub/sub and pipe each published track once to the other
node over UDP; SIGKILL of one node leaves the survivors' media untouched.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from devtools.media import Clip
from tests.clients import Client, http_json
from tests.multinode.cluster import rooms_of, two_nodes
from tests.server import ServerProcess
from tests.sfu.peers import MeshPeer, PeerClient, SocketPlane, until

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
ROOM = "x"
KEY = "multinode-key"
LIVE_TTL_S = 10.0
"""Node TTL of the tests that kill no node: a node stalled by a loaded machine must not be
swept as dead mid-test (its participants would leave, the room go back to mesh)."""
KILL_TTL_S = 3.0
"""Node TTL of the test that kills one: the sweep (TTL + a heartbeat) stays inside the
10 s in which the dead node's participants must have left."""


class SocketMeshPlane:
    """A documents' client over a real socket.io connection, for `MeshPeer`: it joins
    without the sfu flag and signals each peer by its socket id."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.answers: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)

    async def join_mesh(self, room: str, pid: str, sink: Any, **_: Any) -> None:
        async def on_offer(payload: dict[str, Any]) -> None:
            await sink(payload["from"], "offer", payload["offer"])

        async def on_answer(payload: dict[str, Any]) -> None:
            self.answers[payload["from"]].put_nowait(payload["answer"])

        self.client.sio.on("video:offer", on_offer)
        self.client.sio.on("video:answer", on_answer)
        await self.client.call("video:join-room", {"roomId": room})

    async def offer(self, room: str, pid: str, peer: str, offer: dict[str, Any]) -> Any:
        await self.client.emit("video:offer", {"to": peer, "offer": offer})
        answer = await asyncio.wait_for(self.answers[peer].get(), 20)
        return SimpleNamespace(sdp=answer["sdp"])

    async def answer(self, room: str, pid: str, answer: dict[str, Any], peer: str) -> None:
        await self.client.emit("video:answer", {"to": peer, "answer": answer})


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


async def all_see_all(group: list[PeerClient], nodes: tuple[ServerProcess, ...]) -> None:
    """Every peer gets video (from a keyframe) and audio of every other; on a timeout, the
    failure says who got what and what each node's media carries."""
    try:
        for peer in group:
            others = [p.id for p in group if p is not peer]
            await peer.wait_frames("video", others, n=5)
            await peer.wait_frames("audio", others, n=3)
            for other in others:
                assert peer.frames_by_stream("video")[other][0][0] is True
    except TimeoutError:
        got = {
            p.id: {
                kind: {s: len(f) for s, f in p.frames_by_stream(kind).items()}
                for kind in ("video", "audio")
            }
            for p in group
        }
        media = [await media_of(node) for node in nodes]
        raise AssertionError(f"not everyone got everyone: {got}; media per node: {media}") from None


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
    prefix = f"sfu-{uuid.uuid4().hex[:8]}"
    async with two_nodes(redis_url, prefix, ttl_s=KILL_TTL_S, mode="sfu") as (a, b):
        made: dict[str, tuple[Client, PeerClient]] = {}
        try:
            # ann is on node a; ben and cat are on node b.
            for name, node in (("ann", a), ("ben", b), ("cat", b)):
                client = await Client(node.url, name).connect()
                peer = PeerClient(SocketPlane(client), ROOM, client.sid, vp8_clip, opus_clip)
                made[name] = (client, peer)
                await peer.join()
            group = {name: peer for name, (_, peer) in made.items()}
            await all_see_all(list(group.values()), (a, b))
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


async def test_mesh_clients_on_both_nodes_see_everyone_the_sfu_plays_from_the_other(
    redis_url: str, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """Documents' clients in an sfu room: each node's SFU plays the peers on the other."""
    prefix = f"sfu-{uuid.uuid4().hex[:8]}"
    async with two_nodes(redis_url, prefix, ttl_s=LIVE_TTL_S, mode="sfu") as (a, b):
        clients: list[Client] = []
        media_peers: list[MeshPeer | PeerClient] = []
        try:
            for name, node in (("mel", a), ("ben", b), ("nia", b)):
                clients.append(await Client(node.url, name).connect())
            mel_c, ben_c, nia_c = clients
            # mel (a mesh client on a) is first: a's SFU offers to her as each newcomer.
            mel = MeshPeer(SocketMeshPlane(mel_c), ROOM, mel_c.sid, vp8_clip, opus_clip)
            media_peers.append(mel)
            await mel.join()
            ben = PeerClient(SocketPlane(ben_c), ROOM, ben_c.sid, vp8_clip, opus_clip)
            media_peers.append(ben)
            await ben.join()
            # nia (a mesh client on b) offers to everyone already there, as the documents'
            # clients do: b's SFU answers as mel (fed by the pipe from a) and as ben.
            nia = MeshPeer(SocketMeshPlane(nia_c), ROOM, nia_c.sid, vp8_clip, opus_clip)
            media_peers.append(nia)
            await nia.join()
            for peer in (mel_c.sid, ben_c.sid):
                await nia.offer_to(peer)
            await mel.wait_frames([ben_c.sid, nia_c.sid], n=5)
            await mel.wait_frames([ben_c.sid, nia_c.sid], n=3, kind="audio")
            await nia.wait_frames([mel_c.sid, ben_c.sid], n=5)
            for publisher in (mel_c.sid, nia_c.sid):
                await ben.wait_frames("video", [publisher], n=5)
            # One link per peer, each with its own node's SFU, and one upload each.
            assert sorted(mel.pcs) == sorted([ben_c.sid, nia_c.sid])
            assert sorted(nia.pcs) == sorted([mel_c.sid, ben_c.sid])
            assert len(mel.sending_links()) == 1 and len(nia.sending_links()) == 1
            media_a, media_b = await media_of(a), await media_of(b)
            assert media_a["total"]["peer_connections"] == 2  # mel's two links
            assert media_b["total"]["peer_connections"] == 3  # ben's one, nia's two
            assert mel.errors == nia.errors == ben.errors == []
            for client in clients:
                assert client.pending("error") == []
        finally:
            for media_peer in media_peers:
                await media_peer.close()
            for client in clients:
                await client.close()


async def test_a_room_switching_to_sfu_seats_everyone_on_their_node_and_closes_everywhere(
    redis_url: str, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """auto: the fourth joiner (on b) switches the room; a's clients get a's SFU. A DELETE on
    one node closes the room's media on both."""
    prefix = f"sfu-{uuid.uuid4().hex[:8]}"
    async with two_nodes(
        redis_url, prefix, ttl_s=LIVE_TTL_S, mode="auto", MESH_MAX="3", API_KEY=KEY
    ) as (a, b):
        made: list[tuple[Client, PeerClient]] = []
        try:
            for name, node in (("ann", a), ("ada", a), ("ben", b), ("bob", b)):
                client = await Client(node.url, name).connect()
                peer = PeerClient(SocketPlane(client), ROOM, client.sid, vp8_clip, opus_clip)
                made.append((client, peer))
                await peer.join()
            for client, _ in made[:3]:
                changed = await client.next("video:mode-changed")
                assert changed == {"roomId": ROOM, "mode": "sfu"}
            await all_see_all([peer for _, peer in made], (a, b))
            media_a, media_b = await media_of(a), await media_of(b)
            assert media_a["total"]["peer_connections"] == 2
            assert media_b["total"]["peer_connections"] == 2

            headers = {"Authorization": f"Bearer {KEY}"}
            status, _ = await http_json("DELETE", f"{b.url}/api/rooms/{ROOM}", headers=headers)
            assert status == 200
            for client, _ in made:
                assert (await client.next("video:room-closed"))["roomId"] == ROOM
            for node in (a, b):
                media = await media_until(node, lambda m: ROOM not in m["rooms"])
                assert media["total"]["peer_connections"] == 0
            for client, peer in made:
                assert peer.errors == []
                assert client.pending("error") == []
        finally:
            for client, peer in made:
                await peer.close()
                await client.close()
