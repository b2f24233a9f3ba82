"""Guide rooms the SFU carries (`GUIDE_ROOM_MODE=sfu`): the guide's clients, unchanged.

A client written from the guide (document 004) keeps one connection per member: the joiner
offers to its `existingUsers`, every member offers to a newcomer on `user-joined`, and each
answers every offer it gets. In an sfu guide room each of those offers (`offer { target }`)
is answered by the SFU *as the target* (`answer { from: target }`), on a connection that
carries the target's audio and video under the target's socket id as stream id. Both sides
of a pair offer, and each offer is its own connection, so the SFU never offers on its own
(`offers_to_newcomers=False`), except to move a member's upload: its camera is received on
one of its connections only (the others are answered `sendonly`), and when that one's peer
leaves, another peer's connection is offered afresh, after a `user-left` for that peer so
that the client closes the connection it holds. A data channel (guide section 6.5) is
declined in the answer and refused with an `error` (`INVALID_PAYLOAD`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from signaling.domain import GuideRoom, now_iso
from signaling.errors import InvalidPayload
from signaling.media import Dialect, MediaRouter, Seat
from signaling.ports import Emitter
from signaling.store import Store

SOCKET_ROOM = "guide-sock"  # index: socket id -> guide room id
MEDIA_NODE = "guide-media"  # index: guide room id -> the node carrying its media (sfu rooms)
PREFIX = "guide:"

SEAT = Seat(mesh=True, offers_to_newcomers=False)
"""A guide client offers to newcomers itself (on `user-joined`): the SFU answers it."""


def media_room(room_id: str, id_chars: int) -> str:
    """The SFU's name for guide room ``room_id``: never a video room's (their ids are at
    most ``id_chars`` long, this is longer) nor another guide room's (the length is in it)."""
    name = f"{PREFIX}{len(room_id)}:{room_id}"
    return name + "~" * max(0, id_chars + 1 - len(name))


class GuideMedia:
    """The SFU side of sfu guide rooms, on the video rooms' `MediaRouter`."""

    def __init__(
        self,
        emitter: Emitter,
        store: Store,
        media: MediaRouter,
        room_of: Callable[[str], Awaitable[str | None]],
        *,
        node_id: str,
        sfu: bool,
        id_chars: int,
    ) -> None:
        """`room_of(sid)`: the socket's guide room (the guide rooms' membership seam);
        `sfu`: new guide rooms are carried by the SFU (`GUIDE_ROOM_MODE=sfu`);
        `id_chars`: the longest room id (`MAX_ROOM_ID_CHARS`)."""
        self.emitter = emitter
        self.store = store
        self.router = media
        self.room_of = room_of
        self.node_id = node_id
        self.sfu = sfu
        self._id_chars = id_chars
        media.speak(Dialect(self._owns, "", self._wants_media, self._peer_replaced))

    def node_for_new_room(self) -> str | None:
        """The node to carry a room created now, or None for a mesh room."""
        if self.sfu and self.router.available:
            return self.node_id
        return None

    def room(self, room_id: str) -> str:
        return media_room(room_id, self._id_chars)

    def _owns(self, media_id: str) -> bool:
        return media_id.startswith(PREFIX) and len(media_id) > self._id_chars

    async def _guide_room(self, media_id: str, sid: str) -> GuideRoom | None:
        """The sfu guide room behind ``media_id``, if ``sid`` is still in it."""
        current = await self.room_of(sid)
        if current is None or self.room(current) != media_id:
            return None
        return await self.store.load(GuideRoom, current)

    async def _wants_media(self, media_id: str, sid: str) -> bool:
        room = await self._guide_room(media_id, sid)
        return room is not None and room.mediaNode is not None

    async def _peer_replaced(self, media_id: str, sid: str, peer: str) -> None:
        """Before a fresh connection as ``peer``: the guide's client closes its old one on
        `user-left` (it keeps it otherwise). No `user-joined`: that would make it offer."""
        await self.emitter.emit("user-left", {"userId": peer, "timestamp": now_iso()}, to=sid)

    # Each member's media runs on the node that holds its socket (`signaling.media`);
    # `mediaNode` names the node that opened the room, and marks it sfu.

    async def opened(self, room: GuideRoom) -> None:
        assert room.mediaNode is not None
        await self.store.set_index(MEDIA_NODE, room.id, room.mediaNode)
        await self.router.join(self.room(room.id), room.host, SEAT)

    async def join(self, room: GuideRoom, sid: str) -> None:
        """Before anyone offers to ``sid`` (its ack, the others' `user-joined`)."""
        assert room.mediaNode is not None
        await self.router.join(self.room(room.id), sid, SEAT)

    async def leave(self, room: GuideRoom, sid: str) -> None:
        assert room.mediaNode is not None
        # A guide member leaves from its own node (or its node is dead: `node_gone`).
        await self.router.leave(self.room(room.id), sid, self.node_id)

    async def closed(self, room: GuideRoom) -> None:
        assert room.mediaNode is not None
        await self.store.set_index(MEDIA_NODE, room.id, None)
        await self.router.close_room(self.room(room.id))  # on every node, once

    async def node_of(self, room_id: str) -> str | None:
        """The node that opened the room while it is sfu (None: a mesh room, relayed)."""
        if not self.router.available:  # a mesh-only server relays without the extra read
            return None
        (node,) = await self.store.get_index(MEDIA_NODE, room_id)
        return node

    async def signal(
        self, node: str, room_id: str, sid: str, event: str, target: str, value: Any
    ) -> None:
        """A member's `offer` / `answer` / `ice-candidate` to ``target``: to this node's
        SFU, which holds the member's media and plays ``target`` (nothing is relayed
        between members of an sfu room). ``node``: the node that opened the room."""
        room = self.room(room_id)
        if event == "ice-candidate":
            if value is not None and not isinstance(value, dict):
                raise InvalidPayload("candidate must be an object or null")
            await self.router.candidate(room, sid, target, value)
            return
        kind = "offer" if event == "offer" else "answer"
        if (
            not isinstance(value, dict)
            or value.get("type") != kind
            or not isinstance(value.get("sdp"), str)
        ):
            raise InvalidPayload(f"{kind} must be {{ type: '{kind}', sdp: string }}")
        if kind == "offer":
            await self.router.offer(room, sid, target, value["sdp"])
        else:
            await self.router.answer(room, sid, target, value["sdp"])
