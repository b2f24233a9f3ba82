"""Pairing (docs/protocol.md section 5): match two waiting clients into a mesh video room of two."""

from __future__ import annotations

from typing import Any

from signaling.domain import PairingQueue, Participant, Waiting, new_id
from signaling.handlers.video import VideoRooms
from signaling.models import Empty
from signaling.ports import Conn, Connections, Emitter, Events
from signaling.store import Store

QUEUE = "queue"


def empty(value: object) -> Empty:
    return Empty.model_validate({} if value is None else value)


class Pairing:
    """Moves matched sockets into a video room of two (through the video rooms' seam)."""

    def __init__(
        self,
        events: Events,
        emitter: Emitter,
        store: Store,
        connections: Connections,
        video: VideoRooms,
        node_id: str,
    ) -> None:
        self.emitter = emitter
        self.store = store
        self.connections = connections
        self.video = video
        self.node_id = node_id
        events.on("pair:request", empty)(self.request)
        events.on("pair:cancel", empty)(self.cancel)

    async def request(self, conn: Conn, _: Empty) -> dict[str, Any]:
        node_id = self.node_id
        me = Waiting(socketId=conn.sid, user=conn.identity.user, node=node_id)
        room_id = f"pair-{new_id()}"

        def alive(entry: Waiting) -> bool:
            # A socket of this node that left after queueing would become a ghost in the room.
            return entry.node != node_id or self.connections.local(entry.socketId)

        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value or PairingQueue()
            peer = queue.request(me, alive)
            if peer is not None:
                queue.start_move(room_id, node_id, peer, me)
            slot.value = queue
        if peer is None:
            return {"status": "waiting"}
        seen: set[str] = set()  # who the requester found in the room when it entered
        for entry in (peer, me):
            await self.video.members.leave(entry.socketId)
            entered = await self.video.enter(
                entry.socketId,
                None,
                room_id,
                participant=Participant(
                    socketId=entry.socketId, userId=entry.user.id, user=entry.user, node=entry.node
                ),
                policy="mesh",
            )
            seen = {p["socketId"] for p in entered["participants"]}
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value or PairingQueue()
            gone = [entry for entry in (peer, me) if queue.moved(entry.socketId)]
            slot.value = queue
        # The one who waited longest offers; the newcomer answers.
        for entry, other, initiator in ((peer, me, True), (me, peer, False)):
            await self.emitter.emit(
                "pair:matched",
                {
                    "roomId": room_id,
                    "peer": {"socketId": other.socketId, "user": other.user.model_dump()},
                    "initiator": initiator,
                },
                to=entry.socketId,
            )
        # Disconnected while it was being moved: its own cleanup came too early to see it in
        # the room, so it leaves now (the other one is told, as when a peer leaves). A peer
        # gone before the requester even entered was never seen there: tell the requester.
        for entry in gone:
            await self.video.leave(entry.socketId, room_id)
            if entry is peer and peer.socketId not in seen:
                await self.emitter.emit(
                    "video:user-left",
                    {"socketId": peer.socketId, "userId": peer.user.id},
                    to=me.socketId,
                )
        return {"status": "matched", "roomId": room_id}

    async def cancel(self, conn: Conn, _: Empty) -> dict[str, Any]:
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value
            cancelled = queue.cancel(conn.sid) if queue is not None else False
        return {"ok": True, "cancelled": cancelled}

    async def on_disconnect(self, conn: Conn) -> None:
        """Runs before the video rooms' (see the order in `signaling.app`)."""
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value
            if queue is not None:
                queue.depart(conn.sid)

    async def purge_node(self, node_id: str) -> None:
        async with self.store.edit(PairingQueue, QUEUE) as slot:
            queue = slot.value
            if queue is not None:
                queue.forget_node(node_id)
