"""The History port, checked on SQLite, PostgreSQL and in memory alike.

Every test here runs once per backend (`history` fixture): they prove the backends mean the
same, the way tests/redis proves it for the stores.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from signaling.domain import ChatMessage, Notification, User
from signaling.errors import NotFound
from signaling.history import History, utcnow
from signaling.history.base import iso

ANN = User(id="ann", name="Ann")
BEN = User(id="ben", name="Ben", avatar="https://example.test/ben.png")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def say(history: History, study_id: str, n: int, user: User = ANN) -> list[ChatMessage]:
    sent = []
    for i in range(n):
        message = ChatMessage(studyId=study_id, content=f"m{i}", user=user, fileId=f"f{i}")
        await history.add_message(message)
        sent.append(message)
    return sent


async def test_study_messages_page_backwards_oldest_first(history: History) -> None:
    study, other = unique("study"), unique("study")
    sent = await say(history, study, 25)
    await say(history, other, 3, BEN)

    newest = await history.study_messages(study, None, 10)
    assert [m.id for m in newest.messages] == [m.id for m in sent[15:]]
    assert newest.has_more is True
    assert newest.messages[0] == sent[15]  # content, user, fileId and createdAt round-trip
    middle = await history.study_messages(study, newest.messages[0].id, 10)
    assert [m.content for m in middle.messages] == [f"m{i}" for i in range(5, 15)]
    oldest = await history.study_messages(study, middle.messages[0].id, 10)
    assert [m.content for m in oldest.messages] == [f"m{i}" for i in range(5)]
    assert oldest.has_more is False
    assert (await history.study_messages(study, sent[0].id, 10)).messages == []

    assert [m.id for m in await history.recent_messages(study, 5)] == [m.id for m in sent[-5:]]
    assert [m.user for m in await history.recent_messages(other, 100)] == [BEN] * 3
    with pytest.raises(NotFound):
        await history.study_messages(study, "no-such-message", 10)
    with pytest.raises(NotFound):  # a message of another study is no cursor here
        await history.study_messages(study, (await history.recent_messages(other, 1))[0].id, 10)


async def test_read_marks_are_kept_once_per_user(history: History) -> None:
    study = unique("study")
    first, second = await say(history, study, 2)
    assert await history.has_message(study, first.id)
    assert not await history.has_message(unique("study"), first.id)
    assert not await history.has_message(study, "nope")
    await history.mark_read(first.id, "ben")
    await history.mark_read(first.id, "ben")  # idempotent
    await history.mark_read(first.id, "cat")
    page = await history.study_messages(study, None, 10)
    assert page.read_by == {first.id: ["ben", "cat"]}
    assert second.id not in page.read_by


async def test_notifications_are_claimed_exactly_once(history: History) -> None:
    user = unique("user")
    notes = [Notification(userId=user, type="invite", message=f"n{i}") for i in range(5)]
    for note in notes:
        await history.add_notification(note, delivered=False)
    elsewhere = Notification(userId=unique("user"), type="t", message="not yours")
    await history.add_notification(elsewhere, delivered=False)
    live = Notification(userId=user, type="t", message="delivered live")
    await history.add_notification(live, delivered=True)

    # Ten sockets of the user connect at once: each notification goes to exactly one.
    claims = await asyncio.gather(*(history.claim_undelivered(user, 100) for _ in range(10)))
    got = [n for claim in claims for n in claim]
    assert sorted(n.id for n in got) == sorted(n.id for n in notes)
    winner = next(claim for claim in claims if claim)
    assert [n.message for n in winner] == [n.message for n in notes][: len(winner)]
    assert winner[0] == notes[0]  # type, message, data, createdAt round-trip
    assert await history.claim_undelivered(user, 100) == []
    assert not await history.claim(notes[0].id) and not await history.claim(live.id)
    assert await history.claim(elsewhere.id) and not await history.claim(elsewhere.id)

    # The limit leaves the rest for the next connect.
    later = [Notification(userId=user, type="t", message=f"l{i}", data={"k": i}) for i in range(3)]
    for note in later:
        await history.add_notification(note, delivered=False)
    assert [n.data for n in await history.claim_undelivered(user, 2)] == [{"k": 0}, {"k": 1}]
    assert [n.id for n in await history.claim_undelivered(user, 2)] == [later[2].id]

    assert not await history.mark_notification_read(notes[0].id, "someone-else")
    assert await history.mark_notification_read(notes[0].id, user)
    assert not await history.mark_notification_read("no-such-notification", user)
    # Reading one that was never delivered counts as delivered too.
    unseen = Notification(userId=user, type="t", message="read elsewhere")
    await history.add_notification(unseen, delivered=False)
    assert await history.mark_notification_read(unseen.id, user)
    assert await history.claim_undelivered(user, 100) == []


async def test_call_history_records_participants_modes_and_chat(history: History) -> None:
    room, call = unique("room"), uuid.uuid4().hex
    t0 = utcnow().replace(microsecond=0)

    def at(seconds: int) -> timedelta:
        return timedelta(seconds=seconds)

    history.call_started(call, room, "study-1", "mesh", t0)
    history.participant_joined(call, "s1", ANN, t0)
    history.participant_joined(call, "s2", BEN, t0 + at(1))
    history.participant_joined(call, "s3", User(id="cat", name="Cat"), t0 + at(2))
    history.mode_changed(call, "sfu", t0 + at(2))
    said = ChatMessage(roomId=room, content="in call", user=BEN)
    await history.add_message(said, call_id=call)
    history.participant_left(call, "s3", t0 + at(5))
    history.mode_changed(call, "mesh", t0 + at(5))
    # s2 leaves and comes back: two rows for one socket.
    history.participant_left(call, "s2", t0 + at(6))
    history.participant_joined(call, "s2", BEN, t0 + at(7))
    history.call_ended(call, t0 + at(10))
    other_call = uuid.uuid4().hex
    history.call_started(other_call, room, None, "sfu", t0 + at(20))
    history.participant_joined(other_call, "s9", ANN, t0 + at(20))

    newest, first = await history.room_history(room, 10, chat=100)
    assert (newest.id, first.id) == (other_call, call)
    assert (first.room_id, first.study_id) == (room, "study-1")
    assert (first.started_at, first.ended_at) == (t0, t0 + at(10))
    assert [(m.mode, m.at) for m in first.modes] == [
        ("mesh", t0),
        ("sfu", t0 + at(2)),
        ("mesh", t0 + at(5)),
    ]
    rows = [
        (p.socket_id, p.user_id, p.user_name, p.joined_at, p.left_at) for p in first.participants
    ]
    assert rows == [
        ("s1", "ann", "Ann", t0, t0 + at(10)),
        ("s2", "ben", "Ben", t0 + at(1), t0 + at(6)),
        ("s3", "cat", "Cat", t0 + at(2), t0 + at(5)),
        ("s2", "ben", "Ben", t0 + at(7), t0 + at(10)),
    ]
    assert [m.id for m in first.chat] == [said.id]
    wire = first.wire(now=t0 + at(60))
    assert wire["durationS"] == 10 and wire["endedAt"] == iso(t0 + at(10))
    assert [p["durationS"] for p in wire["participants"]] == [10, 5, 3, 3]
    # A call still going on counts up to now.
    assert newest.ended_at is None
    assert newest.wire(now=t0 + at(50))["participants"][0]["durationS"] == 30
    assert len(await history.room_history(room, 1, chat=100)) == 1
    assert await history.room_history(unique("room"), 10, chat=100) == []


async def test_purge_deletes_only_what_is_older_than_the_cutoff(history: History) -> None:
    study, room, user = unique("study"), unique("room"), unique("user")
    old = utcnow() - timedelta(days=40)
    old_message = ChatMessage(studyId=study, content="old", user=ANN, createdAt=iso(old))
    await history.add_message(old_message)
    await history.mark_read(old_message.id, "ben")
    (new_message,) = await say(history, study, 1)
    await history.add_notification(
        Notification(userId=user, type="t", message="old", createdAt=iso(old)), delivered=False
    )
    await history.add_notification(Notification(userId=user, type="t", message="new"), False)
    old_call, open_call = uuid.uuid4().hex, uuid.uuid4().hex
    history.call_started(old_call, room, None, "mesh", old)
    history.participant_joined(old_call, "s1", ANN, old)
    history.call_ended(old_call, old + timedelta(minutes=5))
    history.call_started(open_call, room, None, "mesh", old)  # still open: never purged

    await history.purge(utcnow() - timedelta(days=30))
    if history.name != "memory":  # memory keeps study chat in the store's bounded lists
        assert [m.id for m in await history.recent_messages(study, 10)] == [new_message.id]
    assert [n.message for n in await history.claim_undelivered(user, 10)] == ["new"]
    assert [c.id for c in await history.room_history(room, 10, chat=10)] == [open_call]
