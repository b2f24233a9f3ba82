"""Group commit: every write of a node goes through one writer task, one transaction per batch.

A message's ack waits for its commit, but it does not pay a commit of its own: whatever arrives
while a transaction is being committed goes into the next one, so the commit cost is shared by
everyone who wrote in the meantime. Under light load a batch is one write and nothing waits for
a timer; under heavy load batches grow up to `max_batch`.

Operations run in arrival order, as synchronous SQLAlchemy code on one connection: consecutive
rows of the same statement become one executemany. How a batch reaches the database is the
backend's `BatchRunner`: SQLite runs the whole transaction in the writer's own thread (one
hand-off per batch instead of one per statement: each hand-off waits for a turn of a busy
event loop), PostgreSQL runs it on a dedicated asyncpg connection. If a batch fails, each
operation is retried in a transaction of its own, so one bad row fails only its own caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable

from signaling.history.base import HistoryUnavailable
from signaling.history.database import IMMEDIATE

log = logging.getLogger(__name__)

Run = Callable[[Connection], Any]


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


def apply(conn: Connection, batch: list[Op]) -> list[Any]:
    """Runs the batch in order inside the caller's transaction."""
    results: list[Any] = []
    i = 0
    while i < len(batch):
        op = batch[i]
        if op.run is not None:
            results.append(op.run(conn))
            i += 1
            continue
        j = i + 1
        while j < len(batch) and batch[j].statement is op.statement:
            j += 1
        rows = [o.params for o in batch[i:j] if o.params is not None]
        assert op.statement is not None and rows
        conn.execute(op.statement, rows if len(rows) > 1 else rows[0])
        results.extend([None] * (j - i))
        i = j
    return results


class BatchRunner(Protocol):
    async def run(self, batch: list[Op]) -> list[Any]:
        """Applies the batch in one transaction and commits it."""

    async def close(self) -> None: ...


class ThreadBatchRunner:
    """SQLite: the writer's own connection, used from one thread; the write lock is taken at
    BEGIN (IMMEDIATE), so another process writing the file makes us wait, not fail."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
        self._conn: Connection | None = None

    def _transaction(self, batch: list[Op]) -> list[Any]:
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(**{IMMEDIATE: True})
        try:
            with self._conn.begin():
                return apply(self._conn, batch)
        except Exception:
            self._conn.close()
            self._conn = None
            raise

    async def run(self, batch: list[Op]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._transaction, batch)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


class ConnectionBatchRunner:
    """PostgreSQL: one connection kept for the writer (no pool checkout per batch)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None

    async def run(self, batch: list[Op]) -> list[Any]:
        if self._conn is None:
            self._conn = await self.engine.connect()
        try:
            async with self._conn.begin():
                results: list[Any] = await self._conn.run_sync(apply, batch)
                return results
        except Exception:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class GroupWriter:
    def __init__(self, runner: BatchRunner, max_batch: int = 512) -> None:
        self.runner = runner
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
        if task is not None:
            self._queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runner.close()

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
            results = await self.runner.run(batch)
        except (SQLAlchemyError, OSError) as exc:
            if len(batch) > 1:
                # The exception's text carries the rows (message contents): only its type.
                log.warning(
                    "a batch of %d writes failed (%s); retrying one by one",
                    len(batch),
                    type(exc).__name__,
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


__all__ = ["BatchRunner", "ConnectionBatchRunner", "GroupWriter", "Op", "ThreadBatchRunner"]
