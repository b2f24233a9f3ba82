"""The documents' own client, unmodified, in sfu and auto rooms: it sees a mesh the server
makes, plays every other page, uploads one stream, and never hears of a peer "sfu".

The page (`benchmarks/documents_client.html`) is written from the design documents' code:
the CoUp join flow and the guide's `useWebRTC` hook on the `video:` events, with no `sfu`
flag and no `video:mode-changed` handler. Playwright serves it at the server's origin.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page

from benchmarks.documents import open_documents_client
from benchmarks.mesh_vs_sfu import RECORD_PCS
from tests.browser.conftest import MEDIA_TIMEOUT, UI_TIMEOUT, CallPage, Pages, room_id

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

UPLOAD_WINDOW_S = 2.0

# Video streams this page is sending now, over all its connections (bytes moving).
VIDEO_BYTES_SENT = """
async () => {
  const out = {};
  for (const [i, pc] of (window.__benchPcs || []).entries()) {
    if (pc.connectionState === 'closed') continue;
    (await pc.getStats()).forEach(r => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') out[`${i}:${r.ssrc}`] = r.bytesSent;
    });
  }
  return out;
}
"""


# True once the page shows exactly ``peers``' videos and each of those elements decoded 5
# frames since this check first saw it (a replaced element starts over).
PLAYING = """
peers => {
  const videos = [...document.querySelectorAll('#remote video')];
  const seen = (window.__playing ??= new Map());
  if (videos.length !== peers.length) { seen.clear(); return false; }
  let ok = true;
  for (const peer of peers) {
    const video = videos.find(v => v.dataset.peer === peer);
    if (!video || !video.videoWidth || video.paused) { ok = false; continue; }
    const frames = video.getVideoPlaybackQuality().totalVideoFrames;
    const first = seen.get(peer);
    if (!first || first.video !== video) { seen.set(peer, { video, frames }); ok = false; }
    else if (frames < first.frames + 5) ok = false;
  }
  if (ok) seen.clear();
  return ok;
}
"""


class DocsPage:
    """One person on the documents' client."""

    def __init__(self, page: Page, name: str, page_errors: list[str]) -> None:
        self.page = page
        self.name = name
        self.id = ""
        self.page_errors = page_errors

    async def wait(self, js: str, arg: Any = None, timeout: float = UI_TIMEOUT) -> Any:
        handle = await self.page.wait_for_function(js, arg=arg, timeout=timeout * 1000)
        return await handle.json_value()

    async def joined(self) -> str:
        """Its socket id, once the server sent it the room state."""
        self.id = await self.wait(
            "() => window.__docs && window.__docs.socket.connected"
            " && window.__docs.participants !== undefined && window.__docs.socket.id"
        )
        return self.id

    async def playing(self, peers: list[str], timeout: float = MEDIA_TIMEOUT) -> None:
        """A video for each of ``peers`` (keyed by socket id, as the documents do), and no
        other remote video, each one element that decodes 5 more frames while all are
        shown. (A check that lets the set of videos change between its two looks passes
        in the middle of a mode switch: a peer's old tile, then no tile at all.)"""
        await self.wait(PLAYING, sorted(peers), timeout)

    async def uploads(self) -> int:
        """How many video streams the page is sending right now, over all its connections."""
        before: dict[str, int] = await self.page.evaluate(VIDEO_BYTES_SENT)
        await asyncio.sleep(UPLOAD_WINDOW_S)  # bytes sent need time to grow: a rate
        after: dict[str, int] = await self.page.evaluate(VIDEO_BYTES_SENT)
        # (a stream that starts within the window counts: it is sending)
        return sum(1 for key, sent in after.items() if sent > before.get(key, 0))

    async def trouble(self) -> list[str]:
        """Errors the page saw, and whether it ever heard from a peer named "sfu"."""
        errors: list[str] = await self.page.evaluate("window.__docs.errors")
        heard: list[str] = await self.page.evaluate("[...window.__docs.heardFrom]")
        sfu = [f"heard from {peer!r}" for peer in heard if peer == "sfu"]
        return self.page_errors + errors + sfu


