"""Group commit: every write of a node goes through one writer, one transaction per batch.

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
import concurrent.futures
import contextlib
import logging
import time
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
from signaling.history.database import IMMEDIATE, checkpoint

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


Done = Callable[["asyncio.Future[list[Any]] | concurrent.futures.Future[list[Any]]"], None]


class BatchRunner(Protocol):
    def submit(self, batch: list[Op], done: Done) -> None:
        """Starts applying the batch in one transaction; calls `done(future)` on the event
        loop's thread once it committed (or failed)."""

    async def close(self) -> None: ...


class ThreadBatchRunner:
    """SQLite with `synchronous=FULL`: every commit fsyncs, so it never runs on the event loop;
    the writer's own connection is used from one thread. The write lock is taken at BEGIN
    (IMMEDIATE), so another process writing the file makes us wait, not fail."""

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

    def submit(self, batch: list[Op], done: Done) -> None:
        loop = asyncio.get_running_loop()
        future = self._thread.submit(self._transaction, batch)
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(done, f))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


class LoopBatchRunner:
    """SQLite with `synchronous=NORMAL`: a commit writes the WAL without fsync (tens of µs), so
    the batch runs on the event loop itself, in the turn after its first write was queued
    (everything queued in that turn joins it). No thread: a writer thread would have to win
    the GIL back from a busy event loop after every statement, which costs milliseconds.
    Checkpoints, which fsync, run in a thread of their own, at most once per `checkpoint_s`."""

    def __init__(self, engine: Engine, path: str, checkpoint_s: float = 1.0) -> None:
        self.engine = engine
        self.path = path
        self.checkpoint_s = checkpoint_s
        self._conn: Connection | None = None
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._checkpoint: concurrent.futures.Future[None] | None = None
        self._checkpointed_at = 0.0

    def submit(self, batch: list[Op], done: Done) -> None:
        asyncio.get_running_loop().call_soon(self._run, batch, done)

    def _run(self, batch: list[Op], done: Done) -> None:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self._conn is None:
            self._conn = self.engine.connect().execution_options(**{IMMEDIATE: True})
        try:
            with self._conn.begin():
                future.set_result(apply(self._conn, batch))
        except Exception as exc:
            self._conn.close()
            self._conn = None
            future.set_exception(exc)
        done(future)
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        running = self._checkpoint is not None and not self._checkpoint.done()
        if running or now - self._checkpointed_at < self.checkpoint_s:
            return
        self._checkpointed_at = now
        self._checkpoint = self._checkpointer.submit(checkpoint, self.path)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._checkpointer, checkpoint, self.path)
        self._checkpointer.shutdown(wait=True)
        self.engine.dispose()


class ConnectionBatchRunner:
    """PostgreSQL: one connection kept for the writer (no pool checkout per batch)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._task: asyncio.Task[list[Any]] | None = None  # the loop keeps only weak refs

    async def _transaction(self, batch: list[Op]) -> list[Any]:
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

    def submit(self, batch: list[Op], done: Done) -> None:
        self._task = asyncio.create_task(self._transaction(batch), name="history-commit")
        self._task.add_done_callback(done)

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class GroupWriter:
    """One transaction in flight at a time; what arrives meanwhile is the next batch.

    No task and no timer: a write to an idle writer starts its transaction at once, and the
    end of a transaction starts the next batch from the same callback."""

    def __init__(self, runner: BatchRunner, max_batch: int = 512) -> None:
        self.runner = runner
        self.max_batch = max_batch
        self._pending: list[Op] = []
        self._solo: list[Op] = []
        """a failed batch's operations, retried one per transaction"""
        self._busy = False
        self._open = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.batches = 0
        self.ops = 0

    def start(self) -> None:
        self._open = True

    async def close(self) -> None:
        """Commits everything queued so far, then stops."""
        self._open = False
        await self._idle.wait()
        await self.runner.close()

    async def write(self, op: Op) -> Any:
        """Queues `op` and waits until its transaction committed."""
        if not self._open:
            raise HistoryUnavailable("history is closed; nothing was saved")
        op.future = asyncio.get_running_loop().create_future()
        self._queue(op)
        return await op.future

    def write_behind(self, op: Op) -> None:
        """Queues `op` without waiting: committed in order with the others, errors logged."""
        if not self._open:
            log.warning("history is closed; a call-history event was dropped")
            return
        self._queue(op)

    def _queue(self, op: Op) -> None:
        self._pending.append(op)
        if not self._busy:
            self._next()

    def _next(self) -> None:
        if self._solo:
            batch = [self._solo.pop(0)]
        elif self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        else:
            self._busy = False
            self._idle.set()
            return
        self._busy = True
        self._idle.clear()
        self.batches += 1
        self.ops += len(batch)
        self.runner.submit(batch, lambda future: self._finished(batch, future))

    def _finished(self, batch: list[Op], future: Any) -> None:
        try:
            exc = future.exception()
            if exc is None:
                for op, result in zip(batch, future.result(), strict=True):
                    op.resolve(result)
            elif isinstance(exc, SQLAlchemyError | OSError) and len(batch) > 1:
                # The exception's text carries the rows (message contents): only its type.
                log.warning(
                    "a batch of %d writes failed (%s); retrying one by one",
                    len(batch),
                    type(exc).__name__,
                )
                self._solo[:0] = batch
            else:
                if isinstance(exc, SQLAlchemyError | OSError):
                    log.error("history write failed: %s", type(exc).__name__)
                else:  # a bug: fail the callers, keep the writer going
                    log.error("history writer failed", exc_info=exc)
                for op in batch:
                    op.fail(HistoryUnavailable("could not save; try again"))
        finally:
            self._next()


__all__ = [
    "BatchRunner",
    "ConnectionBatchRunner",
    "GroupWriter",
    "LoopBatchRunner",
    "Op",
    "ThreadBatchRunner",
]
