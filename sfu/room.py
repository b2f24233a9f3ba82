"""One media room: its participants of every kind, and what each receives of the others.

An SFU-aware `Participant` receives every other participant's tracks on m-lines of its one
connection; a `MeshParticipant` receives each peer on its link to that peer (the peer's
microphone, and its screen in place of its camera while it shares one); a
`RemoteParticipant` has its connection on another worker and only publishes here.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import metrics
from .mesh import MeshParticipant
from .participant import Participant
from .pipes import RemoteParticipant
from .source import Source

Member = Participant | MeshParticipant | RemoteParticipant


class Room:
    """Who is in the room, and which SFU-aware participant receives which source."""

    def __init__(self, room_id: str, video_codec: str) -> None:
        self.id = room_id
        self.video_codec = video_codec
        self.participants: dict[str, Member] = {}

    def others(self, p: Member) -> list[Member]:
        return [o for o in self.participants.values() if o is not p and not o.closed]

    def receivers(self, p: Member) -> list[Participant]:
        """The SFU-aware participants that can take new m-lines for ``p``'s tracks."""
        return [o for o in self.others(p) if isinstance(o, Participant) and o.usable]

    def subscribe(self, sub: Participant, sources: Iterable[Source]) -> bool:
        """m-lines at ``sub`` for those of ``sources`` it does not receive yet."""
        added = False
        for source in sources:
            if source not in sub.subscriptions:
                sub.subscribe(source, self.video_codec)
                metrics.FORWARDED_STREAMS.labels(self.id).inc()
                added = True
        return added

    def forward(self, publisher: Member, sources: Iterable[Source]) -> list[Participant]:
        """Every receiver of the room gets ``publisher``'s new sources; who changed."""
        sources = list(sources)
        return [o for o in self.receivers(publisher) if self.subscribe(o, sources)]

    def unforward(self, sources: Iterable[Source]) -> list[Participant]:
        """Nobody receives ``sources`` any more (m-lines recycled); who changed."""
        sources = set(sources)
        changed = []
        for o in self.participants.values():
            if isinstance(o, Participant) and any(s in o.subscriptions for s in sources):
                for source in sources:
                    if o.unsubscribe(source):
                        metrics.FORWARDED_STREAMS.labels(self.id).dec()
                changed.append(o)
        return changed

    def forwarded_streams(self) -> int:
        return sum(
            len(p.subscriptions) if isinstance(p, Participant) else len(p.legs())
            for p in self.participants.values()
        )


def tracks(publisher: Member) -> dict[str, Source]:
    """A participant's published tracks by key: 'audio', 'video', 'screen'."""
    if isinstance(publisher, MeshParticipant):
        return dict(publisher.own)
    if isinstance(publisher, RemoteParticipant):
        return dict(publisher.tracks)
    live = publisher.live
    return {k: pub.source for k, pub in publisher.publications.items() if pub.source in live}


def mesh_view(publisher: Member) -> dict[str, Source | None]:
    """What a mesh client receives from ``publisher``: its microphone, and its screen in
    place of its camera while it shares one (as `replaceTrack` does in the documents)."""
    published = tracks(publisher)
    return {
        "audio": published.get("audio"),
        "video": published.get("screen") or published.get("video"),
    }
