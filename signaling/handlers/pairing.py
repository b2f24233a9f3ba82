"""Pairing (PROTOCOL.md section 5): match two waiting clients into a mesh video room of two."""

from __future__ import annotations

from typing import Any

from signaling.domain import PairingQueue, Participant, Waiting, new_id
from signaling.handlers.video import SOCKET_ROOM, VideoRooms
from signaling.hub import Conn, Hub
from signaling.models import Empty

QUEUE = "queue"


def empty(value: object) -> Empty:
    return Empty.model_validate({} if value is None else value)


class Pairing:
    def __init__(self, hub: Hub, video: VideoRooms) -> None:
        self.hub = hub
        self.store = hub.store
        self.video = video
        hub.on("pair:request", empty)(self.request)
        hub.on("pair:cancel", empty)(self.cancel)
        hub.on_disconnect_hooks.insert(0, self.on_disconnect)

    async def request(self, conn: Conn, _: Empty) -> dict[str, Any]:
        me = Waiting(socketId=conn.sid, user=conn.identity.user, node=self.hub.node_id)
        while True:
            async with self.store.edit(PairingQueue, QUEUE) as slot:
                queue = slot.value or PairingQueue()
                peer = queue.request(me)
                slot.value = queue
            if peer is None:
                return {"status": "waiting"}
            # A socket of this node that left after queueing would become a ghost in the
            # room: skip it (it is already out of the queue) and look again.
            if peer.node != self.hub.node_id or peer.socketId in self.hub.conns:
                break
        room_id = f"pair-{new_id()}"
        for entry in (peer, me):
            (current,) = await self.store.get_index(SOCKET_ROOM, entry.socketId)
            if current is not None:
                await self.video.leave(entry.socketId, current)
            await self.video.enter(
                entry.socketId,
                None,
                room_id,
                participant=Participant(
                    socketId=entry.socketId, userId=entry.user.id, user=entry.user, node=entry.node
                ),
                policy="mesh",
            )
        # The one who waited longest offers; the newcomer answers.
        for entry, other, initiator in ((peer, me, True), (me, peer, False)):
            await self.hub.emit(
                "pair:matched",
                {
                    "roomId": room_id,
                    "peer": {"socketId": other.socketId, "user": other.user.model_dump()},
                    "initiator": initiator,
                },
                to=entry.socketId,
            )
        return {"status": "matched", "roomId": room_id}

    async def cancel(self, conn: Conn, _: Empty) -> dict[str, Any]:
        return {"ok": True, "cancelled": await self._remove(conn.sid)}

    async def _remove(self, sid: str) -> bool:
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value
            removed = queue.cancel(sid) if queue is not None else False
        return removed

    async def on_disconnect(self, conn: Conn) -> None:
        await self._remove(conn.sid)

    async def purge_node(self, node_id: str) -> None:
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value
            if queue is not None:
                queue.waiting = [w for w in queue.waiting if w.node != node_id]
