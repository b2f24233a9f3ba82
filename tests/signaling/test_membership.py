"""The membership seam on its own: which room a socket is in, leaving it, a dead node's sweep."""

from __future__ import annotations

from signaling.domain import GuideMember, GuideRoom
from signaling.errors import NotInRoom
from signaling.membership import Membership
from signaling.store import MemoryStore


def members(room: GuideRoom) -> list[tuple[str, str]]:
    return [(m.socketId, m.node) for m in room.members]


async def make(
    index: str | None,
) -> tuple[MemoryStore, Membership[GuideRoom], list[tuple[str, str]]]:
    store = MemoryStore("n1")
    left: list[tuple[str, str]] = []

    async def leave(sid: str, room_id: str) -> None:
        left.append((sid, room_id))
        await seam.forget([sid], room_id)

    seam = Membership(store, GuideRoom, members, leave, index=index)
    return store, seam, left


async def test_one_room_per_socket_in_the_store() -> None:
    _, seam, left = await make("sock")
    await seam.enter("a", "r1")
    await seam.enter("b", "r1")
    await seam.enter("c", "r2")
    assert await seam.room_of("a") == "r1"
    assert await seam.peers("a", "b") == ("r1", True)
    assert await seam.peers("a", "c") == ("r1", False)
    assert await seam.peers("z", "a") == (None, False)
    await seam.check("a", "r1")
    try:
        await seam.check("a", "r2")
    except NotInRoom as exc:
        assert exc.message == "not in this room"
    else:
        raise AssertionError("a socket outside the room passed the check")
    await seam.leave("a", keep="r1")  # joining the room it is in: it stays
    assert left == []
    await seam.leave("a")
    assert left == [("a", "r1")] and await seam.room_of("a") is None


async def test_several_rooms_per_socket_on_this_node() -> None:
    _, seam, left = await make(None)
    await seam.enter("a", "s1")
    await seam.enter("a", "s2")
    assert await seam.rooms_of("a") == ["s1", "s2"]
    assert seam.holds("a", "s2") and not seam.holds("b", "s2")
    await seam.leave("a")
    assert left == [("a", "s1"), ("a", "s2")]
    assert await seam.rooms_of("a") == []


async def test_a_dead_nodes_sockets_leave_every_room() -> None:
    store, seam, left = await make("sock")
    for room_id, sids in (("r1", [("a", "n1"), ("b", "dead")]), ("r2", [("c", "dead")])):
        async with store.edit(GuideRoom, room_id) as slot:
            slot.value = GuideRoom(
                id=room_id,
                host=sids[0][0],
                members=[GuideMember(socketId=s, node=n) for s, n in sids],
            )
    await seam.purge_node("dead")
    assert sorted(left) == [("b", "r1"), ("c", "r2")]