async def open_docs(people: Pages, url: str, room: str, name: str) -> DocsPage:
    context = await people.browser.new_context()
    context.set_default_timeout(UI_TIMEOUT * 1000)
    people.contexts.append(context)
    await context.add_init_script(RECORD_PCS)
    errors: list[str] = []
    page = await open_documents_client(context, url, room, name, errors)
    docs = DocsPage(page, name, errors)
    await docs.joined()
    return docs


async def all_see_all(pages: list[DocsPage], others: list[str] | None = None) -> None:
    ids = [p.id for p in pages] + (others or [])
    await asyncio.gather(*(p.playing([i for i in ids if i != p.id]) for p in pages))


async def assert_upload_once(pages: list[DocsPage]) -> None:
    uploads = await asyncio.gather(*(p.uploads() for p in pages))
    assert uploads == [1] * len(pages), dict(zip([p.name for p in pages], uploads, strict=True))


async def assert_no_trouble(pages: list[DocsPage]) -> None:
    for page in pages:
        assert await page.trouble() == [], page.name


async def test_documents_pages_in_an_sfu_room_play_everyone_and_upload_once(
    people: Pages,
) -> None:
    async with people.server(room_mode="sfu", max_participants="8") as url:
        room = room_id("docs-sfu")
        pages: list[DocsPage] = []
        for size in (2, 4, 6):
            while len(pages) < size:
                pages.append(await open_docs(people, url, room, f"doc{len(pages)}"))
            await all_see_all(pages)
            await assert_upload_once(pages)
        await assert_no_trouble(pages)

        # the uploading connection's peer leaves: the upload moves, everyone still plays
        leaver = pages.pop(1)
        await leaver.page.evaluate("window.__docs.leave()")
        await all_see_all(pages)
        await assert_upload_once(pages)
        await assert_no_trouble(pages)


async def test_documents_pages_follow_an_auto_room_to_sfu_and_back(people: Pages) -> None:
    async with people.server(room_mode="auto", mesh_max="3") as url:
        room = room_id("docs-auto")
        pages = [await open_docs(people, url, room, f"auto{i}") for i in range(3)]
        await all_see_all(pages)
        # a real mesh: each page sends its camera to both others
        assert await asyncio.gather(*(p.uploads() for p in pages)) == [2, 2, 2]

        pages.append(await open_docs(people, url, room, "auto3"))  # the room goes sfu
        await all_see_all(pages)
        await assert_upload_once(pages)

        for leaver in (pages.pop(), pages.pop()):  # two left: back to mesh
            await leaver.page.evaluate("window.__docs.leave()")
        await all_see_all(pages)
        await assert_upload_once(pages)  # a real mesh of two again: one copy each
        await assert_no_trouble(pages)


async def test_documents_pages_and_web_client_pages_share_an_sfu_room(people: Pages) -> None:
    async with people.server(room_mode="sfu") as url:
        room = room_id("docs-mixed")
        web: list[CallPage] = []
        docs: list[DocsPage] = []
        for i in range(2):
            docs.append(await open_docs(people, url, room, f"doc{i}"))
            web.append(await people(url, room, f"Web{i}"))
        web_ids = [await page.joined(3, timeout=MEDIA_TIMEOUT) for page in web]
        await all_see_all(docs, others=web_ids)
        await asyncio.gather(*(page.remote_videos_playing(3) for page in web))
        await assert_upload_once(docs)
        await assert_no_trouble(docs)


async def test_documents_pages_spread_over_two_media_workers(people: Pages) -> None:
    """Each page on another worker process: every track crosses a pipe, still one upload."""
    async with people.server(room_mode="sfu", media_workers="2", media_placement="spread") as url:
        room = room_id("docs-workers")
        pages = [await open_docs(people, url, room, f"w{i}") for i in range(3)]
        await all_see_all(pages)
        await assert_upload_once(pages)
        await assert_no_trouble(pages)
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
            workers = (await response.json())["sfu"]["workers"]
        assert sorted(w["participants"] for w in workers) == [1, 2]  # the room spans both
