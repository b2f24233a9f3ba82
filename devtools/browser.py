"""Debian's Chromium as the tests and benchmarks launch it, on the host or in a namespace.

Playwright cannot download a browser here: it runs `/usr/bin/chromium` with a fake camera
and microphone. `launch_chromium(pw, namespace=ns)` runs it inside a network namespace
through a launcher script (`ip netns exec <ns> /usr/bin/chromium "$@"`): Playwright drives
the browser over a pipe, which crosses namespaces, while every socket the browser opens
(HTTP, Socket.IO, ICE) lives in the namespace.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from playwright.async_api import Browser, Playwright

from devtools.netns import Namespace

CHROMIUM = "/usr/bin/chromium"

FAKE_MEDIA = "--use-fake-device-for-media-stream"

CHROMIUM_ARGS = [
    # Fake camera and microphone, permission granted without a prompt.
    FAKE_MEDIA,
    "--use-fake-ui-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    # The machine has no network but the package registries: no background fetches.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Several pages share one browser: none of them may be throttled as a background tab.
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # Pages Playwright serves itself (the documents' client, at the server's origin) count
    # as public documents, whose requests to 127.0.0.1 Chromium blocks; a page the server
    # serves is not affected.
    "--disable-features=LocalNetworkAccessChecks",
]


def fake_camera(args: Sequence[str], *, fps: int | None) -> list[str]:
    """`args` with the fake capture device at `fps` frames per second (its default is 20).

    Chromium's fake device takes its options in the flag's value
    (`--use-fake-device-for-media-stream=fps=15`); the resolution is what the page asks for.
    """
    if fps is None:
        return list(args)
    flag = f"{FAKE_MEDIA}=fps={fps}"
    return [flag if a.split("=", 1)[0] == FAKE_MEDIA else a for a in args]


def secure_origins(args: Sequence[str], origins: Sequence[str]) -> list[str]:
    """`args` plus the origins Chromium must treat as secure.

    A page in a namespace reaches the server at the host end's address, not at localhost:
    an `http://10.213.x.y:port` page is not a secure context, so without this it has no
    `navigator.mediaDevices` (no camera, no microphone).
    """
    if not origins:
        return list(args)
    return [*args, "--unsafely-treat-insecure-origin-as-secure=" + ",".join(origins)]


def via(url: str, host: str) -> str:
    """`url` with its host replaced: a server on 0.0.0.0 prints ``http://0.0.0.0:PORT``, the
    host's pages reach it at 127.0.0.1, a namespace's at its host end's address."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}"))


@contextlib.asynccontextmanager
async def launch_chromium(
    pw: Playwright, *, args: Sequence[str] = CHROMIUM_ARGS, namespace: Namespace | None = None
) -> AsyncIterator[Browser]:
    """Chromium on the host, or inside `namespace`; closed on exit."""
    with tempfile.TemporaryDirectory(prefix="studycall-chromium-") as tmp:
        executable = CHROMIUM if namespace is None else str(namespace.launcher(CHROMIUM, Path(tmp)))
        browser = await pw.chromium.launch(executable_path=executable, args=list(args))
        try:
            yield browser
        finally:
            await browser.close()


__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "FAKE_MEDIA",
    "fake_camera",
    "launch_chromium",
    "secure_origins",
    "via",
]
