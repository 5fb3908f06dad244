"""Debian's Chromium for end-to-end tests: the flags it needs on a loopback-only machine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from playwright.async_api import Browser, Page, Playwright

from tests.conftest import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


async def launch_chromium(playwright: Playwright, *extra_args: str) -> Browser:
    """Headless, with a fake camera and microphone; never a downloaded browser."""
    return await playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args]
    )


@dataclass
class DemoTab:
    """One participant's tab of the demo page, with what it logged, for failure messages."""

    page: Page
    name: str
    state_script: str  # JS returning the slice of `window.aiosfuDemo` a test reads
    fail_on_error_state: bool = False
    console: list[str] = field(default_factory=list)

    async def demo(self) -> dict:
        return await self.page.evaluate(self.state_script) or {}

    async def wait_demo(self, predicate, what: str, within: float = 15.0) -> dict:  # type: ignore[no-untyped-def]
        latest: dict = {}

        async def check() -> bool:
            nonlocal latest
            latest = await self.demo()
            if self.fail_on_error_state and latest.get("state") == "error":
                raise AssertionError(f"{self.name}: page error: {latest.get('error')}")
            return bool(predicate(latest))

        try:
            await wait_for(check, timeout=within, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(
                f"{self.name}: {what}: {exc}\nstate: {latest}\nconsole:\n" + "\n".join(self.console)
            ) from exc
        return latest


Tab = TypeVar("Tab", bound=DemoTab)


async def open_tab(
    browser: Browser, url: str, name: str, tab_class: type[Tab], **fields: Any
) -> Tab:
    """Open `url` in its own context, like a separate participant's browser."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    tab = tab_class(page=page, name=name, **fields)
    page.on("console", lambda msg: tab.console.append(f"[{msg.type}] {msg.text}"))
    page.on("pageerror", lambda err: tab.console.append(f"[pageerror] {err}"))
    await page.goto(url)
    return tab
