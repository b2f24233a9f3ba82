"""The dispatcher: every client event passes the rate limit and validation here, and every
refusal reaches the wire from here, the one error mapping (an ack if the client asked for
one, else the `error` event).

Handlers are plain coroutines `(conn, payload) -> ack | None`, registered with `on` (the
`Events` port); they raise `SignalingError`s and never write errors to the wire themselves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from signaling import metrics
from signaling.edge import EdgeServer
from signaling.errors import (
    ErrorCode,
    InvalidPayload,
    RateLimited,
    SignalingError,
    error_ack,
    error_event,
)
from signaling.ports import AckError, Connections, Emitter, Handler
from signaling.store import StoreError

log = logging.getLogger("signaling")

P = TypeVar("P")

LIMITED_NOTICE_S = 1.0
"""One RATE_LIMITED notice a second: answering every dropped event would amplify a flood."""


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "payload"
    return f"{where}: {first.get('msg', 'invalid')}"


class Dispatcher:
    def __init__(self, server: EdgeServer, connections: Connections, emitter: Emitter) -> None:
        self.server = server
        self.connections = connections
        self.emitter = emitter

    def on(
        self,
        event: str,
        parse: Callable[[Any], P],
        *,
        ack_error: AckError = error_ack,
    ) -> Callable[[Handler[P]], Handler[P]]:
        """Registers `handler` for `event` behind rate limiting, validation and error mapping."""

        def register(handler: Handler[P]) -> Handler[P]:
            received = metrics.EVENTS.labels(event)

            async def dispatch(sid: str, args: list[Any], acked: bool) -> Any:
                conn = self.connections.conn(sid)
                if conn is None:
                    return None
                received.inc()
                try:
                    if not conn.bucket.take():
                        raise RateLimited("too many events; slow down")
                    try:
                        payload = parse(args[0] if args else None)
                    except ValidationError as exc:
                        raise InvalidPayload(_validation_message(exc)) from None
                    return await handler(conn, payload)
                except SignalingError as exc:
                    return await self.refuse(sid, event, exc, ack_error, acked)
                except StoreError as exc:  # storage, not the client: INTERNAL, may try again
                    busy = SignalingError(exc.message, ErrorCode.INTERNAL)
                    return await self.refuse(sid, event, busy, ack_error, acked)
                except Exception:
                    log.exception("handler for %s failed", event)
                    internal = SignalingError("internal error", ErrorCode.INTERNAL)
                    return await self.refuse(sid, event, internal, ack_error, acked)

            self.server.register_event(event, dispatch, ack_error)
            return handler

        return register

    async def refuse(
        self,
        sid: str,
        event: str,
        exc: SignalingError,
        ack_error: AckError = error_ack,
        acked: bool = False,
    ) -> Any:
        """Maps a refusal of `event` to the wire: the ack's payload (returned) or `error`.

        Also the way for an error that arrives later, without an ack to answer (the
        media's answer from another node), to reach the client in the same shape.
        """
        metrics.ERRORS.labels(exc.code.value).inc()
        if exc.code is ErrorCode.INVALID_PAYLOAD:
            # Counted against the socket's budget for bad input (signaling.edge.rejects).
            await self.server.note_rejected(sid, "invalid-payload", f"{event}: {exc.message}")
        if acked:
            return ack_error(exc)
        if exc.code is ErrorCode.RATE_LIMITED:
            conn = self.connections.conn(sid)
            now = time.monotonic()
            if conn is not None:
                if now - conn.limited_notice_at < LIMITED_NOTICE_S:
                    return None
                conn.limited_notice_at = now
        await self.emitter.emit("error", error_event(exc, event), to=sid)
        return None
