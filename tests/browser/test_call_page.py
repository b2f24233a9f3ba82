"""The call page in Chromium with fake devices: what people on a shared link see and hear."""

from __future__ import annotations

import asyncio

import aiohttp
import jwt
import pytest

from tests.browser.conftest import (
    MEDIA_TIMEOUT,
    SCREEN_TILE,
    CallPage,
    Pages,
    room_id,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(150)]

NAMES = ["Mina", "Joon", "Sara", "Leo"]
SECRET = "a-test-secret-that-is-long-enough-for-hs256"


async def open_many(people: Pages, url: str, room: str, count: int) -> list[CallPage]:
    pages = [await people(url, room, name) for name in NAMES[:count]]
    for page in pages:
        await page.joined(count - 1)
    return pages


async def test_three_people_on_a_link_see_each_other_and_mute_shows(people: Pages) -> None:
    async with people.server(room_mode="mesh") as url:
        pages = await open_many(people, url, room_id("mesh"), 3)
        await asyncio.gather(*(p.remote_videos_playing(2) for p in pages))
        assert [(await p.state())["mode"] for p in pages] == ["mesh"] * 3

        mina, joon, sara = pages
        mina_id = (await mina.state())["selfId"]
        await mina.page.click("#btn-mic")
        assert await mina.page.get_attribute("#btn-mic", "aria-pressed") == "false"
        muted_tile = f'.tile[data-peer="{mina_id}"][data-muted="true"] .badge-muted:not([hidden])'
        for other in (joon, sara):
            await other.page.wait_for_selector(muted_tile)

        # The keyboard shortcut turns it back on, and the others see that too.
        await mina.page.keyboard.press("m")
        for other in (joon, sara):
            await other.page.wait_for_selector(f'.tile[data-peer="{mina_id}"][data-muted="false"]')


async def test_four_people_in_a_mesh_room_see_and_hear_each_other(people: Pages) -> None:
    async with people.server(room_mode="mesh") as url:
        pages = await open_many(people, url, room_id("mesh4"), 4)
        await asyncio.gather(*(p.remote_videos_playing(3) for p in pages))
        await asyncio.gather(*(p.remote_audio_flowing(3) for p in pages))
        assert [(await p.state())["mode"] for p in pages] == ["mesh"] * 4


async def test_chat_reaches_everyone_history_for_late_joiner_and_leaving_removes_tile(
    people: Pages,
) -> None:
    async with people.server(room_mode="mesh") as url:
        room = room_id("chat")
        mina, joon = await open_many(people, url, room, 2)
        await mina.page.click("#btn-chat")
        await mina.page.fill("#chat-input", "Page 42, exercise 3?")
        await mina.page.press("#chat-input", "Enter")
        message = ".msg-text:text-is('Page 42, exercise 3?')"
        await joon.page.wait_for_selector(f"#chat-list {message}", state="attached")
        # Joon's panel is closed: the unread count tells him there is something new.
        await joon.page.wait_for_selector("#chat-badge:not([hidden])")

        sara = await people(url, room, "Sara")
        await sara.joined(2)
        await sara.page.wait_for_selector(f"#chat-list {message}", state="attached")
        await sara.remote_videos_playing(2)

        joon_id = (await joon.state())["selfId"]
        await joon.page.click("#btn-leave")
        await joon.page.wait_for_selector("#lobby", state="visible")
        for page in (mina, sara):
            await page.page.wait_for_selector(f'.tile[data-peer="{joon_id}"]', state="detached")
            await page.remote_videos_playing(1)


async def test_joining_without_devices_is_receive_only_with_a_plain_message(
    people: Pages,
) -> None:
    no_devices = """
      navigator.mediaDevices.getUserMedia = () =>
        Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));
    """
    async with people.server(room_mode="mesh") as url:
        room = room_id("recv")
        mina = await people(url, room, "Mina")
        await mina.joined(0)
        viewer = await people(url, room, "Viewer", init_script=no_devices)
        await viewer.page.wait_for_selector(".toast-error:has-text('No camera or microphone')")
        await viewer.joined(1)
        await viewer.remote_videos_playing(1)
        assert await viewer.page.is_disabled("#btn-mic")
        viewer_id = (await viewer.state())["selfId"]
        await mina.page.wait_for_selector(
            f'.tile[data-peer="{viewer_id}"][data-muted="true"][data-video-off="true"]'
        )


async def test_a_page_whose_socket_is_cut_or_network_drops_rejoins_by_itself(people: Pages) -> None:
    async with people.server(room_mode="mesh") as url:
        mina, joon = await open_many(people, url, room_id("cut"), 2)
        await asyncio.gather(mina.remote_videos_playing(1), joon.remote_videos_playing(1))
        old_id = (await mina.state())["selfId"]

        await mina.page.evaluate("window.__call.socket.io.engine.close()")
        new_id = await mina.wait(
            """old => { const s = window.__call.state;
                        return s.connection === 'connected' && s.joined && s.selfId !== old
                               && s.participants.length === 1 && s.selfId; }""",
            old_id,
        )
        assert new_id != old_id
        await joon.page.wait_for_selector(f'.tile[data-peer="{old_id}"]', state="detached")
        await joon.page.wait_for_selector(f'.tile[data-peer="{new_id}"]')
        await asyncio.gather(mina.remote_videos_playing(1), joon.remote_videos_playing(1))
        assert await mina.page.is_hidden("#banner")

        # The network drops: the banner says so, and the call resumes when it is back.
        await mina.page.context.set_offline(True)
        await mina.page.wait_for_selector("#banner[data-state=offline]:has-text('offline')")
        await joon.page.wait_for_selector(f'.tile[data-peer="{new_id}"]', state="detached")
        await mina.page.context.set_offline(False)
        await mina.wait(
            """old => { const s = window.__call.state;
                        return s.connection === 'connected' && s.joined && s.selfId !== old; }""",
            new_id,
        )
        await asyncio.gather(mina.remote_videos_playing(1), joon.remote_videos_playing(1))
        assert await mina.page.is_hidden("#banner")


