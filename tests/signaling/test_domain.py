"""The domain's rules without a network: rooms, topology, guide rooms, studies, pairing.

The end-to-end tests show these through clients; here each rule is pinned on its own, fast,
so a change to one names the rule it broke. (The last test is the one that needs a server:
how a storage error reaches the client.)
"""

from __future__ import annotations

from typing import Any

import pytest

from signaling.domain import (
    GuideMember,
    GuideRoom,
    ModeChange,
    PairingQueue,
    Participant,
    Policy,
    Study,
    StudyMember,
    User,
    VideoRoom,
    Waiting,
    check_room_claim,
)
from signaling.errors import ErrorCode, Forbidden, NotFound, RoomFull
from signaling.store import StoreBusy
from tests.clients import connected
from tests.server import InProcess

MAX = 16


def person(n: int, user: int | None = None) -> Participant:
    uid = f"u{n if user is None else user}"
    return Participant(socketId=f"s{n}", userId=uid, user=User(id=uid, name=f"User {n}"))


def room(policy: Policy = "auto", mesh_max: int = 3) -> VideoRoom:
    return VideoRoom.open("r", policy, mesh_max, None)


def waiting(n: int, user: int | None = None, node: str = "a") -> Waiting:
    uid = f"u{n if user is None else user}"
    return Waiting(socketId=f"s{n}", user=User(id=uid, name=uid), node=node)


# -- topology: auto is mesh up to meshMax, sfu beyond, mesh again at 2 or fewer ---------------


def test_auto_room_opens_mesh_and_stays_mesh_up_to_mesh_max() -> None:
    r = room(mesh_max=3)
    assert r.mode == "mesh"
    assert [r.join(person(n), MAX) for n in (1, 2, 3)] == [None, None, None]
    assert r.mode == "mesh"


def test_auto_room_switches_to_sfu_beyond_mesh_max() -> None:
    r = room(mesh_max=3)
    for n in (1, 2, 3):
        r.join(person(n), MAX)
    assert r.join(person(4), MAX) == ModeChange(previous="mesh", current="sfu")
    assert r.mode == "sfu"
    assert r.join(person(5), MAX) is None  # already sfu: no second change


def test_auto_room_stays_sfu_until_two_are_left_hysteresis() -> None:
    r = room(mesh_max=3)
    for n in (1, 2, 3, 4):
        r.join(person(n), MAX)
    left, change = r.leave("s4")
    assert left is not None and left.socketId == "s4"
    assert change is None and r.summary()["mode"] == "sfu"  # 3 = meshMax, still sfu: no flapping
    _, change = r.leave("s3")
    assert change == ModeChange(previous="sfu", current="mesh")
    assert r.mode == "mesh"


def test_auto_room_back_in_mesh_switches_again_only_beyond_mesh_max() -> None:
    r = room(mesh_max=3)
    for n in (1, 2, 3, 4):
        r.join(person(n), MAX)
    r.leave("s4")
    r.leave("s3")
    assert r.join(person(5), MAX) is None  # 3 people, mesh again
    assert r.join(person(6), MAX) == ModeChange(previous="mesh", current="sfu")


def test_mesh_max_two_switches_at_the_third_and_back_at_two() -> None:
    r = room(mesh_max=2)
    r.join(person(1), MAX)
    r.join(person(2), MAX)
    assert r.join(person(3), MAX) == ModeChange(previous="mesh", current="sfu")
    assert r.leave("s3")[1] == ModeChange(previous="sfu", current="mesh")


@pytest.mark.parametrize("policy", ["mesh", "sfu"])
def test_fixed_policies_never_switch(policy: Policy) -> None:
    r = room(policy, mesh_max=2)
    assert r.mode == policy
    changes = [r.join(person(n), MAX) for n in range(1, 6)]
    changes += [r.leave(f"s{n}")[1] for n in range(1, 6)]
    assert changes == [None] * 10
    assert r.mode == policy


# -- joins -----------------------------------------------------------------------------------


def test_a_full_room_refuses_a_new_socket_with_room_full() -> None:
    r = room("mesh")
    r.join(person(1), max_participants=2)
    r.join(person(2), max_participants=2)
    with pytest.raises(RoomFull) as refused:
        r.join(person(3), max_participants=2)
    assert refused.value.code is ErrorCode.ROOM_FULL
    assert set(r.participants) == {"s1", "s2"}


def test_a_rejoin_replaces_the_participant_even_in_a_full_room() -> None:
    r = room(mesh_max=2)
    r.join(person(1), max_participants=2)
    r.join(person(2), max_participants=2)
    again = person(2)
    again.isMuted = True
    assert r.join(again, max_participants=2) is None  # no RoomFull, no mode change
    assert r.participants["s2"].isMuted is True
    assert len(r.participants) == 2


def test_the_same_user_on_two_sockets_is_two_participants() -> None:
    r = room("mesh")
    r.join(person(1, user=7), MAX)
    r.join(person(2, user=7), MAX)
    assert [p.userId for p in r.participants.values()] == ["u7", "u7"]
    assert [p.socketId for p in r.others("s1")] == ["s2"]


def test_leaving_a_room_one_is_not_in_changes_nothing() -> None:
    r = room()
    r.join(person(1), MAX)
    assert r.leave("nobody") == (None, None)
    assert list(r.participants) == ["s1"]
    r.leave("s1")
    assert r.empty


