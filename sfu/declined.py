"""Offered m-lines the SFU does not take (a data channel), declined as JSEP says: port 0.

The SFU forwards media only: a data channel offered to a participant it plays would open
to nobody. aiortc cannot reject an m-line, so the offer it sees has the application
m-lines taken out (and out of the BUNDLE group), and the answer gets each back in its
place, rejected. The browser then closes that data channel instead of waiting on it.
Pure functions on SDP text.
"""

from __future__ import annotations

from dataclasses import dataclass

DECLINED_KINDS = ("application",)


@dataclass(frozen=True)
class Declined:
    index: int
    """The m-line's position in the offer."""
    mid: str | None
    line: str
    """The offer's m= line, to answer with the same kind and protocol."""

    @property
    def kind(self) -> str:
        return self.line[2:].split(" ", 1)[0]


def _split(sdp: str) -> tuple[list[str], list[list[str]]]:
    session: list[str] = []
    media: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            media.append([])
        (media[-1] if media else session).append(line)
    return session, media


def _mid(section: list[str]) -> str | None:
    return next((line[6:].strip() for line in section if line.startswith("a=mid:")), None)


def take_out(offer_sdp: str) -> tuple[str, list[Declined]]:
    """The offer without its data m-lines (what aiortc may see), and what was taken out."""
    session, media = _split(offer_sdp)
    declined = [
        Declined(i, _mid(section), section[0])
        for i, section in enumerate(media)
        if section[0][2:].split(" ", 1)[0] in DECLINED_KINDS  # (m=<kind> <port> ...)
    ]
    if not declined:
        return offer_sdp, []
    gone = {d.mid for d in declined if d.mid is not None}
    kept = [s for i, s in enumerate(media) if i not in {d.index for d in declined}]
    session = [
        " ".join(w for w in line.split(" ") if w not in gone)
        if line.startswith("a=group:BUNDLE")
        else line
        for line in session
    ]
    session = [line for line in session if line.strip() != "a=group:BUNDLE"]
    lines = session + [line for section in kept for line in section]
    return "\r\n".join(lines) + "\r\n", declined


def put_back(answer_sdp: str, declined: list[Declined]) -> str:
    """The answer with a rejected m-line (port 0) at each declined m-line's place."""
    if not declined:
        return answer_sdp
    session, media = _split(answer_sdp)
    for d in sorted(declined, key=lambda d: d.index):
        kind, _port, proto, *fmt = d.line[2:].split(" ")
        section = [f"m={kind} 0 {proto} {' '.join(fmt)}".rstrip(), "c=IN IP4 0.0.0.0"]
        if d.mid is not None:
            section.append(f"a=mid:{d.mid}")
        media.insert(d.index, section)
    return "\r\n".join(session + [line for s in media for line in s]) + "\r\n"
