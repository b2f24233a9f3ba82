"""Chromium inside a namespace: it loads pages from the host, and media crosses the link.

The page in the namespace reaches the server at the host end's address (the server
listens on 0.0.0.0); its media goes to the SFU's host candidates (every interface of the
host, the veth's host end among them) or, in mesh, to the host page's candidates.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from playwright.async_api import async_playwright

from devtools.browser import launch_chromium, secure_origins, via
from devtools.netns import Namespace
from tests.browser.conftest import CALL_PAGE_ARGS, Pages
from tests.server import running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

_rooms = itertools.count()

# The local address of the candidate pair each live connection of the page uses.
SELECTED_LOCAL = """
async () => {
  const out = [];
  for (const pc of Object.values(window.__call.connections())) {
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
      const pair = stats.get(s.selectedCandidatePairId);
      out.push(stats.get(pair.localCandidateId).address);
    });
  }
  return out;
}
"""


@asynccontextmanager
async def remote_seen_at(namespace: Namespace) -> AsyncIterator[str]:
    """An HTTP server on the host end whose page's title is the client's address."""

    async def page(request: web.Request) -> web.Response:
        html = f"<title>from {request.remote}</title><p>hello</p>"
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, namespace.host_address, 0)
    await site.start()
    try:
        yield f"http://{namespace.host_address}:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


async def test_a_page_in_a_namespace_loads_from_a_server_on_the_host(
    namespace: Namespace,
) -> None:
    async with (
        remote_seen_at(namespace) as url,
        async_playwright() as pw,
        launch_chromium(pw, namespace=namespace) as browser,
    ):
        page = await browser.new_page()
        await page.goto(url, timeout=15_000)
        assert await page.title() == f"from {namespace.inside_address}"


@pytest.mark.parametrize("mode", ["sfu", "mesh"])
async def test_a_page_in_a_namespace_and_one_on_the_host_see_each_other(
    namespace: Namespace, mode: str
) -> None:
    async with running_server(host="0.0.0.0", room_mode=mode) as server:
        host_url = via(server.url, "127.0.0.1")
        inside_url = via(server.url, namespace.host_address)
        inside_args = secure_origins(CALL_PAGE_ARGS, [inside_url])
        async with (
            async_playwright() as pw,
            launch_chromium(pw, args=CALL_PAGE_ARGS) as host_browser,
            launch_chromium(pw, args=inside_args, namespace=namespace) as inside_browser,
        ):
            host_pages, inside_pages = Pages(host_browser), Pages(inside_browser)
            try:
                room = f"netns-{mode}-{next(_rooms)}"
                ada = await host_pages(host_url, room, "Ada")
                dan = await inside_pages(inside_url, room, "Dan")
                await asyncio.gather(ada.joined(1), dan.joined(1))
                assert (await dan.state())["mode"] == mode
                await asyncio.gather(ada.remote_videos_playing(1), dan.remote_videos_playing(1))
                # Dan's media really crossed the namespace's link.
                assert set(await dan.page.evaluate(SELECTED_LOCAL)) == {namespace.inside_address}
                assert not ada.errors and not dan.errors
            finally:
                await host_pages.close_all()
                await inside_pages.close_all()
