"""The classroom stage in Chromium: a teacher's page brings a student on stage, a third
page decodes the student's camera, the teacher takes it back and the tile disappears.
Controls are shown only to whoever holds the grant."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from playwright.async_api import Browser

from tests.browser import DemoTab, open_tab
from tests.conftest import ServerProcess, wait_for
from tests.test_access import ROOM, keyed, token

pytestmark = pytest.mark.browser

__all__ = ["keyed"]  # the fixture

STATE = (
    "() => { const d = window.aiosfuDemo;"
    " return d && {state: d.state, error: d.error, localMid: d.localMid, grants: d.grants,"
    " hands: d.hands, onStage: d.onStage, subscriptions: d.subscriptions.map((s) => ({...s}))}; }"
)


@dataclass
class StagePage(DemoTab):
    async def frames_of(self, mid: str) -> int:
        stats = await self.page.evaluate("() => window.aiosfuDemo.videoStats()")
        return next((s["framesDecoded"] for s in stats if s["mid"] == mid), 0)


async def open_page(
    browser: Browser, server: ServerProcess, uid: str, role: str, publish: bool = True
) -> StagePage:
    query = f"room={ROOM}&token={token(uid, role)}&autojoin=1" + ("" if publish else "&publish=0")
    page = await open_tab(
        browser,
        f"{server.http_url}/?{query}",
        uid,
        StagePage,
        state_script=STATE,
        fail_on_error_state=True,
    )
    await page.wait_demo(lambda d: d.get("state") == "joined", "join")
    return page


async def test_teacher_brings_a_student_on_stage_and_takes_them_off(
    keyed: ServerProcess, browser: Browser
) -> None:
    teacher = await open_page(browser, keyed, "teacher", "teacher")
    await teacher.wait_demo(lambda d: d.get("localMid"), "teacher publishes")
    student = await open_page(browser, keyed, "student", "student")
    watcher = await open_page(browser, keyed, "watcher", "student", publish=False)
    # Wanting a camera is not enough: a student is not on stage yet.
    state = await student.demo()
    assert state["localMid"] is None and state["grants"]["canPublish"] is False

    # Who sees which controls.
    stage_button = teacher.page.locator('#participants button.stage-toggle[data-uid="student"]')
    await stage_button.wait_for(state="visible", timeout=5000)
    assert await student.page.locator("#participants button").count() == 0
    assert await watcher.page.locator("#participants button").count() == 0
    assert await teacher.page.locator("#hand").is_hidden()
    await student.page.locator("#hand").wait_for(state="visible", timeout=5000)

    await student.page.click("#hand")
    await teacher.wait_demo(lambda d: d["hands"] == ["student"], "teacher sees the hand")
    await teacher.page.locator('#participants li[data-uid="student"] .hand').wait_for(timeout=5000)

    await stage_button.click()
    on_stage = await student.wait_demo(lambda d: d.get("localMid"), "student publishes")
    mid = on_stage["localMid"]
    await watcher.wait_demo(lambda d: d["hands"] == [], "the hand is lowered")
    await watcher.wait_demo(
        lambda d: any(s["mid"] == mid for s in d["subscriptions"]), "watcher subscribes"
    )

    async def decoding() -> bool:
        return await watcher.frames_of(mid) >= 30

    await wait_for(decoding, timeout=15, interval=0.2)
    tile = watcher.page.locator(f'.tile[data-mid="{mid}"]')
    await tile.wait_for(state="visible", timeout=2000)

    await teacher.page.locator(
        '#participants button.stage-toggle[data-uid="student"]', has_text="Off stage"
    ).click()
    await tile.wait_for(state="detached", timeout=5000)
    await student.wait_demo(lambda d: d.get("localMid") is None, "student's camera stops")
    assert await student.page.locator('.tile[data-uid="student"]').count() == 0
    for page in (teacher, student, watcher):
        errors = [line for line in page.console if line.startswith("[pageerror]")]
        assert not errors, f"{page.name}: {errors}"
