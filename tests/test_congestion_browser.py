"""A busy camera gets as much bitrate through the SFU as on a direct browser-to-browser call.

Chromium's congestion controller (GCC) sets the encoder's target from the feedback it
gets. Through the SFU it must get feedback as good as a direct peer gives, or the camera
crawls at a fraction of what the link carries. Both paths run at once in one Chromium,
from the same busy picture, so they share the machine's speed of the moment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser import launch_chromium
from tests.conftest import ServerProcess
from tests.congestion import busy_camera_args, direct_leg, run_legs, sfu_leg

pytestmark = pytest.mark.browser

RUN_SECONDS = 15
MEASURED_SECONDS = 5
MIN_RATIO = 0.7


@pytest.fixture
async def busy_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        chromium = await launch_chromium(pw, *busy_camera_args())
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_sfu_path_gets_the_bitrate_of_a_direct_call(
    server: ServerProcess, busy_browser: Browser, artifacts: Path
) -> None:
    sfu = await sfu_leg(busy_browser, server.http_url, server.ws_url)
    direct = await direct_leg(busy_browser, server.http_url)
    await run_legs([sfu, direct], RUN_SECONDS)

    through, straight = sfu.summary(MEASURED_SECONDS), direct.summary(MEASURED_SECONDS)
    stats = await server.stats()
    metrics = {
        "sfu": through,
        "direct": straight,
        "targetKbpsEachSecond": {
            leg.name: [round(sent.get("targetBitrate", 0) / 1000) for sent, _ in leg.samples]
            for leg in (sfu, direct)
        },
        "widthEachSecond": {
            leg.name: [received.get("frameWidth", 0) for _, received in leg.samples]
            for leg in (sfu, direct)
        },
    }
    (artifacts / "congestion-browser.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"congestion metrics: {json.dumps(metrics)}")
    detail = (
        f"\nsfu: {through}\ndirect: {straight}\nsfu samples: {sfu.samples[-3:]}"
        f"\nserver stats: {json.dumps(stats)[:3000]}"
    )

    assert straight["targetKbps"] > 800, "the direct call itself did not ramp up" + detail
    assert through["targetKbps"] >= MIN_RATIO * straight["targetKbps"], (
        "the publisher's target through the SFU is far below the direct call's" + detail
    )
    assert through["receivedKbps"] >= MIN_RATIO * straight["receivedKbps"], (
        "the subscriber receives far less through the SFU than on the direct call" + detail
    )
