"""What is wrong with a client's SDP answer to the SFU's offer, in words (a pure function).

aiortc refuses a bad answer with whatever its parser tripped on ("not enough values to
unpack"); the client deserves to hear what to fix. `answer_problem` checks what aiortc will
check, in the order it would, and says it the way a WebRTC developer would.
"""

from __future__ import annotations

import re

from aiortc.sdp import SessionDescription

_LINE = re.compile(r"^[a-z]=")


def _sections(sdp: str) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def _value(lines: list[str], name: str) -> str | None:
    prefix = f"a={name}:"
    return next((line[len(prefix) :].strip() for line in lines if line.startswith(prefix)), None)


def answer_problem(answer: str, offer: str) -> str | None:
    """Why `answer` cannot answer `offer` (both SDP text), or None if it looks right."""
    if not answer.startswith("v=0"):
        return "the answer is not an SDP description (it must start with v=0)"
    for number, line in enumerate(answer.splitlines(), start=1):
        if line and not _LINE.match(line):
            return f"line {number} of the answer is not an SDP line (x=value)"
    session, *media = _sections(answer)
    _, *offered = _sections(offer)
    if len(media) != len(offered):
        return f"the answer has {len(media)} media sections; the SFU's offer has {len(offered)}"
    for index, (mine, theirs) in enumerate(zip(media, offered, strict=True)):
        kind, expected = mine[0][2:].split(" ", 1)[0], theirs[0][2:].split(" ", 1)[0]
        if kind != expected:
            return f"media section {index} is {kind} in the answer but {expected} in the offer"
        mid, offered_mid = _value(mine, "mid"), _value(theirs, "mid")
        if mid != offered_mid:
            return f"media section {index} has mid {mid!r}; the offer's is {offered_mid!r}"
        both = [*session, *mine]
        if not (_value(both, "ice-ufrag") and _value(both, "ice-pwd")):
            return f"media section {index} has no ICE credentials (a=ice-ufrag, a=ice-pwd)"
        fingerprint = _value(both, "fingerprint")
        if fingerprint is None or len(fingerprint.split()) != 2:
            return f"media section {index} has no DTLS fingerprint (a=fingerprint:<hash> <value>)"
        if _value(both, "setup") not in ("active", "passive"):
            return f"media section {index}: an answer's a=setup must be active or passive"
        if kind in ("audio", "video") and "a=rtcp-mux" not in mine:
            return f"media section {index} does not multiplex RTCP (a=rtcp-mux)"
    try:
        SessionDescription.parse(answer)
    except Exception:  # the parser's own words are not for the client
        return "the answer could not be parsed as SDP (check its a= lines)"
    return None
