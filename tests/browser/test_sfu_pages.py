"""Four Chromium pages in an sfu room: every page decodes every other page, smoothly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from benchmarks.mesh_vs_sfu import RECORD_PCS
from tests.browser.conftest import MEDIA_TIMEOUT, SCREEN_TILE, CallPage, Pages, room_id
from tests.browser.test_call_page import NAMES, screen_seen_by

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

WINDOW_S = 5.0
"""Frame rates are measured over this window (a rate needs time to pass)."""
KEYFRAME_INTERVAL_S = 0.5
"""The SFU's PLI spacing: no freeze may last longer than one."""

# Per connection: what the page sends (frames encoded per camera) and what it decodes.
VIDEO_STATS = """
async () => {
  const out = { sent: {}, received: {} };
  for (const pc of window.__benchPcs || []) {
    if (pc.connectionState === 'closed') continue;
    const stats = await pc.getStats();
    stats.forEach(r => {
      if (r.kind !== 'video') return;
      if (r.type === 'outbound-rtp') out.sent[r.ssrc] = r.framesEncoded || 0;
      if (r.type === 'inbound-rtp') out.received[r.trackIdentifier || r.id] = {
        decoded: r.framesDecoded || 0,
        freezes: r.freezeCount || 0,
        frozen: r.totalFreezesDuration || 0,
        lost: r.packetsLost || 0, nacks: r.nackCount || 0, plis: r.pliCount || 0,
        keyframes: r.keyFramesDecoded || 0, dropped: r.framesDropped || 0,
      };
    });
  }
  return out;
}
"""


async def video_stats(page: CallPage) -> dict[str, Any]:
    stats: dict[str, Any] = await page.page.evaluate(VIDEO_STATS)
    return stats


async def test_four_pages_decode_each_other_at_the_publishers_rate(people: Pages) -> None:
    async with people.server(room_mode="sfu") as url:
        room = room_id("sfu4")
        pages = [await people(url, room, name, init_script=RECORD_PCS) for name in NAMES]
        for page in pages:
            await page.joined(3)
        await asyncio.gather(*(p.remote_videos_playing(3) for p in pages))
        await asyncio.gather(*(p.remote_audio_flowing(3) for p in pages))

        before = [await video_stats(p) for p in pages]
        await asyncio.sleep(WINDOW_S)
        after = [await video_stats(p) for p in pages]
        encoded = [
            sum(a["sent"].values()) - sum(b["sent"].values())
            for a, b in zip(after, before, strict=True)
        ]
        slowest_publisher = min(encoded) / WINDOW_S
        assert slowest_publisher > 5  # the fake camera really runs
        for page, a, b in zip(pages, after, before, strict=True):
            streams = [k for k in a["received"] if k in b["received"]]
            assert len(streams) == 3, (page.name, a["received"])
            for key in streams:
                decoded = (a["received"][key]["decoded"] - b["received"][key]["decoded"]) / WINDOW_S
                frozen = a["received"][key]["frozen"] - b["received"][key]["frozen"]
                # every remote camera at (nearly) its publisher's frame rate, no long freeze
                assert decoded >= 0.85 * slowest_publisher, (page.name, key, decoded, encoded)
                assert frozen <= KEYFRAME_INTERVAL_S, (
                    page.name,
                    key,
                    frozen,
                    a["received"][key],
                    b["received"][key],
                )

        # A screen share reaches the three others, and goes away again.
        sharer = pages[0]
        sharer_id = (await sharer.state())["selfId"]
        await sharer.page.keyboard.press("s")
        await asyncio.gather(*(screen_seen_by(p, sharer_id) for p in pages[1:]))
        await sharer.page.click("#btn-screen")
        for page in pages[1:]:
            await page.page.wait_for_selector(SCREEN_TILE, state="detached")

        # One page leaves and comes back: everyone plays everyone again.
        leaver = pages[3]
        await leaver.page.click("#btn-leave")
        for page in pages[:3]:
            await page.joined(2)
        await asyncio.gather(*(p.remote_videos_playing(2) for p in pages[:3]))
        # back in the lobby, with the room and name filled in: "Join call" again
        await leaver.page.click("#join-form button[type=submit]")
        await leaver.joined(3, timeout=MEDIA_TIMEOUT)
        await asyncio.gather(*(p.remote_videos_playing(3) for p in pages))


async def test_four_pages_in_a_room_spread_over_two_media_workers_see_and_hear_everyone(
    people: Pages,
) -> None:
    """``MEDIA_WORKERS=2`` with each joiner on the next worker: the room spans both, every
    track crosses the pipe once, and every page still plays every other page."""
    from tests.clients import http_json

    async with people.server(room_mode="sfu", media_workers="2", media_placement="spread") as url:
        room = room_id("spread")
        pages = [await people(url, room, name) for name in NAMES]
        for page in pages:
            await page.joined(3)
        await asyncio.gather(*(p.remote_videos_playing(3) for p in pages))
        await asyncio.gather(*(p.remote_audio_flowing(3) for p in pages))
        status, health = await http_json("GET", f"{url}/health")
        assert status == 200, health
        assert [w["participants"] for w in health["workers"]] == [2, 2]
