"""Chromium's RTP and RTCP as the SFU received it (recorded by `tests/sfu/record_packets.py`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from sfu.rtp import parse_header

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class Recording:
    codec: str
    streams: dict[int, list[bytes]]
    """SSRC -> its packets in arrival order (after SRTP unprotect)."""
    rtcp: dict[str, list[bytes]]
    """Shape of the compound (e.g. 'ReceiverReport1+Nack0') -> packets of that shape."""
    answers: list[str]

    def by_payload_type(self, pt: int) -> list[list[bytes]]:
        """Every stream whose packets carry payload type ``pt``."""
        out = []
        for packets in self.streams.values():
            header = parse_header(packets[0])
            if header is not None and header.payload_type == pt:
                out.append(packets)
        return out


@cache
def recording(codec: str) -> Recording:
    raw = json.loads((DATA / f"chromium-{codec.lower()}.json").read_text())
    return Recording(
        codec=raw["codec"],
        streams={int(k): [bytes.fromhex(p) for p in v] for k, v in raw["rtp"].items()},
        rtcp={k: [bytes.fromhex(p) for p in v] for k, v in raw["rtcp"].items()},
        answers=raw["answers"],
    )


# Payload types of the SFU's offers (aiortc's table, which Chromium's answers keep).
OPUS = 96
VP8 = 97
VP8_RTX = 98
H264 = 99
H264_RTX = 100
