"""Debian's Chromium as the tests and benchmarks launch it (Playwright cannot download one)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    # Fake camera and microphone, permission granted without a prompt.
    "--use-fake-device-for-media-stream",
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
