"""Rooms, participants, studies and the pairing queue as plain typed objects.

Nothing here knows about Socket.IO, aiohttp or aiortc: the handlers load these objects from a
`Store`, call a method that applies one rule of the contract, save them and emit what the method
returned. pydantic is used only to (de)serialise them for the Redis store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from signaling.errors import Forbidden, NotFound, RoomFull

Topology = Literal["mesh", "sfu"]
Policy = Literal["mesh", "sfu", "auto"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return uuid.uuid4().hex


class Record(BaseModel):
    """A stored object: `kind` names its key space in the store."""

    model_config = ConfigDict(validate_assignment=False)
    kind: ClassVar[str] = "record"


class User(BaseModel):
    id: str
    name: str
    avatar: str | None = None


class Participant(BaseModel):
    socketId: str
    userId: str
    user: User
    isMuted: bool = False
    isVideoOff: bool = False
    isSharingScreen: bool = False
    joinedAt: str = Field(default_factory=now_iso)
    node: str = ""
    sfu: bool = False
    """SFU-aware (said so at join); else a mesh client, served by the SFU as its peers."""

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude={"node", "sfu"})

    def media_state(self) -> dict[str, Any]:
        return {
            "socketId": self.socketId,
            "userId": self.userId,
            "isMuted": self.isMuted,
            "isVideoOff": self.isVideoOff,
            "isSharingScreen": self.isSharingScreen,
        }


class ChatMessage(BaseModel):
    id: str = Field(default_factory=new_id)
    roomId: str | None = None
    studyId: str | None = None
    content: str
    fileId: str | None = None
    user: User
    createdAt: str = Field(default_factory=now_iso)

    def wire(self) -> dict[str, Any]:
        """Optional fields are left out when unset; `user` keeps its `avatar: null`."""
        data = self.model_dump()
        for optional in ("roomId", "studyId", "fileId"):
            if data[optional] is None:
                del data[optional]
        return data


class Notification(BaseModel):
    """A notification the application pushed for one user (docs/protocol.md section 4)."""

    id: str = Field(default_factory=new_id)
    userId: str
    type: str
    message: str
    studyId: str | None = None
    data: dict[str, Any] | None = None
    createdAt: str = Field(default_factory=now_iso)

    def wire(self) -> dict[str, Any]:
        """`{ id, type, message, studyId?, data? }`: optional fields left out when unset."""
        data: dict[str, Any] = {"id": self.id, "type": self.type, "message": self.message}
        if self.studyId is not None:
            data["studyId"] = self.studyId
        if self.data is not None:
            data["data"] = self.data
        return data


class ModeChange(BaseModel):
    previous: Topology
    current: Topology


class VideoRoom(Record):
    kind: ClassVar[str] = "video"

    id: str
    policy: Policy
    mode: Topology
    meshMax: int
    createdAt: str = Field(default_factory=now_iso)
    studyId: str | None = None
    participants: dict[str, Participant] = Field(default_factory=dict)
    callId: str = Field(default_factory=new_id)
    """One call = the room from its first join until it empties (call history's key)."""

    @classmethod
    def open(cls, room_id: str, policy: Policy, mesh_max: int, study_id: str | None) -> VideoRoom:
        mode: Topology = "sfu" if policy == "sfu" else "mesh"
        return cls(id=room_id, policy=policy, mode=mode, meshMax=mesh_max, studyId=study_id)

    def others(self, socket_id: str) -> list[Participant]:
        return [p for sid, p in self.participants.items() if sid != socket_id]

    def join(self, participant: Participant, max_participants: int) -> ModeChange | None:
        if participant.socketId in self.participants:
            self.participants[participant.socketId] = participant
            return None
        if len(self.participants) >= max_participants:
            raise RoomFull(f"room is full ({max_participants} participants)")
        self.participants[participant.socketId] = participant
        return self._apply_policy()

    def leave(self, socket_id: str) -> tuple[Participant | None, ModeChange | None]:
        participant = self.participants.pop(socket_id, None)
        if participant is None:
            return None, None
        return participant, self._apply_policy()

    @property
    def empty(self) -> bool:
        return not self.participants

    def _apply_policy(self) -> ModeChange | None:
        """`auto`: mesh up to meshMax, sfu beyond, back to mesh at 2 or fewer (hysteresis)."""
        if self.policy != "auto":
            return None
        count = len(self.participants)
        target: Topology = self.mode
        if self.mode == "mesh" and count > self.meshMax:
            target = "sfu"
        elif self.mode == "sfu" and count <= 2:
            target = "mesh"
        if target == self.mode:
            return None
        change = ModeChange(previous=self.mode, current=target)
        self.mode = target
        return change

    def set_media(
        self,
        socket_id: str,
        *,
        is_muted: bool | None = None,
        is_video_off: bool | None = None,
        is_sharing_screen: bool | None = None,
    ) -> Participant:
        participant = self.participants.get(socket_id)
        if participant is None:
            raise NotFound("not in this room")
        if is_muted is not None:
            participant.isMuted = is_muted
        if is_video_off is not None:
            participant.isVideoOff = is_video_off
        if is_sharing_screen is not None:
            participant.isSharingScreen = is_sharing_screen
        return participant

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": f"video:{self.id}",
            "kind": "video",
            "userCount": len(self.participants),
            "mode": self.mode,
            "createdAt": self.createdAt,
        }


