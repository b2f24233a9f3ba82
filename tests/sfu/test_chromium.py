"""Chromium (fake camera) and an aiortc peer through the SFU: the browser contract."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from devtools.media import Clip
from devtools.poll import poll_until
from sfu import MediaPlane

from .peers import DecodeCounter, PeerClient

pytestmark = pytest.mark.browser

ROOM = "browser"
PAGE = """<!doctype html><script>
window.cands = []; window.tracks = []; window.videoOf = {};
window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
pc.onicecandidate = (e) => cands.push(e.candidate ? e.candidate.toJSON() : null);
pc.ontrack = (e) => {
  const stream = e.streams[0] && e.streams[0].id;
  tracks.push({kind: e.track.kind, stream});
  if (e.track.kind === "video") videoOf[stream] = e.track;
};
window.answer = async (sdp) => {
  if (!window.added) {  // tracks added before applying the first offer
    window.added = true;
    const s = await navigator.mediaDevices.getUserMedia(
      {audio: true, video: {width: 320, height: 240, frameRate: 15}});
    for (const t of s.getTracks()) pc.addTrack(t, s);
  }
  await pc.setRemoteDescription({type: "offer", sdp});
  await pc.setLocalDescription(await pc.createAnswer());
  return pc.localDescription.sdp;
};
window.inactive = () =>
  pc.getTransceivers().filter((t) => t.currentDirection === "inactive").length;
// Frames decoded from one publisher's video (a recycled m-line restarts its stats).
window.decoded = async (stream) => {
  const track = videoOf[stream];
  if (!track) return 0;
  let n = 0;
  (await pc.getStats(track)).forEach((r) => {
    if (r.type === "inbound-rtp") n += r.framesDecoded || 0;
  });
  return n;
};
</script>"""


@contextlib.asynccontextmanager
async def _page_server() -> AsyncIterator[str]:
    app = web.Application()

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_chromium_publishes_on_recvonly_mlines_and_receives_by_stream_id(
    plane: MediaPlane, vp8_clip: Clip, opus_clip: Clip, decode_counter: DecodeCounter
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    offers: asyncio.Queue[str] = asyncio.Queue()

    async def sink(kind: str, payload: dict[str, Any] | None) -> None:
        if kind == "offer" and payload is not None:
            offers.put_nowait(payload["sdp"])

    async with _page_server() as url, playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(url)

        async def signal() -> None:
            """Plays signaling for the page: offers in, answer and candidates out."""
            while True:
                # (asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the
                # cancellation that ends this loop when its own timeout fires with it)
                try:
                    async with asyncio.timeout(0.05):
                        sdp = await offers.get()
                except TimeoutError:
                    sdp = None
                if sdp is not None:
                    answer = await page.evaluate("(sdp) => window.answer(sdp)", sdp)
                    await plane.answer(ROOM, "alice", {"type": "answer", "sdp": answer})
                for cand in await page.evaluate("() => window.cands.splice(0)"):
                    await plane.candidate(ROOM, "alice", cand)

        def decoded(stream: str, n: int) -> Callable[[], Awaitable[bool]]:
            """True once Chromium decoded `n` frames of `stream`."""

            async def check() -> bool:
                return bool(await page.evaluate("(s) => window.decoded(s)", stream) >= n)

            return check

        bob = PeerClient(plane, ROOM, "bob", vp8_clip, opus_clip, mode="fill")
        signaling = asyncio.create_task(signal())
        try:
            await plane.join(ROOM, "alice", sink)
            await bob.join()
            # Chromium's camera reaches bob, from a keyframe, under alice's id
            await bob.wait_frames("video", ["alice"], n=10)
            await bob.wait_frames("audio", ["alice"], n=10)
            assert bob.frames_by_stream("video")["alice"][0][0] is True
            # bob's replayed VP8 is decoded by Chromium, and its stream id is "bob"
            await poll_until(
                decoded("bob", 10), 15, interval=0.1, message="Chromium decoded no frames from bob"
            )
            tracks = await page.evaluate("() => window.tracks")
            assert {"kind": "video", "stream": "bob"} in tracks
            assert {"kind": "audio", "stream": "bob"} in tracks
            assert bob.errors == []

            # bob leaves: his m-lines go inactive in Chromium; carol then reuses them and
            # Chromium fires a new track event with carol's stream id
            mlines = await page.evaluate("() => pc.getTransceivers().length")
            await plane.leave(ROOM, "bob")
            await bob.close()

            async def inactive() -> bool:
                return bool(await page.evaluate("() => window.inactive()") >= 2)

            await poll_until(
                inactive, 10, interval=0.05, message="bob's m-lines never became inactive"
            )
            carol = PeerClient(plane, ROOM, "carol", vp8_clip, opus_clip, mode="fill")
            await carol.join()
            await carol.wait_frames("video", ["alice"], n=5)
            await poll_until(
                decoded("carol", 10),
                15,
                interval=0.1,
                message="Chromium decoded no frames from carol",
            )
            tracks = await page.evaluate("() => window.tracks")
            assert {"kind": "video", "stream": "carol"} in tracks
            assert await page.evaluate("() => pc.getTransceivers().length") == mlines
            await carol.close()
            # the server never decoded anything
            assert decode_counter.calls == 0 and decode_counter.decoder_workers == 0
        finally:
            signaling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await signaling
            await bob.close()
            await browser.close()
