"""The storage seam: handlers edit domain records through short transactions.

Every edit runs under a per-record lock (an asyncio lock in memory, a Redis lock across nodes),
so two joins racing on two nodes see each other. Handlers never hold two locks at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from signaling.domain import Record

R = TypeVar("R", bound=Record)


@dataclass
class Slot(Generic[R]):
    """The record under edit: assign `value` to replace it, `None` to delete it."""

    value: R | None


class StoreError(Exception):
    """The store could not serve an edit; the message names no keys (it may reach a client).

    A storage failure, not a client's mistake: the dispatcher maps it to INTERNAL with this
    message (the client may try again); the details are in the store's log.
    """

    @property
    def message(self) -> str:
        return str(self.args[0])


class StoreBusy(StoreError):
    """A record stayed locked by another node (or this edit lost its lock): try again."""


class Store(ABC):
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def start(self) -> None:  # noqa: B027
        """Connects; the default store has nothing to connect to."""

    async def close(self) -> None:  # noqa: B027
        """Releases connections."""

    @property
    def shared(self) -> bool:
        """True when other nodes see this store (Redis)."""
        return False

    @abstractmethod
    def edit(self, model: type[R], key: str) -> AbstractAsyncContextManager[Slot[R]]:
        """Locks the record, yields it (or None) and saves what the caller left in the slot."""

    @abstractmethod
    async def load(self, model: type[R], key: str) -> R | None:
        """A snapshot of one record."""

    @abstractmethod
    async def load_all(self, model: type[R]) -> list[R]:
        """Snapshots of every record of a kind (for listings and dead-node sweeps)."""

    @abstractmethod
    async def append_capped(self, name: str, key: str, item: str, cap: int) -> None:
        """Appends to a bounded list (chat history), dropping the oldest beyond `cap`."""

    @abstractmethod
    async def read_list(self, name: str, key: str) -> list[str]:
        """The bounded list, oldest first."""

    @abstractmethod
    async def delete_list(self, name: str, key: str) -> None: ...

    @abstractmethod
    async def set_index(self, name: str, field: str, value: str | None) -> None:
        """A flat field -> value index (socket -> room) read on the relay hot path."""

    @abstractmethod
    async def get_index(self, name: str, *fields: str) -> list[str | None]: ...

    @abstractmethod
    async def heartbeat(self, ttl_s: float) -> None:
        """Marks this node alive for `ttl_s` seconds and registers it as known."""

    @abstractmethod
    async def dead_nodes(self) -> list[str]:
        """Known nodes whose heartbeat has expired."""

    @abstractmethod
    async def forget_node(self, node_id: str) -> None: ...

    @abstractmethod
    async def claim(self, name: str, ttl_s: float) -> bool:
        """True for exactly one caller across nodes until `ttl_s` passes (sweep leadership)."""

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Delivers `message` to the subscribers of `channel` on every node."""

    @abstractmethod
    async def subscribe(self, channel: str, handler: Callable[[str], Awaitable[None]]) -> None:
        """Calls `handler` for each message published on `channel` until `close()`."""