class GuideMember(BaseModel):
    socketId: str
    node: str = ""


class GuideRoom(Record):
    """A room of the guide dialect: created by its host, closed when the host leaves."""

    kind: ClassVar[str] = "guide"

    id: str
    host: str
    members: list[GuideMember] = Field(default_factory=list)
    createdAt: str = Field(default_factory=now_iso)
    mode: Topology = "mesh"
    """Fixed at creation (`GUIDE_ROOM_MODE`): the guide's clients know no switch."""
    mediaNode: str | None = None
    """The node whose SFU carries the room's media, when it is sfu."""

    @property
    def socket_ids(self) -> list[str]:
        return [m.socketId for m in self.members]

    def join(self, member: GuideMember, max_participants: int) -> list[str]:
        existing = [sid for sid in self.socket_ids if sid != member.socketId]
        if member.socketId not in self.socket_ids:
            if len(self.members) >= max_participants:
                raise RoomFull(f"room is full ({max_participants} participants)")
            self.members.append(member)
        return existing

    def leave(self, socket_id: str) -> bool:
        before = len(self.members)
        self.members = [m for m in self.members if m.socketId != socket_id]
        return len(self.members) != before

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.id,
            "kind": "guide",
            "userCount": len(self.members),
            "mode": self.mode,
            "createdAt": self.createdAt,
        }


class StudyMember(BaseModel):
    socketId: str
    userId: str
    user: User
    node: str = ""


class Study(Record):
    """Who is online in a study; presence is per user, sockets are counted per user."""

    kind: ClassVar[str] = "study"

    id: str
    members: dict[str, StudyMember] = Field(default_factory=dict)

    def sockets_of(self, user_id: str) -> int:
        return sum(1 for m in self.members.values() if m.userId == user_id)

    def join(self, member: StudyMember) -> bool:
        """Adds the socket; True when it is the user's first socket here (user came online)."""
        first = self.sockets_of(member.userId) == 0
        self.members[member.socketId] = member
        return first

    def leave(self, socket_id: str) -> StudyMember | None:
        """Removes the socket; returns the member when it was the user's last socket here."""
        member = self.members.pop(socket_id, None)
        if member is None or self.sockets_of(member.userId) > 0:
            return None
        return member

    def online_users(self) -> list[User]:
        seen: dict[str, User] = {}
        for m in self.members.values():
            seen.setdefault(m.userId, m.user)
        return list(seen.values())

    @property
    def empty(self) -> bool:
        return not self.members


