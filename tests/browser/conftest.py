"""Playwright fixtures for the web client: Debian's Chromium with fake camera and microphone."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from benchmarks.chromium import CHROMIUM, CHROMIUM_ARGS
from tests.server import running_server

# getDisplayMedia without a picker: share the page's own tab.
CALL_PAGE_ARGS = [
    *CHROMIUM_ARGS,
    "--auto-accept-this-tab-capture",
    "--auto-select-tab-capture-source-by-title=StudyCall",
    "--auto-select-desktop-capture-source=Entire screen",
]
# Two shared cores and up to four pages encoding video: generous, but bounded.
MEDIA_TIMEOUT = 25.0
UI_TIMEOUT = 10.0

_rooms = itertools.count(1)


def room_id(prefix: str) -> str:
    """A room id no other test uses, so tests never see each other's participants."""
    return f"{prefix}-{next(_rooms)}"


REMOTE_TILES = "[...document.querySelectorAll('.tile[data-kind=camera]:not([data-local])')]"
REMOTE_VIDEOS = f"{REMOTE_TILES}.map(t => t.querySelector('video'))"


SCREEN_TILE = ".tile[data-kind=screen]:not([data-local]) video"


class CallPage:
    """One person on the call page, with waits phrased as what they would see."""

    def __init__(self, page: Page, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []

    async def wait(self, js: str, arg: Any = None, timeout: float = UI_TIMEOUT) -> Any:
        handle = await self.page.wait_for_function(js, arg=arg, timeout=timeout * 1000)
        return await handle.json_value()

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = await self.page.evaluate("window.__call.state")
        return state

    async def joined(self, participants: int, timeout: float = UI_TIMEOUT) -> str:
        """Waits until the server has us in the room with `participants` others; our socket id."""
        selfid: str = await self.wait(
            """n => { const s = window.__call.state;
                      return s.joined && s.connection === 'connected'
                             && s.participants.length === n && s.selfId; }""",
            participants,
            timeout,
        )
        return selfid

    async def remote_videos_playing(self, count: int, timeout: float = MEDIA_TIMEOUT) -> None:
        """`count` remote camera videos with decoded frames whose playback time moves on."""
        await self.wait(
            f"n => {{ const v = {REMOTE_VIDEOS};"
            " return v.length === n && v.every(x => x.videoWidth > 0 && !x.paused); }",
            count,
            timeout,
        )
        times = await self.page.evaluate(
            f"Object.fromEntries({REMOTE_TILES}"
            ".map(t => [t.dataset.peer, t.querySelector('video').currentTime]))"
        )
        await self.wait(
            "before => { const tiles = " + REMOTE_TILES + ";"
            """
                 return tiles.length === Object.keys(before).length && tiles.every(t =>
                   t.dataset.peer in before &&
                   t.querySelector('video').currentTime > before[t.dataset.peer] + 0.3 &&
                   t.querySelector('video').videoWidth > 0);
               }""",
            times,
            timeout,
        )

    async def remote_audio_flowing(self, count: int, timeout: float = MEDIA_TIMEOUT) -> None:
        """`count` remote voices: each remote tile plays a live audio track that is not muted
        (a remote track unmutes when its RTP arrives)."""
        await self.wait(
            f"n => {{ const v = {REMOTE_VIDEOS};"
            " return v.length === n && v.every(x => {"
            " const a = x.srcObject && x.srcObject.getAudioTracks()[0];"
            " return a && a.readyState === 'live' && !a.muted; }); }",
            count,
            timeout,
        )


class Pages:
    """Opens call links, each in a fresh browser context (its own person, storage and devices)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.opened: list[CallPage] = []

    async def __call__(
        self,
        base_url: str,
        room: str | None,
        name: str,
        init_script: str | None = None,
        **query: str,
    ) -> CallPage:
        context = await self.browser.new_context(viewport={"width": 1000, "height": 620})
        context.set_default_timeout(UI_TIMEOUT * 1000)
        self.contexts.append(context)
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        call = CallPage(page, name)
        self.opened.append(call)
        page.on("pageerror", lambda exc: call.errors.append(str(exc)))
        params = {"lowres": "1", **query}
        if room is not None:
            params = {"room": room, "name": name, **params}
        await page.goto(f"{base_url}/?{urlencode(params)}")
        return call

    async def close_all(self) -> None:
        for context in self.contexts:
            await context.close()
        self.contexts.clear()

    @asynccontextmanager
    async def server(self, **env: Any) -> AsyncIterator[str]:
        """A real server for these pages; the pages hang up before it stops."""
        async with running_server(**env) as server:
            try:
                yield server.url
            finally:
                await self.close_all()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CALL_PAGE_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def people(browser: Browser) -> AsyncIterator[Pages]:
    opened = Pages(browser)
    try:
        yield opened
    finally:
        await opened.close_all()
    # An uncaught exception on any page fails the test, even if what we awaited happened.
    assert not [(p.name, e) for p in opened.opened for e in p.errors]
