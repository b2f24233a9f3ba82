"""Typed client payloads, validated at the edge; limits: `Limits` (docs/protocol.md section 6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from signaling.errors import InvalidPayload, TooLarge

# Hard caps that hold whatever the configuration says; the configurable limits
# (SDP, room id, chat) are checked in `Limits` so that they name the right error code.
ID_MAX = 256


def model_parser(model: type[BaseModel]) -> Callable[[Any], Any]:
    """The parse function `Events.on` takes, from a payload model."""
    return model.model_validate


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


NonEmptyId = Field(min_length=1, max_length=ID_MAX)


class Description(Payload):
    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: StrictStr = ""


class Candidate(Payload):
    candidate: StrictStr = Field(default="", max_length=2048)
    sdpMid: StrictStr | None = Field(default=None, max_length=64)
    sdpMLineIndex: int | None = Field(default=None, ge=0, le=1024)
    usernameFragment: StrictStr | None = Field(default=None, max_length=256)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class JoinRoom(Payload):
    roomId: StrictStr = Field(min_length=1)
    studyId: StrictStr | None = Field(default=None, min_length=1, max_length=ID_MAX)
    sfu: StrictBool = False
    """The client is SFU-aware: in an sfu room it answers the offers of the peer "sfu".
    Every other client is a mesh client, which the SFU serves as each of its peers."""


class RoomRef(Payload):
    roomId: StrictStr = Field(min_length=1)


class Relayed(Payload):
    """A signal the relay passes on as the client built it: validated, then sent verbatim.

    The documents' server relays `offer` / `answer` / `candidate` untouched; a model dump
    would drop fields the model does not name and add defaults the client never sent.
    """

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(cls, value: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        model = handler(value)
        if isinstance(value, dict):
            model._raw = value
        return model

    def verbatim(self, key: str) -> Any:
        """The field exactly as the client sent it (None when absent)."""
        return self._raw.get(key)


class Offer(Relayed):
    to: StrictStr = NonEmptyId
    offer: Description


class Answer(Relayed):
    to: StrictStr = NonEmptyId
    answer: Description


class IceCandidate(Relayed):
    to: StrictStr = NonEmptyId
    candidate: Candidate | None = None

    @field_validator("candidate", mode="before")
    @classmethod
    def _empty_is_end(cls, value: Any) -> Any:
        # Browsers signal the end of candidates with null or an empty candidate.
        return None if value == "" else value


class ToggleAudio(Payload):
    roomId: StrictStr = Field(min_length=1)
    isMuted: StrictBool


class ToggleVideo(Payload):
    roomId: StrictStr = Field(min_length=1)
    isVideoOff: StrictBool


class VideoChat(Payload):
    roomId: StrictStr = Field(min_length=1)
    content: StrictStr = Field(min_length=1)


class GuideOffer(Payload):
    target: StrictStr = NonEmptyId
    offer: dict[str, Any]


class GuideAnswer(Payload):
    target: StrictStr = NonEmptyId
    answer: dict[str, Any]


class GuideCandidate(Payload):
    target: StrictStr = NonEmptyId
    candidate: dict[str, Any] | None = None


class StudyRef(Payload):
    studyId: StrictStr = NonEmptyId


class StudyMessage(Payload):
    studyId: StrictStr = NonEmptyId
    content: StrictStr = Field(min_length=1)
    fileId: StrictStr | None = Field(default=None, max_length=ID_MAX)


class ReadReceipt(Payload):
    messageId: StrictStr = NonEmptyId
    studyId: StrictStr | None = Field(default=None, max_length=ID_MAX)


class NotificationRead(Payload):
    notificationId: StrictStr = NonEmptyId


class Empty(Payload):
    pass


# HTTP API bodies.
class NotificationIn(Payload):
    userId: StrictStr = NonEmptyId
    type: StrictStr = Field(min_length=1, max_length=64)
    message: StrictStr = Field(max_length=4000)
    studyId: StrictStr | None = Field(default=None, max_length=ID_MAX)
    data: dict[str, Any] | None = None


class MessagesQuery(Payload):
    """`GET /api/studies/{studyId}/messages?before=&limit=`"""

    before: StrictStr | None = Field(default=None, min_length=1, max_length=ID_MAX)
    limit: int = Field(default=50, ge=1, le=200)


class RoomHistoryQuery(Payload):
    """`GET /api/rooms/{roomId}/history?limit=`"""

    limit: int = Field(default=20, ge=1, le=100)


class StudyEventIn(Payload):
    event: Literal["task-updated", "task-assigned"]
    data: dict[str, Any]


class Limits:
    """The configurable limits, each mapped to its error code."""

    def __init__(self, *, sdp_chars: int, room_id_chars: int, chat_chars: int) -> None:
        self.sdp_chars = sdp_chars
        self.room_id_chars = room_id_chars
        self.chat_chars = chat_chars

    def room_id(self, room_id: str) -> str:
        if len(room_id) > self.room_id_chars:
            raise InvalidPayload(f"roomId is longer than {self.room_id_chars} characters")
        return room_id

    def sdp(self, description: Description) -> Description:
        if len(description.sdp) > self.sdp_chars:
            raise TooLarge(f"SDP is longer than {self.sdp_chars} characters")
        return description

    def guide_description(self, encoded_len: int) -> None:
        if encoded_len > self.sdp_chars:
            raise TooLarge(f"description is larger than {self.sdp_chars} characters")

    def chat(self, content: str) -> str:
        if len(content) > self.chat_chars:
            raise TooLarge(f"message is longer than {self.chat_chars} characters")
        if not content.strip():
            raise InvalidPayload("message is empty")
        return content
