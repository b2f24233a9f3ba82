"""Socket event handlers, split by concern."""

from __future__ import annotations

from signaling.handlers.guide import GuideRooms
from signaling.handlers.pairing import Pairing
from signaling.handlers.studies import Studies
from signaling.handlers.video import VideoRooms
from signaling.hub import Hub


class Handlers:
    """Every concern registered on one hub; `purge_node` sweeps a dead node's sockets."""

    def __init__(self, hub: Hub) -> None:
        self.video = VideoRooms(hub)
        self.guide = GuideRooms(hub)
        self.studies = Studies(hub)
        self.pairing = Pairing(hub, self.video)

    async def purge_node(self, node_id: str) -> None:
        await self.pairing.purge_node(node_id)
        await self.video.purge_node(node_id)
        await self.guide.purge_node(node_id)
        await self.studies.purge_node(node_id)


__all__ = ["Handlers"]
