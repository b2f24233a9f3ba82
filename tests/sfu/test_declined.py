"""Data channels offered to the SFU are declined in place (port 0), on a recorded offer."""

from __future__ import annotations

from pathlib import Path

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription

from sfu.declined import put_back, take_out

OFFER = (Path(__file__).parent / "data" / "chromium-offer-datachannel.sdp").read_text()


def m_lines(sdp: str) -> list[str]:
    return [line for line in sdp.splitlines() if line.startswith("m=")]


def data_first(sdp: str) -> str:
    """The same offer with its data m-line first (a client may order them so)."""
    head: list[str] = []
    sections: list[list[str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        (sections[-1] if sections else head).append(line)
    sections = [sections[-1], *sections[:-1]]
    return "\r\n".join(head + [line for s in sections for line in s]) + "\r\n"


async def answer(offer: str) -> str:
    pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    try:
        for kind in ("audio", "video"):
            pc.addTransceiver(kind, direction="sendrecv")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def test_an_offer_without_data_channels_is_left_alone() -> None:
    media_only, _ = take_out(OFFER)
    assert take_out(media_only) == (media_only, [])
    assert put_back("v=0\r\n", []) == "v=0\r\n"


def test_the_data_mline_is_taken_out_of_the_offer_and_its_bundle_group() -> None:
    media_only, declined = take_out(OFFER)
    assert [d.kind for d in declined] == ["application"]
    assert [d.mid for d in declined] == ["2"]
    assert [m.split()[0] for m in m_lines(media_only)] == ["m=audio", "m=video"]
    assert "a=group:BUNDLE 0 1" in media_only.splitlines()
    assert "webrtc-datachannel" not in media_only and "sctp-port" not in media_only
    assert len(SessionDescription.parse(media_only).media) == 2


async def test_the_answer_declines_it_in_its_place_whatever_the_order() -> None:
    for offer in (OFFER, data_first(OFFER)):
        media_only, declined = take_out(offer)
        full = put_back(await answer(media_only), declined)
        offered = [m.split()[0] for m in m_lines(offer)]
        answered = m_lines(full)
        assert [m.split()[0] for m in answered] == offered  # same m-lines, same order
        rejected = next(m for m in answered if m.startswith("m=application"))
        assert rejected == "m=application 0 UDP/DTLS/SCTP webrtc-datachannel"
        mids = [line[6:] for line in full.splitlines() if line.startswith("a=mid:")]
        assert mids == [
            line[6:] for line in offer.splitlines() if line.startswith("a=mid:")
        ]  # each m-line keeps its mid
        bundle = next(line for line in full.splitlines() if line.startswith("a=group:BUNDLE"))
        assert "2" not in bundle.split()[1:]  # a rejected m-line is out of the bundle
