"""Records real Chromium RTP/RTCP as the SFU receives it, for the packet unit tests.

    python -m tests.sfu.record_packets [--codec VP8|H264] [--out tests/sfu/data/chromium-vp8.json]

Two Chromium pages (fake camera and microphone) join an sfu room of an in-process server.
The SFU's transports are wrapped to keep, after SRTP unprotect, the first packets of every
stream (a keyframe start included), some RTCP of every type Chromium sends (receiver
reports, REMB, PLI, NACK: one packet in 40 towards the pages is dropped to provoke NACKs)
and the pages' answers. The JSON holds hex strings; nothing is decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from sfu import rtcp
from sfu.commands import Answer, Command, Reply
from sfu.rtp import RtpHeader
from sfu.source import Source
from sfu.transport import MediaTransport
from tests.server import inprocess_server

PER_STREAM = 60
DATA = Path(__file__).parent / "data"


async def record(codec: str, seconds: float) -> dict[str, Any]:
    rtp: dict[int, list[str]] = defaultdict(list)
    feedback: dict[str, list[str]] = defaultdict(list)
    answers: list[str] = []
    stock_on_rtp = Source.on_rtp
    stock_rtcp = MediaTransport._on_rtcp
    stock_send = MediaTransport.send_rtp
    sent = 0

    def on_rtp(
        self: Source, data: bytes, header: RtpHeader, arrival: float, send_time: bytes
    ) -> None:
        if len(rtp[header.ssrc]) < PER_STREAM:
            rtp[header.ssrc].append(data.hex())
        stock_on_rtp(self, data, header, arrival, send_time)

    def on_rtcp(self: MediaTransport, plain: bytes) -> None:
        items = rtcp.parse(plain)
        shape = "+".join(f"{type(i).__name__}{len(getattr(i, 'reports', []))}" for i in items)
        if len(feedback[shape]) < 3:
            feedback[shape].append(plain.hex())
        stock_rtcp(self, plain)

    def send_rtp(self: MediaTransport, data: bytes) -> bool:
        nonlocal sent
        sent += 1
        if sent % 40 == 0:
            return True  # "sent": lost on the way, the page will NACK it
        return stock_send(self, data)

    Source.on_rtp = on_rtp  # type: ignore[method-assign]
    MediaTransport._on_rtcp = on_rtcp  # type: ignore[method-assign]
    MediaTransport.send_rtp = send_rtp  # type: ignore[method-assign]
    try:
        async with inprocess_server(room_mode="sfu", sfu_video_codec=codec) as server:
            port = server.application.media
            assert port is not None
            stock_run = port.run

            async def run(command: Command) -> Reply:
                if isinstance(command, Answer):
                    answers.append(command.sdp)
                return await stock_run(command)

            port.run = run  # type: ignore[method-assign]
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name in ("ada", "bob"):
                    page = await (await browser.new_context()).new_page()
                    await page.goto(f"{server.url}/?room=rec&name={name}&lowres=1")
                await asyncio.sleep(seconds)
                await browser.close()
    finally:
        Source.on_rtp = stock_on_rtp  # type: ignore[method-assign]
        MediaTransport._on_rtcp = stock_rtcp  # type: ignore[method-assign]
        MediaTransport.send_rtp = stock_send  # type: ignore[method-assign]
    return {
        "codec": codec,
        "rtp": {str(ssrc): packets for ssrc, packets in rtp.items()},
        "rtcp": dict(feedback),
        "answers": answers[:2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codec", default="VP8", choices=["VP8", "H264"])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out")
    args = parser.parse_args()
    out = Path(args.out or DATA / f"chromium-{args.codec.lower()}.json")
    result = asyncio.run(record(args.codec, args.seconds))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{out}: {sum(len(v) for v in result['rtp'].values())} RTP, RTCP {sorted(result['rtcp'])}"
    )


if __name__ == "__main__":
    main()
