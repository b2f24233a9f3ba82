"""Notifications (docs/protocol.md sections 4 and 7): stored when pushed, delivered exactly once.

The delivery rule: a notification POSTed for a user who has a socket connected (on any node)
is emitted at once to all of that user's sockets and stored as delivered. For a user with no
socket it is stored undelivered, and the user's next socket to connect gets every undelivered
one (oldest first) once the client is connected; they are then marked delivered. Marking is
atomic in the database, so two sockets connecting at once never both get a notification, and
a POST racing a connect delivers it through one of the two paths, never none and never both.
`notification-read` marks it read (for that user only) and tells the user's other sockets.

Who is online is a `UserSockets` record per user in the store (Redis across nodes): a socket
is added before its client is told it is connected (so a client that sees `connect` counts as
online) and removed on disconnect or when its node is swept as dead.
"""

from __future__ import annotations

from typing import Any

from signaling.domain import Notification, UserSockets
from signaling.errors import NotFound
from signaling.history import History
from signaling.models import NotificationRead, model_parser
from signaling.ports import Conn, Emitter, Events
from signaling.store import Store

MISSED_PER_CONNECT = 100
"""Undelivered notifications sent to one connecting socket; the rest go to the next one."""


class Notifications:
    def __init__(
        self, events: Events, emitter: Emitter, store: Store, history: History, node_id: str
    ) -> None:
        self.emitter = emitter
        self.store = store
        self.node_id = node_id
        self.history = history
        events.on("notification-read", model_parser(NotificationRead))(self.read)

    async def online(self, user_id: str) -> bool:
        sockets = await self.store.load(UserSockets, user_id)
        return sockets is not None and sockets.online

    async def push(self, note: Notification) -> None:
        """Stores the notification (durably) and delivers it now if its user is online."""
        if await self.online(note.userId):
            await self.history.add_notification(note, delivered=True)
            await self._deliver(note)
            return
        await self.history.add_notification(note, delivered=False)
        # The user may have connected meanwhile, after its connect claimed what was stored.
        if await self.online(note.userId) and await self.history.claim(note.id):
            await self._deliver(note)

    async def _deliver(self, note: Notification) -> None:
        await self.emitter.emit_group("notification", note.wire(), f"user:{note.userId}")

    async def on_connect(self, conn: Conn) -> None:
        await self._set_socket(conn.user_id, conn.sid, self.node_id)

    async def on_connected(self, conn: Conn) -> None:
        """The client knows it is connected: now it may get what it missed."""
        for note in await self.history.claim_undelivered(conn.user_id, MISSED_PER_CONNECT):
            await self.emitter.emit("notification", note.wire(), to=conn.sid)

    async def on_disconnect(self, conn: Conn) -> None:
        await self._set_socket(conn.user_id, conn.sid, None)

    async def _set_socket(self, user_id: str, sid: str, node: str | None) -> None:
        async with self.store.edit(UserSockets, user_id) as slot:
            record = slot.value or UserSockets(userId=user_id)
            if node is None:
                record.sockets.pop(sid, None)
            else:
                record.sockets[sid] = node
            slot.value = record if record.online else None

    async def purge_node(self, node_id: str) -> None:
        for record in await self.store.load_all(UserSockets):
            for sid, node in list(record.sockets.items()):
                if node == node_id:
                    await self._set_socket(record.userId, sid, None)

    async def read(self, conn: Conn, payload: NotificationRead) -> dict[str, Any]:
        if not await self.history.mark_notification_read(payload.notificationId, conn.user_id):
            raise NotFound("no such notification")
        # Tells the user's other tabs, so a notification read in one disappears in all.
        await self.emitter.emit_group(
            "notification-read",
            {"notificationId": payload.notificationId},
            f"user:{conn.user_id}",
            skip=conn.sid,
        )
        return {"ok": True}
