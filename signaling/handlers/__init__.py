"""Socket event handlers, split by concern."""

from __future__ import annotations

from signaling.handlers.guide import GuideRooms
from signaling.handlers.notifications import Notifications
from signaling.handlers.pairing import Pairing
from signaling.handlers.studies import Studies
from signaling.handlers.video import VideoRooms
from signaling.history import History
from signaling.hub import Hub


class Handlers:
    """Every concern registered on one hub; `purge_node` sweeps a dead node's sockets."""

    def __init__(self, hub: Hub, history: History) -> None:
        self.video = VideoRooms(hub, history)
        self.guide = GuideRooms(hub, self.video.media)
        self.studies = Studies(hub, history)
        self.notifications = Notifications(hub, history)
        self.pairing = Pairing(hub, self.video)

    async def purge_node(self, node_id: str) -> None:
        await self.pairing.purge_node(node_id)
        await self.video.purge_node(node_id)
        await self.guide.purge_node(node_id)
        await self.studies.purge_node(node_id)
        await self.notifications.purge_node(node_id)


__all__ = ["Handlers"]
