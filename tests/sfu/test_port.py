"""The media port: typed commands and events, serialised once, run against a plane."""

from __future__ import annotations

import asyncio

import pytest

from sfu import MediaPlane
from sfu.commands import (
    Answer,
    Answered,
    Candidate,
    CloseRoom,
    Done,
    Event,
    Join,
    JoinMesh,
    Leave,
    MediaLost,
    Offer,
    OfferToClient,
    Refused,
    Screen,
    decode,
    encode,
)
from sfu.port import LocalMedia

MESSAGES = [
    Join("r", "p"),
    JoinMesh("r", "p", offers_to_newcomers=False),
    Leave("r", "p"),
    Offer("r", "p", peer="q", sdp="v=0\r\n"),
    Answer("r", "p", peer="sfu", sdp="v=0\r\n"),
    Candidate("r", "p", candidate={"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host"}),
    Candidate("r", "p", candidate=None),
    Screen("r", "p", sharing=True),
    CloseRoom("r"),
    Done(),
    Answered("v=0\r\n"),
    Refused("the answer has no DTLS fingerprint"),
    OfferToClient("r", "p", peer="q", sdp="v=0\r\n"),
    MediaLost("r", "p", reason="unanswered"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_its_wire_form(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [b"[]", b'{"t": "nope"}', b"not json", b'{"room": "r"}'])
def test_what_is_not_a_message_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode(raw)


async def test_commands_run_against_a_plane_and_its_offers_come_back_as_events(
    plane: MediaPlane,
) -> None:
    events: asyncio.Queue[Event] = asyncio.Queue()
    port = LocalMedia(plane, events.put)
    assert await port.run(Join("r", "alice")) == Done()
    offer = await asyncio.wait_for(events.get(), 5)
    assert isinstance(offer, OfferToClient) and offer.peer == "sfu" and "m=audio" in offer.sdp
    refused = await port.run(Answer("r", "alice", sdp="garbage"))
    assert isinstance(refused, Refused) and "v=0" in refused.message
    unknown = await port.run(Offer("r", "nobody", peer="alice", sdp="v=0"))
    assert isinstance(unknown, Refused) and "nobody" in unknown.message
    assert await port.run(JoinMesh("r", "mesh")) == Done()
    assert await port.run(Leave("r", "alice")) == Done()
    assert port.stats()["rooms"]["r"]["participants"] == 1
    assert await port.run(CloseRoom("r")) == Done()
    assert port.stats()["rooms"] == {}
