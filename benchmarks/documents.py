"""The documents' own video client, for tests and benchmarks: `documents_client.html`.

Written from the design documents' code (the CoUp join flow, the guide's `useWebRTC` hook),
it knows nothing of the SFU. It is not part of the product, so the server does not serve
it: Playwright answers its URL at the server's origin (the page then loads socket.io from
the server's ``/vendor``, as a real deployment would).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from playwright.async_api import BrowserContext, Page, Route

PAGE = (Path(__file__).parent / "documents_client.html").read_text()
PATH = "/documents-client"

REMOTE_VIDEOS = "[...document.querySelectorAll('#remote video')]"
# True once the page shows `n` remote videos with frames whose playback time has moved on
# by 0.3 s since each was first seen playing.
ALL_PLAYING = (
    "n => { const videos = " + REMOTE_VIDEOS + ";"
    """
  const seen = (window.__benchSeen ??= {});
  let ok = videos.length === n;
  for (const v of videos) {
    if (!v.videoWidth || v.paused) { ok = false; continue; }
    const first = (seen[v.dataset.peer] ??= v.currentTime);
    if (v.currentTime < first + 0.3) ok = false;
  }
  return ok;
}"""
)


async def open_documents_client(
    context: BrowserContext,
    base_url: str,
    room: str,
    user: str,
    page_errors: list[str] | None = None,
) -> Page:
    """A page of the documents' client in ``context``, joining ``room`` as ``user``;
    uncaught exceptions on the page go to ``page_errors``."""
    page = await context.new_page()
    if page_errors is not None:
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))

    async def serve(route: Route) -> None:
        await route.fulfill(body=PAGE, content_type="text/html")

    await page.route(f"{base_url}{PATH}*", serve)
    await page.goto(f"{base_url}{PATH}?{urlencode({'room': room, 'user': user})}")
    return page