async def test_auto_mode_from_three_to_four_keeps_every_video_playing(people: Pages) -> None:
    async with people.server(room_mode="auto", mesh_max="3") as url:
        room = room_id("auto")
        pages = await open_many(people, url, room, 3)
        await asyncio.gather(*(p.remote_videos_playing(2) for p in pages))
        assert [(await p.state())["mode"] for p in pages] == ["mesh"] * 3

        leo = await people(url, room, "Leo")
        pages.append(leo)
        await leo.joined(3)
        for page in pages:
            await page.wait("() => window.__call.state.mode === 'sfu'", timeout=MEDIA_TIMEOUT)
        await asyncio.gather(*(p.remote_videos_playing(3) for p in pages))
        await asyncio.gather(*(p.remote_audio_flowing(3) for p in pages))

        # Back to two people: the room returns to mesh; one side of the pair offers.
        for page in pages[2:]:
            await page.page.click("#btn-leave")
        for page in pages[:2]:
            await page.wait("() => window.__call.state.mode === 'mesh'", timeout=MEDIA_TIMEOUT)
        await asyncio.gather(*(p.remote_videos_playing(1) for p in pages[:2]))


async def screen_seen_by(viewer: CallPage, sharer_id: str) -> None:
    await viewer.page.wait_for_selector(
        f'.tile[data-peer="{sharer_id}"][data-kind=camera] .badge-sharing:not([hidden])'
    )
    await viewer.wait(
        f"() => {{ const v = document.querySelector('{SCREEN_TILE}');"
        " return v && v.videoWidth > 0 && v.currentTime > 0.3; }",
        timeout=MEDIA_TIMEOUT,
    )


async def test_screen_share_is_shown_large_to_the_others_and_goes_away(people: Pages) -> None:
    async with people.server(room_mode="mesh") as url:
        mina, joon = await open_many(people, url, room_id("screen"), 2)
        await joon.remote_videos_playing(1)
        mina_id = (await mina.state())["selfId"]
        await mina.page.keyboard.press("s")
        await screen_seen_by(joon, mina_id)
        assert await joon.page.is_visible("#stage.has-screen #screens")
        await mina.page.click("#btn-screen")
        await joon.page.wait_for_selector(SCREEN_TILE, state="detached")
        await joon.remote_videos_playing(1)


async def test_three_people_in_an_sfu_room_see_each_other(people: Pages) -> None:
    async with people.server(room_mode="sfu") as url:
        pages = await open_many(people, url, room_id("sfu"), 3)
        await asyncio.gather(*(p.remote_videos_playing(2) for p in pages))
        for page in pages:
            state = await page.state()
            assert state["mode"] == "sfu"
            assert state["peers"] == {"sfu": "connected"}
            assert state["bitrateCaps"] == {"video": 250_000}  # ?lowres=1: 320x240
            others = {p["socketId"] for p in state["participants"]}
            assert set(state["remoteStreams"]) == others

        # Joining the same room again (a retried join) gets a fresh connection from the SFU.
        room = (await pages[0].state())["roomId"]
        await pages[0].page.evaluate(
            """room => {
                window.__sfuOffers = 0;
                window.__call.socket.on('video:offer', (m) => {
                    if (m.from === 'sfu') window.__sfuOffers += 1;
                });
                window.__call.socket.emit('video:join-room', { roomId: room, sfu: true });
            }""",
            room,
        )
        await pages[0].wait(
            "() => window.__sfuOffers > 0 && window.__call.state.peers.sfu === 'connected'"
        )
        await asyncio.gather(*(p.remote_videos_playing(2) for p in pages))

        # A screen share is an extra stream `<socketId>:screen` from the server.
        mina_id = (await pages[0].state())["selfId"]
        await pages[0].page.click("#btn-screen")
        await asyncio.gather(*(screen_seen_by(p, mina_id) for p in pages[1:]))
        assert f"{mina_id}:screen" in (await pages[1].state())["remoteStreams"]


async def test_a_closed_room_sends_people_back_to_the_lobby_with_the_reason(people: Pages) -> None:
    async with people.server(room_mode="mesh", api_key="k") as url:
        room = room_id("closed")
        (mina,) = await open_many(people, url, room, 1)
        async with (
            aiohttp.ClientSession() as http,
            http.delete(f"{url}/api/rooms/{room}", headers={"Authorization": "Bearer k"}) as res,
        ):
            assert res.status == 200
        await mina.page.wait_for_selector("#lobby-message:has-text('ended by the organiser')")
        assert await mina.page.is_hidden("#call")
        assert await mina.page.input_value("#room-input") == room


async def test_a_refused_connection_says_so_and_a_token_link_gets_in(people: Pages) -> None:
    async with people.server(room_mode="mesh", jwt_secret=SECRET) as url:
        room = room_id("jwt")
        stranger = await people(url, room, "Stranger")
        await stranger.page.wait_for_selector(
            "#banner[data-state=failed]:has-text('Could not connect'):has-text('Try again')"
        )
        token = jwt.encode({"sub": "ana-1", "name": "Ana"}, SECRET, algorithm="HS256")
        ana = await people(url, room, "Ana", token=token)
        await ana.joined(0)
        assert await ana.page.is_hidden("#banner")
