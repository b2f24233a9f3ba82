"""The narrow ports handlers are wired with: each handler receives only those it uses.

The application root (`signaling.app`) builds the parts that implement these (the sockets
of `signaling.sockets`, the dispatcher of `signaling.dispatch`, the media pool of `sfu`)
and hands each handler what it needs, so that a handler's constructor says what it touches:
none of them sees the Socket.IO server, the whole application or another handler's state.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from signaling.auth import Identity
from signaling.errors import SignalingError
from signaling.ratelimit import TokenBucket

if TYPE_CHECKING:
    from sfu.commands import Command, Event, Reply
    from sfu.pool import Bus

P = TypeVar("P")


@dataclass(eq=False)
class Conn:
    """A socket connected to this node: who it is and its event budget."""

    sid: str
    identity: Identity
    bucket: TokenBucket
    connected_at: float = field(default_factory=time.monotonic)
    limited_notice_at: float = 0.0

    @property
    def user_id(self) -> str:
        return self.identity.user.id


Handler = Callable[[Conn, P], Awaitable[Any]]
"""`handler(conn, payload) -> ack payload | None`, behind the dispatcher."""
AckError = Callable[[SignalingError], Any]
"""How a refused event's ack looks in its dialect (`errors.error_ack`, `errors.guide_ack`)."""


class Events(Protocol):
    """Registers a client event behind rate limiting, validation and the one error mapping."""

    def on(
        self, event: str, parse: Callable[[Any], P], *, ack_error: AckError = ...
    ) -> Callable[[Handler[P]], Handler[P]]: ...


class Emitter(Protocol):
    """Emits to sockets on any node (a socket id, a list of them, or a named group)."""

    async def emit(
        self, event: str, data: Any, to: str | Iterable[str], skip: str | None = None
    ) -> None:
        """To one socket or a list of socket ids (``skip`` left out of the list)."""
        ...

    async def emit_group(self, event: str, data: Any, group: str, skip: str | None = None) -> None:
        """To every socket in ``group`` (`user:<id>`, `study:<id>`), on every node."""
        ...


class Groups(Protocol):
    """Named groups of sockets (Socket.IO rooms) that `Emitter.emit_group` reaches."""

    async def enter_group(self, sid: str, group: str) -> None: ...

    async def leave_group(self, sid: str, group: str) -> None: ...


class Spawner(Protocol):
    """Background tasks owned by the node: logged when they fail, cancelled on shutdown."""

    def spawn(self, coro: Awaitable[Any], name: str) -> Any: ...


class Connections(Protocol):
    """The sockets this node holds."""

    def local(self, sid: str) -> bool:
        """Whether ``sid`` is connected to this node (not another node, not gone)."""
        ...

    def conn(self, sid: str) -> Conn | None: ...

    @property
    def count(self) -> int: ...


class MediaPort(Protocol):
    """What signaling needs from the SFU: `sfu.WorkerPool`, driven by `sfu.commands`.

    `on_event` is where the plane's own initiatives arrive (an offer to a client, a
    connection let go); the media router sets it before `start`.
    """

    on_event: Callable[[Event], Awaitable[None]]

    async def start(self) -> None: ...

    async def run(self, command: Command) -> Reply: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    # Rooms across nodes (with Redis): the pools of the nodes talk over a bus.
    def use_bus(self, node: str, bus: Bus) -> None: ...

    async def on_bus(self, message: dict[str, Any]) -> None: ...

    async def node_gone(self, node: str) -> None: ...
