"""Group commit: every write of a node goes through one writer task, one transaction per batch.

A message's ack waits for its commit, but it does not pay a commit of its own: whatever arrives
while a transaction is being committed (an fsync on SQLite, a WAL flush on PostgreSQL) goes
into the next one, so the commit cost is shared by everyone who wrote in the meantime. Under
light load a batch is one write and nothing waits for a timer; under heavy load batches grow
up to `max_batch` and the commit rate stays what the disk can do.

Operations run in arrival order. Consecutive inserts of the same statement become one
`executemany`. If a batch fails, each operation is retried in a transaction of its own, so one
bad row fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

from signaling.history.base import HistoryUnavailable
from signaling.history.database import write_transaction

log = logging.getLogger(__name__)

Run = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(eq=False)
class Op:
    """One write: a statement with its parameters (batchable), or a function of the connection."""

    statement: Executable | None = None
    params: dict[str, Any] | None = None
    run: Run | None = None
    future: asyncio.Future[Any] | None = None

    def resolve(self, result: Any) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)


class GroupWriter:
    def __init__(self, engine: AsyncEngine, max_batch: int = 512) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Op | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.ops = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="history-writer")

    async def close(self) -> None:
        """Commits everything queued so far, then stops."""
        task, self._task = self._task, None
        if task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def write(self, op: Op) -> Any:
        """Queues `op` and waits until its transaction committed."""
        if self._task is None:
            raise HistoryUnavailable("history is closed; nothing was saved")
        op.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(op)
        return await op.future

    def write_behind(self, op: Op) -> None:
        """Queues `op` without waiting: committed in order with the others, errors logged."""
        if self._task is None:
            log.warning("history is closed; a call-history event was dropped")
            return
        self._queue.put_nowait(op)

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stopping = True
                    break
                batch.append(op)
            await self._commit(batch)

    async def _commit(self, batch: list[Op]) -> None:
        self.batches += 1
        self.ops += len(batch)
        try:
            async with write_transaction(self.engine) as conn:
                results = await _apply(conn, batch)
        except (SQLAlchemyError, OSError) as exc:
            if len(batch) > 1:
                log.warning(
                    "a batch of %d writes failed (%s); retrying one by one", len(batch), exc
                )
                for op in batch:
                    await self._commit([op])
                return
            log.error("history write failed: %s", type(exc).__name__)
            batch[0].fail(HistoryUnavailable("could not save; try again"))
            return
        except Exception:  # a bug: fail the callers, keep the writer alive
            log.exception("history writer failed")
            for op in batch:
                op.fail(HistoryUnavailable("could not save; try again"))
            return
        for op, result in zip(batch, results, strict=True):
            op.resolve(result)


async def _apply(conn: AsyncConnection, batch: list[Op]) -> list[Any]:
    """Runs the batch in order; consecutive rows of one statement go as one executemany."""
    results: list[Any] = []
    i = 0
    while i < len(batch):
        op = batch[i]
        if op.run is not None:
            results.append(await op.run(conn))
            i += 1
            continue
        assert op.statement is not None and op.params is not None
        j = i + 1
        while j < len(batch) and batch[j].statement is op.statement:
            j += 1
        rows = [o.params for o in batch[i:j] if o.params is not None]
        await conn.execute(op.statement, rows if len(rows) > 1 else rows[0])
        results.extend([None] * (j - i))
        i = j
    return results


__all__ = ["GroupWriter", "Op"]
