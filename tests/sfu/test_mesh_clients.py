"""Clients that do not know the SFU: it plays every other participant on its own connection."""

from __future__ import annotations

import asyncio

from devtools.media import Clip
from sfu import MediaPlane
from sfu.mesh import MeshParticipant

from .peers import MeshPeer, PeerClient, until

ROOM = "mesh-room"


def upload_sources(plane: MediaPlane, pid: str) -> int:
    """How many of the SFU's connections receive this mesh client's media."""
    p = plane._rooms[ROOM].participants[pid]
    assert isinstance(p, MeshParticipant)
    return sum(1 for link in p.links.values() if link.publications)


async def test_mesh_clients_see_everyone_each_on_its_own_connection_and_upload_once(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    m1 = MeshPeer(plane, ROOM, "m1", vp8_clip, opus_clip)
    m2 = MeshPeer(plane, ROOM, "m2", vp8_clip, opus_clip)
    try:
        await alice.join()
        # m1 joins: as the documents' joiner, it offers to the one participant it was told of
        await m1.join()
        await m1.offer_to("alice")
        # m2 joins: it offers to both; the SFU offers to m1 as m2 (m1 does not offer itself)
        await m2.join()
        await m2.offer_to("alice")
        await m2.offer_to("m1")
        await m1.wait_frames(["alice", "m2"], n=5)
        await m1.wait_frames(["alice", "m2"], n=5, kind="audio")
        await m2.wait_frames(["alice", "m1"], n=5)
        await alice.wait_frames("video", ["m1", "m2"], n=5)
        await alice.wait_frames("audio", ["m1", "m2"], n=5)
        # the SFU spoke as each peer: stream ids name the peer, never "sfu"
        assert "a=msid:alice " in m1.answers["alice"][-1]
        assert "a=msid:m2 " in m1.offers["m2"][-1]
        assert "sfu" not in m2.answers["m1"][-1].split("a=msid:")[1][:4]
        # each mesh client sends its camera on one of its connections only
        for client in (m1, m2):
            assert len(client.sending_links()) == 1, client.sending_links()
            assert upload_sources(plane, client.id) == 1
        assert m1.errors == [] and m2.errors == [] and alice.errors == []
        stats = plane.stats()["rooms"][ROOM]
        assert stats["peer_connections"] == 1 + 2 + 2
    finally:
        for c in (alice, m1, m2):
            await c.close()


async def test_the_upload_moves_to_another_connection_when_its_peer_leaves(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    m1 = MeshPeer(plane, ROOM, "m1", vp8_clip, opus_clip)
    m2 = MeshPeer(plane, ROOM, "m2", vp8_clip, opus_clip)
    try:
        await alice.join()
        await m1.join()
        await m1.offer_to("alice")  # m1 uploads on its connection to alice
        await m2.join()
        await m2.offer_to("alice")
        await m2.offer_to("m1")
        await m2.wait_frames(["m1"], n=5)
        assert m1.sending_links() == ["alice"]
        offers = len(m1.offers.get("m2", []))
        await plane.leave(ROOM, "alice")
        await alice.close()
        # the SFU offers m1 a fresh connection as m2 that takes m1's camera; m2 sees m1 again
        await until(m1.changed, lambda: len(m1.offers.get("m2", [])) > offers)
        await m2.wait_frames(["m1"], n=10)
        await until(m1.changed, lambda: m1.sending_links() == ["m2"])
        assert upload_sources(plane, "m1") == 1
        # in place of a connection m1 still holds: signaling has it close that one first
        assert m1.kinds[-1] == ("m2", "reoffer") and ("m2", "offer") in m1.kinds
        assert m1.errors == [] and m2.errors == []
    finally:
        for c in (alice, m1, m2):
            await c.close()


async def test_a_connection_the_client_closes_is_offered_again(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    m1 = MeshPeer(plane, ROOM, "m1", vp8_clip, opus_clip)
    m2 = MeshPeer(plane, ROOM, "m2", vp8_clip, opus_clip)
    try:
        await m1.join()
        await m2.join()
        await m2.offer_to("m1")
        await m1.wait_frames(["m2"], n=5)
        await m2.wait_frames(["m1"], n=5)
        # what the documents' hook does on "disconnected"/"failed": close that connection
        offers = len(m1.offers.get("m2", []))
        await m1.pcs.pop("m2").close()
        await until(m1.changed, lambda: len(m1.offers.get("m2", [])) > offers, timeout=10)
        await m1.wait_frames(["m2"], n=5)
        assert m1.errors == []
    finally:
        for c in (m1, m2):
            await c.close()


async def test_a_screen_share_replaces_the_camera_for_mesh_clients(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    m1 = MeshPeer(plane, ROOM, "m1", vp8_clip, opus_clip)
    try:
        await alice.join()
        await m1.join()
        await m1.offer_to("alice")
        await m1.wait_frames(["alice"], n=5)
        p = plane._rooms[ROOM].participants["m1"]
        assert isinstance(p, MeshParticipant)
        leg = p.links["alice"].subscriptions["video"].leg
        camera = plane._get(ROOM, "alice").publications["video"].source
        assert leg.source is camera
        alice.sharing = True
        await plane.screen_share(ROOM, "alice", True)
        screen = plane._get(ROOM, "alice").publications["screen"].source
        await until(m1.changed, lambda: leg.source is screen)
        await m1.wait_frames(["alice"], n=10)  # the same m-line, no new connection
        assert len(m1.offers.get("alice", [])) == 0 and len(m1.answers["alice"]) == 1
        await plane.screen_share(ROOM, "alice", False)
        await until(m1.changed, lambda: leg.source is camera)
        await m1.wait_frames(["alice"], n=5)
    finally:
        for c in (alice, m1):
            await c.close()


async def test_clients_that_offer_to_newcomers_get_no_offer_from_the_sfu(
    plane: MediaPlane, vp8_clip: Clip
) -> None:
    g1 = MeshPeer(plane, ROOM, "g1", vp8_clip, None, offers_to_newcomers=False)
    g2 = MeshPeer(plane, ROOM, "g2", vp8_clip, None, offers_to_newcomers=False)
    try:
        await g1.join()
        await g2.join()
        # the guide's flow: the joiner offers to the existing users, they offer to it too
        await asyncio.gather(g2.offer_to("g1"), g1.offer_to("g2"))
        await g1.wait_frames(["g2"], n=5)
        await g2.wait_frames(["g1"], n=5)
        assert g1.offers == {} and g2.offers == {}
        assert upload_sources(plane, "g1") == 1 and upload_sources(plane, "g2") == 1
    finally:
        for c in (g1, g2):
            await c.close()


async def test_after_a_switch_to_sfu_the_sfu_offers_every_pair_once(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip
) -> None:
    """A room that goes sfu: nobody offers on their own, the SFU offers to each mesh client
    as every other participant, one connection per pair, and each uploads once."""
    alice = PeerClient(plane, ROOM, "alice", vp8_clip, opus_clip, mode="fill")
    m1 = MeshPeer(plane, ROOM, "m1", vp8_clip, opus_clip)
    m2 = MeshPeer(plane, ROOM, "m2", vp8_clip, opus_clip)
    try:
        await alice.join()
        await m1.join(offer_existing=True)
        await m2.join(offer_existing=True)
        await m1.wait_frames(["alice", "m2"], n=5)
        await m2.wait_frames(["alice", "m1"], n=5)
        await alice.wait_frames("video", ["m1", "m2"], n=5)
        for client, peers in ((m1, {"alice", "m2"}), (m2, {"alice", "m1"})):
            assert set(client.offers) == peers and client.answers == {}
            assert all(len(offers) == 1 for offers in client.offers.values())
            assert len(client.sending_links()) == 1
        assert m1.errors == [] and m2.errors == []
    finally:
        for c in (alice, m1, m2):
            await c.close()