class UserSockets(Record):
    """Which sockets a user has connected, on any node (is the user online?)."""

    kind: ClassVar[str] = "online"

    userId: str
    sockets: dict[str, str] = Field(default_factory=dict)
    """socket id -> node id"""

    @property
    def online(self) -> bool:
        return bool(self.sockets)


class Waiting(BaseModel):
    socketId: str
    user: User
    node: str = ""
    since: str = Field(default_factory=now_iso)


class Moving(BaseModel):
    """A matched socket on its way into its pair room (see `PairingQueue.moving`)."""

    room: str
    node: str
    """The node the socket is connected to."""
    mover: str
    """The node putting it in the room."""
    gone: bool = False
    """It disconnected meanwhile: the mover takes it out of the room again."""


class PairingQueue(Record):
    kind: ClassVar[str] = "pairing"

    waiting: list[Waiting] = Field(default_factory=list)
    moving: dict[str, Moving] = Field(default_factory=dict)
    """Matched sockets being moved into their pair room, by socket id.

    Moving a socket into its room takes several edits, during which it may disconnect and
    its cleanup run, too early to see it in the room. Its cleanup marks it here instead
    (`depart`), under the queue's lock, and the mover reads the mark (`moved`) once the
    socket is in: whichever comes second takes it out. No ghost, on any number of nodes.
    """

    def request(
        self, entry: Waiting, alive: Callable[[Waiting], bool] = lambda _: True
    ) -> Waiting | None:
        """Matches with the longest-waiting other client, or queues `entry`.

        Waiting entries `alive` says are gone are dropped on the way.
        """
        self.cancel(entry.socketId)
        self.waiting = [w for w in self.waiting if alive(w)]
        for index, candidate in enumerate(self.waiting):
            if candidate.user.id != entry.user.id:
                return self.waiting.pop(index)
        self.waiting.append(entry)
        return None

    def start_move(self, room: str, mover: str, *entries: Waiting) -> None:
        for entry in entries:
            self.moving[entry.socketId] = Moving(room=room, node=entry.node, mover=mover)

    def moved(self, socket_id: str) -> bool:
        """The move of `socket_id` is over; True when it disconnected meanwhile."""
        move = self.moving.pop(socket_id, None)
        return move is not None and move.gone

    def depart(self, socket_id: str) -> bool:
        """A socket disconnected: out of the queue, and marked if it is being moved.

        True when it was waiting.
        """
        move = self.moving.get(socket_id)
        if move is not None:
            move.gone = True
        return self.cancel(socket_id)

    def cancel(self, socket_id: str) -> bool:
        before = len(self.waiting)
        self.waiting = [w for w in self.waiting if w.socketId != socket_id]
        return len(self.waiting) != before

    def forget_node(self, node_id: str) -> None:
        """A dead node's sockets leave the queue; its moves are void, moves of its sockets gone."""
        self.waiting = [w for w in self.waiting if w.node != node_id]
        for socket_id, move in list(self.moving.items()):
            if move.mover == node_id:
                del self.moving[socket_id]
            elif move.node == node_id:
                move.gone = True


def check_room_claim(user_rooms: list[str] | None, role: str | None, room_id: str) -> None:
    """The JWT `rooms` claim limits which rooms a user may join; hosts may join any."""
    if role == "host" or user_rooms is None:
        return
    if room_id not in user_rooms:
        raise Forbidden("not allowed to join this room")


__all__ = [
    "ChatMessage",
    "GuideMember",
    "GuideRoom",
    "ModeChange",
    "Moving",
    "NotFound",
    "Notification",
    "PairingQueue",
    "Participant",
    "Policy",
    "Record",
    "Study",
    "StudyMember",
    "Topology",
    "User",
    "UserSockets",
    "VideoRoom",
    "Waiting",
    "check_room_claim",
    "new_id",
    "now_iso",
]
