"""The media plane's commands and events as types, serialised once (JSON via orjson).

Signaling drives the media plane only with these, whether the plane runs in its own
process (`sfu.port.LocalMedia`), in a media worker, or on another node: the same types
cross every boundary, and a refusal comes back as `Refused` with its reason in words,
which the caller maps to the wire once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Literal

import orjson

Reason = Literal["failed", "closed", "unanswered"]


@dataclass(frozen=True, slots=True)
class Command:
    """Something signaling asks of the plane; ``room`` and ``participant`` name who."""

    room: str
    participant: str
    name: ClassVar[str] = "command"


@dataclass(frozen=True, slots=True)
class Join(Command):
    """An SFU-aware client: one connection with the SFU, which makes every offer."""

    name: ClassVar[str] = "join"


@dataclass(frozen=True, slots=True)
class JoinMesh(Command):
    """A client that does not know the SFU: the SFU plays each of its peers."""

    offers_to_newcomers: bool = True
    offer_existing: bool = False
    """The SFU offers to it as every participant already there (a room that switched to
    sfu: nobody offers on its own)."""
    name: ClassVar[str] = "join-mesh"


@dataclass(frozen=True, slots=True)
class Leave(Command):
    name: ClassVar[str] = "leave"


@dataclass(frozen=True, slots=True)
class Offer(Command):
    """A mesh client's offer to ``peer``; the reply is the SFU's `Answered`, as ``peer``."""

    peer: str = ""
    sdp: str = ""
    name: ClassVar[str] = "offer"


@dataclass(frozen=True, slots=True)
class Answer(Command):
    """The client's answer to the SFU's offer (``peer`` "sfu", or the peer it played)."""

    peer: str = "sfu"
    sdp: str = ""
    name: ClassVar[str] = "answer"


@dataclass(frozen=True, slots=True)
class Candidate(Command):
    peer: str = "sfu"
    candidate: dict[str, Any] | None = None
    name: ClassVar[str] = "candidate"


@dataclass(frozen=True, slots=True)
class Screen(Command):
    sharing: bool = False
    name: ClassVar[str] = "screen"


@dataclass(frozen=True, slots=True)
class CloseRoom(Command):
    participant: str = ""
    name: ClassVar[str] = "close-room"


@dataclass(frozen=True, slots=True)
class RemoteJoin(Command):
    """``participant`` joined the room on another worker or node (its tracks come later)."""

    greet: bool = True
    """Mesh clients here get an offer as it (a newcomer); not when it was there before them
    and only now heard of (a mesh client's own offer to it named it first)."""
    name: ClassVar[str] = "remote-join"


@dataclass(frozen=True, slots=True)
class RemoteTracks(Command):
    """What a remote participant publishes now, piped from ``origin`` (host, port)."""

    origin: tuple[str, int] = ("", 0)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    """`sfu.pipes.PipedSource.wire()` of each track."""
    name: ClassVar[str] = "remote-tracks"


@dataclass(frozen=True, slots=True)
class RemoteLeave(Command):
    name: ClassVar[str] = "remote-leave"


@dataclass(frozen=True, slots=True)
class PipeTo(Command):
    """Send ``participant``'s tracks down the pipe to ``address`` (host, port)."""

    address: tuple[str, int] = ("", 0)
    name: ClassVar[str] = "pipe-to"


@dataclass(frozen=True, slots=True)
class Unpipe(Command):
    address: tuple[str, int] = ("", 0)
    name: ClassVar[str] = "unpipe"


# ------------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class Done:
    name: ClassVar[str] = "done"


@dataclass(frozen=True, slots=True)
class Answered:
    sdp: str
    declined: list[str] = field(default_factory=list)
    """Kinds of offered m-lines the SFU rejected ("application": a data channel)."""
    name: ClassVar[str] = "answered"


@dataclass(frozen=True, slots=True)
class Refused:
    """The command was refused: a client error (bad SDP, unknown participant), in words."""

    message: str
    name: ClassVar[str] = "refused"


Reply = Done | Answered | Refused


# -------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Event:
    room: str
    participant: str
    name: ClassVar[str] = "event"


@dataclass(frozen=True, slots=True)
class OfferToClient(Event):
    """The SFU offers to the client, speaking as ``peer`` ("sfu" for SFU-aware clients)."""

    peer: str = "sfu"
    sdp: str = ""
    replaces: bool = False
    """A mesh client's fresh connection to ``peer`` in place of one it still holds (its
    upload moved): clients written from the documents must drop the old one first."""
    name: ClassVar[str] = "offer-to-client"


@dataclass(frozen=True, slots=True)
class Published(Event):
    """A local participant's tracks changed (the coordinator tells the other workers)."""

    tracks: list[dict[str, Any]] = field(default_factory=list)
    name: ClassVar[str] = "published"


@dataclass(frozen=True, slots=True)
class MediaLost(Event):
    """The plane let the client's SFU connection go (signaling offers a fresh one)."""

    reason: Reason = "failed"
    name: ClassVar[str] = "media-lost"


_TYPES: dict[str, type[Any]] = {
    t.name: t
    for t in (
        Join,
        JoinMesh,
        Leave,
        Offer,
        Answer,
        Candidate,
        Screen,
        CloseRoom,
        RemoteJoin,
        RemoteTracks,
        RemoteLeave,
        PipeTo,
        Unpipe,
        Published,
        Done,
        Answered,
        Refused,
        OfferToClient,
        MediaLost,
    )
}

Message = Command | Reply | Event


def encode(message: Message) -> bytes:
    """One message as JSON: its fields and its type name under ``"t"``."""
    return orjson.dumps({"t": message.name, **asdict(message)})


def decode(data: bytes | str) -> Message:
    """The message ``encode`` made (ValueError for anything else)."""
    raw = orjson.loads(data)
    if not isinstance(raw, dict):
        raise ValueError("a message is a JSON object")
    kind = _TYPES.get(raw.pop("t", None))
    if kind is None:
        raise ValueError("unknown message type")
    names = {f.name for f in fields(kind)}
    values = {k: v for k, v in raw.items() if k in names}
    for name in ("origin", "address"):  # JSON has no tuples
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    message: Message = kind(**values)
    return message
