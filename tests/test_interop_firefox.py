"""Debian's Firefox ESR through the SFU, with the JS SDK: Firefox → Chromium,
Chromium → Firefox and Firefox → Firefox, each decoding 640x480 video and audible Opus.

Firefox offers Opus as `maxplaybackrate=48000;stereo=1;useinbandfec=1`; the answers it
gets must keep those values (they used to come back rewritten, FEC off).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.conftest import ServerProcess
from tests.firefox import FirefoxBrowser, launch_firefox
from tests.js_peers import start_sdk_peer, wait_decoded

pytestmark = [pytest.mark.browser, pytest.mark.media]

FRAMES_REQUIRED = 60
FIREFOX_OPUS = {"maxplaybackrate": "48000", "stereo": "1", "useinbandfec": "1"}


@pytest.fixture
async def firefox() -> AsyncIterator[FirefoxBrowser]:
    async with launch_firefox() as browser:
        yield browser


def opus_fmtp(lines: list[str]) -> dict[str, str]:
    """The Opus parameters in a description's rtpmap/fmtp/setup lines (tests/js/sdk_peer.js)."""
    pt = next(m.group(1) for line in lines if (m := re.match(r"rtpmap:(\d+) opus/", line, re.I)))
    fmtp = next(line for line in lines if line.startswith(f"fmtp:{pt} "))
    return dict(p.split("=", 1) for p in fmtp.split(" ", 1)[1].split(";"))


def assert_firefox_opus_kept(description: dict) -> None:
    offered, answered = opus_fmtp(description["offer"]), opus_fmtp(description["answer"])
    assert FIREFOX_OPUS.items() <= offered.items(), offered
    assert FIREFOX_OPUS.items() <= answered.items(), answered


async def test_firefox_and_chromium_each_decode_the_other(
    server: ServerProcess, firefox: FirefoxBrowser, browser: Browser
) -> None:
    fox = await firefox.new_page()
    await start_sdk_peer(fox, server, "firefox", "r1")
    chromium = await (await browser.new_context()).new_page()
    await start_sdk_peer(chromium, server, "chromium", "r1")

    fox_pub = await fox.evaluate("() => window.interop.publish()")
    assert_firefox_opus_kept(fox_pub)
    chromium_pub = await chromium.evaluate("() => window.interop.publish()")

    to_chromium = await chromium.evaluate("() => window.interop.subscribeTo('firefox')")
    to_firefox = await fox.evaluate("() => window.interop.subscribeTo('chromium')")
    assert to_chromium["ok"] and to_firefox["ok"], (to_chromium, to_firefox)
    assert_firefox_opus_kept(to_firefox)

    context = f"\nfirefox console: {fox.console}\nserver log:\n{server.log()[-3000:]}"
    try:
        seen = await wait_decoded(
            chromium, fox_pub["mid"], FRAMES_REQUIRED, what="Firefox → Chromium"
        )
        assert seen["video"]["codec"] == "video/VP8"
        await wait_decoded(fox, chromium_pub["mid"], FRAMES_REQUIRED, what="Chromium → Firefox")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{context}") from exc


async def test_firefox_to_firefox(server: ServerProcess, firefox: FirefoxBrowser) -> None:
    alice, bob = await firefox.new_page(), await firefox.new_page()
    await start_sdk_peer(alice, server, "alice", "r1")
    await start_sdk_peer(bob, server, "bob", "r1")
    published = await alice.evaluate("() => window.interop.publish()")
    subscribed = await bob.evaluate("() => window.interop.subscribeTo('alice')")
    assert subscribed["ok"], subscribed
    assert_firefox_opus_kept(subscribed)
    try:
        await wait_decoded(bob, published["mid"], FRAMES_REQUIRED, what="Firefox → Firefox")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nbob console: {bob.console}\n{server.log()[-3000:]}") from exc