def test_media_flags_apply_to_participants_only() -> None:
    r = room()
    r.join(person(1), MAX)
    assert r.set_media("s1", is_muted=True).media_state()["isMuted"] is True
    assert r.participants["s1"].isVideoOff is False  # untouched flags stay
    with pytest.raises(NotFound):
        r.set_media("s9", is_muted=True)


def test_the_rooms_claim_limits_joins_but_not_hosts() -> None:
    check_room_claim(None, None, "any")
    check_room_claim(["r1"], None, "r1")
    check_room_claim(["r1"], "host", "r2")
    with pytest.raises(Forbidden):
        check_room_claim(["r1"], "guest", "r2")


# -- guide rooms: created by a host, members join up to the limit ----------------------------


def test_guide_join_returns_the_others_and_ignores_a_duplicate() -> None:
    g = GuideRoom(id="g", host="s1", members=[GuideMember(socketId="s1")])
    assert g.join(GuideMember(socketId="s2"), MAX) == ["s1"]
    assert g.join(GuideMember(socketId="s2"), MAX) == ["s1"]  # again: not a second member
    assert g.socket_ids == ["s1", "s2"]


def test_guide_room_full_and_leave() -> None:
    g = GuideRoom(id="g", host="s1", members=[GuideMember(socketId="s1")])
    g.join(GuideMember(socketId="s2"), max_participants=2)
    with pytest.raises(RoomFull):
        g.join(GuideMember(socketId="s3"), max_participants=2)
    assert g.leave("s1") is True and g.socket_ids == ["s2"]
    assert g.host == "s1"  # the host is remembered (the handler closes the room for the rest)
    assert g.leave("s1") is False


# -- studies: presence per user, counted per socket ------------------------------------------


def test_study_presence_is_per_user() -> None:
    s = Study(id="st")

    def member(n: int, user: int) -> StudyMember:
        uid = f"u{user}"
        return StudyMember(socketId=f"s{n}", userId=uid, user=User(id=uid, name=uid))

    assert s.join(member(1, user=1)) is True  # came online
    assert s.join(member(2, user=1)) is False  # a second tab
    assert s.join(member(3, user=2)) is True
    assert [u.id for u in s.online_users()] == ["u1", "u2"]
    assert s.leave("s1") is None  # u1 still has s2
    gone = s.leave("s2")
    assert gone is not None and gone.userId == "u1"
    assert s.leave("s9") is None
    s.leave("s3")
    assert s.empty


# -- pairing: the longest-waiting other user, never oneself ----------------------------------


def test_pairing_matches_the_longest_waiting_other_user() -> None:
    q = PairingQueue()
    assert q.request(waiting(1)) is None  # nobody else: queued
    q.request(waiting(2, user=1))  # same user again: waits, not matched with itself
    assert [w.socketId for w in q.waiting] == ["s1", "s2"]
    matched = q.request(waiting(3))
    assert matched is not None and matched.socketId == "s1"
    assert [w.socketId for w in q.waiting] == ["s2"]


def test_pairing_request_again_does_not_queue_twice() -> None:
    q = PairingQueue()
    q.request(waiting(1))
    q.request(waiting(1))
    assert [w.socketId for w in q.waiting] == ["s1"]


def test_pairing_drops_entries_that_are_gone() -> None:
    q = PairingQueue()
    q.request(waiting(1))
    q.request(waiting(2, user=1))
    matched = q.request(waiting(3), alive=lambda w: w.socketId != "s1")
    assert matched is not None and matched.socketId == "s2"
    assert q.waiting == []


def test_pairing_cancel_and_depart() -> None:
    q = PairingQueue()
    q.request(waiting(1))
    assert q.cancel("s1") is True and q.cancel("s1") is False
    q.request(waiting(2))
    assert q.depart("s2") is True and q.waiting == []


def test_a_socket_that_departs_while_moved_is_taken_out_by_the_mover() -> None:
    q = PairingQueue()
    one, two = waiting(1, node="a"), waiting(2, node="b")
    q.start_move("pair-1", "a", one, two)
    assert q.depart("s2") is False  # not waiting any more: being moved
    assert q.moved("s1") is False  # arrived, still connected
    assert q.moved("s2") is True  # left meanwhile: the mover takes it out again
    assert q.moving == {}


def test_a_dead_nodes_sockets_and_moves_are_forgotten() -> None:
    q = PairingQueue()
    q.request(waiting(1, node="dead"))
    q.request(waiting(2, user=1, node="live"))
    q.start_move("p1", "dead", waiting(3, node="live"))  # moved by the dead node: void
    q.start_move("p2", "live", waiting(4, node="dead"))  # a dead node's socket: gone
    q.forget_node("dead")
    assert [w.socketId for w in q.waiting] == ["s2"]
    assert "s3" not in q.moving
    assert q.moved("s4") is True


# -- a storage error on the wire: the one mapping says INTERNAL, with the store's message -----


async def test_a_busy_store_answers_internal_with_its_message(
    server: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def busy(*_: Any) -> Any:
        raise StoreBusy("the room is busy; try again")

    async with connected(server.url, "alice") as (alice,):
        with monkeypatch.context() as patch:
            patch.setattr(server.application.store, "edit", busy)
            ack = await alice.call("video:join-room", {"roomId": "r"})
    assert ack == {
        "ok": False,
        "error": {"code": "INTERNAL", "message": "the room is busy; try again"},
    }
