"""Which rooms of one kind each socket is in: the one membership seam of every concern.

Video rooms, guide rooms and studies (and pairing, which moves sockets into video rooms)
all need the same things: the room a socket is in (to check a signal, to leave before
joining another), entering and leaving, whether two sockets share a room, and, when a node
dies, its sockets taken out of every room. The owner of the rooms (the handler) keeps the
rules of its rooms; this seam keeps the socket -> room mapping and the loops over it.

Where the mapping lives: a room kind whose signals cross nodes (video, guide: a socket on
one node signals a socket on another) keeps one room per socket in a store index, which
every node reads. Studies are asked about only by the socket's own node, and a socket may
be in several at once: their mapping is this node's memory (`index=None`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from operator import attrgetter
from typing import Generic, TypeVar

from signaling.domain import Record
from signaling.errors import NotInRoom
from signaling.store import Store

R = TypeVar("R", bound=Record)

_room_id = attrgetter("id")  # every room record (VideoRoom, GuideRoom, Study) has an id

Leave = Callable[[str, str], Awaitable[None]]
"""`leave(sid, room_id)`: the owner's rule for a socket leaving one of its rooms."""


class Membership(Generic[R]):
    def __init__(
        self,
        store: Store,
        record: type[R],
        members: Callable[[R], Iterable[tuple[str, str]]],
        leave: Leave,
        *,
        index: str | None,
    ) -> None:
        """`members(room)`: each member's ``(socket id, node)``; `leave`: the owner's leave."""
        self.store = store
        self.record = record
        self.members = members
        self.owner_leave = leave
        self.index = index
        self._local: dict[str, set[str]] = {}  # with index=None: socket -> rooms

    async def room_of(self, sid: str) -> str | None:
        """The socket's room (with several, any one of them)."""
        rooms = await self.rooms_of(sid)
        return rooms[0] if rooms else None

    async def rooms_of(self, sid: str) -> list[str]:
        if self.index is None:
            return sorted(self._local.get(sid, ()))
        (room_id,) = await self.store.get_index(self.index, sid)
        return [] if room_id is None else [room_id]

    async def check(self, sid: str, room_id: str) -> None:
        """Refuses a socket that is not in ``room_id`` (`NOT_IN_ROOM`)."""
        if room_id not in await self.rooms_of(sid):
            raise NotInRoom("not in this room")

    def holds(self, sid: str, room_id: str) -> bool:
        """Whether a socket of this node is in ``room_id`` (the local mapping only)."""
        return room_id in self._local.get(sid, ())

    async def peers(self, sid: str, other: str) -> tuple[str | None, bool]:
        """The socket's room, and whether ``other`` is in that same room."""
        if self.index is None:
            mine = await self.room_of(sid)
            return mine, mine is not None and self.holds(other, mine)
        mine, theirs = await self.store.get_index(self.index, sid, other)
        return mine, mine is not None and theirs == mine

    async def enter(self, sid: str, room_id: str) -> None:
        """Records that the socket is in ``room_id`` (after the owner admitted it)."""
        if self.index is None:
            self._local.setdefault(sid, set()).add(room_id)
        else:
            await self.store.set_index(self.index, sid, room_id)

    async def forget(self, sids: Iterable[str], room_id: str) -> None:
        """Records that the sockets are no longer in ``room_id`` (the owner let them go)."""
        for sid in sids:
            if self.index is None:
                rooms = self._local.get(sid)
                if rooms is not None:
                    rooms.discard(room_id)
                    if not rooms:
                        del self._local[sid]
            else:
                await self.store.set_index(self.index, sid, None)

    async def leave(self, sid: str, *, keep: str | None = None) -> None:
        """The socket leaves whatever room it is in (but ``keep``), by the owner's rule."""
        for room_id in await self.rooms_of(sid):
            if room_id != keep:
                await self.owner_leave(sid, room_id)

    async def purge_node(self, node_id: str, leave: Leave | None = None) -> None:
        """A dead node's sockets leave every room of this kind (`leave`: instead of the
        owner's usual rule, for what a dead node's sockets need)."""
        for room in await self.store.load_all(self.record):
            room_id: str = _room_id(room)
            for sid, node in list(self.members(room)):
                if node == node_id:
                    await (leave or self.owner_leave)(sid, room_id)
