"""/dashboard in Chromium: the rooms, members and streams of a server carrying real
media, with bitrates that move and charts that are drawn; a screenshot is kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser

from aiosfu.client import Client
from aiosfu.signal.grants import Grants
from tests.conftest import ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track
from tests.test_access import keyed, token  # noqa: F401  (the keyed fixture)

pytestmark = [pytest.mark.browser, pytest.mark.media]

PAINTED = """(id) => {
    const c = document.getElementById(id);
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let colored = 0;  // pixels of a series' colour, not the grid's grey or the background
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 0 && Math.abs(data[i] - data[i + 2]) > 60) colored++;
    }
    return colored;
}"""


async def test_dashboard_shows_rooms_streams_and_live_bitrates(
    server: ServerProcess, browser: Browser, artifacts: Path
) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("physics")
    publication = await teacher.publish("physics", [ToneTrack(), PatternTrack(320, 240)])
    student = await Client.connect(server.ws_url, "student")
    await student.join("physics")
    subscription = await student.subscribe("physics", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()

    page = await (await browser.new_context(viewport={"width": 1200, "height": 800})).new_page()
    await page.goto(f"{server.http_url}/dashboard")
    state: dict[str, Any] = {}

    async def live() -> bool:
        nonlocal state
        state = await page.evaluate("() => window.dashboard")
        streams = state["streams"]
        return state["ticks"] >= 4 and all(s["bps"] > 0 for s in streams) and len(streams) == 4

    await wait_for(live, 20, 0.25)
    directions = sorted((s["direction"], s["kind"], s["uid"]) for s in state["streams"])
    assert directions == [
        ("in", "audio", "teacher"),
        ("in", "video", "teacher"),
        ("out", "audio", "student"),
        ("out", "video", "student"),
    ]
    video_in = next(s for s in state["streams"] if s["direction"] == "in" and s["kind"] == "video")
    assert video_in["codec"] == "video/VP8"
    room = page.locator('article.room[data-rid="physics"]')
    assert "2 participants" in await room.locator("h2").inner_text()
    assert "student" in await room.locator(".members").inner_text()
    rows = room.locator("tbody tr")
    assert await rows.count() == 4
    assert "bit/s" in await rows.first.locator(".bitrate").inner_text()
    await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    assert await page.evaluate(PAINTED, "chart-bitrate") > 100
    assert await page.evaluate(PAINTED, "chart-counts") > 100

    # Live: the student leaves, and the page follows without a reload.
    await video.stop()
    await student.close()

    async def followed() -> bool:
        text = await room.locator("h2").inner_text()
        return "1 participant" in text and await rows.count() == 2

    await wait_for(followed, 10, 0.25)
    await teacher.close()


async def test_dashboard_needs_an_operator_token(keyed: ServerProcess, browser: Browser) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{keyed.http_url}/dashboard") as r:
            assert r.status == 401
        async with http.get(f"{keyed.http_url}/dashboard?token={token('s')}") as r:
            assert r.status == 403
    admin = token("ops", Grants(roomList=True))
    page = await (await browser.new_context()).new_page()
    response = await page.goto(f"{keyed.http_url}/dashboard?token={admin}")
    assert response is not None and response.status == 200
    await wait_for(lambda: page.evaluate("() => (window.dashboard || {}).ticks >= 1"), 10, 0.2)
    assert await page.evaluate("() => window.dashboard.error") is None
    assert "0 rooms" in await page.locator("#summary").inner_text()
