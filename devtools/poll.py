"""One bounded wait for a condition that no single event announces."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

POLL_INTERVAL_S = 0.02


async def poll_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    *,
    interval: float = POLL_INTERVAL_S,
    message: str = "condition not reached",
) -> None:
    """Checks `predicate` (plain or async) every `interval` s until it holds.

    Raises `TimeoutError(message)` once `timeout` s have passed with it still false. Where an
    event announces the change, await the event instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        held = predicate()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{message} within {timeout:g} s")
        await asyncio.sleep(interval)


__all__ = ["POLL_INTERVAL_S", "poll_until"]
