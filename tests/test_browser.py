"""End-to-end: the demo page in headless Chromium publishes and subscribes through a real server.

Chromium's fake capture device supplies the camera and microphone, so no hardware or
permission prompt is involved. The browser is Debian's, never a downloaded one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser import DemoTab, open_tab
from tests.conftest import ServerProcess, wait_for

pytestmark = pytest.mark.browser


FRAMES_REQUIRED = 120
WIDTH, HEIGHT = 640, 480
DECODE_DEADLINE_MS = 8000


DEMO_STATE = (
    "() => { const d = window.aiosfuDemo;"
    " return d && {state: d.state, error: d.error, localMid: d.localMid,"
    " subscriptions: d.subscriptions.map((s) => ({...s}))}; }"
)


@dataclass
class DemoPage(DemoTab):
    async def video_stats(self) -> dict:
        """Stats plus the page's own clock, so deadlines are measured where answerAt was."""
        return await self.page.evaluate(
            "async () => ({now: performance.now(), stats: await window.aiosfuDemo.videoStats()})"
        )


async def open_demo(browser: Browser, server: ServerProcess, name: str, query: str) -> DemoPage:
    return await open_tab(
        browser,
        f"{server.http_url}/?{query}",
        name,
        DemoPage,
        state_script=DEMO_STATE,
        fail_on_error_state=True,
    )


async def join_alice_and_bob(browser: Browser, server: ServerProcess) -> tuple[DemoPage, DemoPage]:
    alice = await open_demo(browser, server, "alice", "room=r1&name=alice&autojoin=1")
    published = await alice.wait_demo(
        lambda d: d.get("state") == "joined" and d.get("localMid"), "publish camera"
    )
    bob = await open_demo(browser, server, "bob", "room=r1&name=bob&autojoin=1&publish=0")
    await bob.wait_demo(
        lambda d: (
            d.get("state") == "joined"
            and any(s["mid"] == published["localMid"] for s in d["subscriptions"])
        ),
        "subscribe to alice",
    )
    return alice, bob


def assert_no_page_errors(*tabs: DemoPage) -> None:
    """An uncaught exception in the page is a bug even when the media still flowed."""
    for tab in tabs:
        errors = [line for line in tab.console if line.startswith("[pageerror]")]
        assert not errors, f"{tab.name}: " + "\n".join(errors)


async def test_subscriber_decodes_publisher_camera(
    server: ServerProcess, browser: Browser, artifacts: Path
) -> None:
    alice, bob = await join_alice_and_bob(browser, server)
    mid = (await alice.demo())["localMid"]

    latest: dict = {}

    async def decoded_enough() -> bool:
        nonlocal latest
        sample = await bob.video_stats()
        stat = next(s for s in sample["stats"] if s["mid"] == mid)
        latest = {**stat, "now": sample["now"]}
        if sample["now"] - stat["answerAt"] > DECODE_DEADLINE_MS:
            raise AssertionError(f"deadline passed: {latest}")
        return (
            stat["framesDecoded"] >= FRAMES_REQUIRED
            and stat["frameWidth"] == WIDTH
            and stat["frameHeight"] == HEIGHT
        )

    try:
        await wait_for(decoded_enough, timeout=DECODE_DEADLINE_MS / 1000 + 5, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(
            f"bob did not decode {FRAMES_REQUIRED} frames at {WIDTH}x{HEIGHT} within "
            f"{DECODE_DEADLINE_MS} ms of the answer: {exc}\nlast stats: {latest}\n"
            "bob console:\n" + "\n".join(bob.console) + "\nserver log:\n" + server.log()[-4000:]
        ) from exc

    await bob.page.wait_for_function(
        "(mid) => window.aiosfuDemo.subscriptions"
        ".some((s) => s.mid === mid && s.firstFrameAt !== null)",
        arg=mid,
        timeout=2000,
    )
    final = next(s for s in (await bob.video_stats())["stats"] if s["mid"] == mid)
    first_frame_ms = final["firstFrameAt"] - final["answerAt"]
    metrics = {
        "mid": mid,
        "framesDecoded": final["framesDecoded"],
        "frameWidth": final["frameWidth"],
        "frameHeight": final["frameHeight"],
        "answerToFirstFrameMs": round(first_frame_ms, 1),
        "answerToRequiredFramesMs": round(latest["now"] - latest["answerAt"], 1),
        "framesRequired": FRAMES_REQUIRED,
    }
    (artifacts / "browser-metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"browser metrics: {json.dumps(metrics)}")

    video = bob.page.locator(f'.tile[data-mid="{mid}"] video')
    await video.wait_for(state="visible", timeout=2000)
    await bob.page.screenshot(path=str(artifacts / "browser-subscriber.png"))

    assert first_frame_ms >= 0
    assert await bob.page.locator(".tile").count() == 1, "bob publishes nothing, sees only alice"
    assert_no_page_errors(alice, bob)


async def test_leave_removes_video_for_others(server: ServerProcess, browser: Browser) -> None:
    alice, bob = await join_alice_and_bob(browser, server)
    mid = (await alice.demo())["localMid"]
    tile = bob.page.locator(f'.tile[data-mid="{mid}"]')
    await tile.wait_for(state="visible", timeout=5000)

    await alice.page.click("#leave")
    await alice.wait_demo(lambda d: d.get("state") == "idle", "leave", within=5)

    try:
        await tile.wait_for(state="detached", timeout=5000)
    except Exception as exc:
        raise AssertionError(
            "alice's video stayed on bob's page after she left\nbob console:\n"
            + "\n".join(bob.console)
            + "\nserver log:\n"
            + server.log()[-4000:]
        ) from exc
    state = await bob.demo()
    assert state["subscriptions"] == []
    assert state["state"] == "joined"
    await bob.page.locator('#participants li[data-uid="alice"]').wait_for(
        state="detached", timeout=5000
    )
    assert_no_page_errors(alice, bob)
