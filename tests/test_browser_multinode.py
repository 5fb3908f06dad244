"""Chromium through a cluster: the demo page publishes through signal node 1, and a
Chromium subscriber on signal node 2 decodes the camera from the room's SFU node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from playwright.async_api import Browser

from tests.browser import open_tab
from tests.cluster import Cluster, start_cluster, wait_for_discovery
from tests.conftest import wait_for
from tests.test_browser import (
    DECODE_DEADLINE_MS,
    DEMO_STATE,
    FRAMES_REQUIRED,
    HEIGHT,
    WIDTH,
    DemoPage,
    assert_no_page_errors,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    asyncio.run(wait_for_discovery(running))
    yield running
    running.stop()


async def open_demo(browser: Browser, url: str, name: str, query: str) -> DemoPage:
    return await open_tab(
        browser, f"{url}/?{query}", name, DemoPage, state_script=DEMO_STATE,
        fail_on_error_state=True,
    )  # fmt: skip


async def test_chromium_subscriber_on_another_signal_node_decodes_the_camera(
    cluster: Cluster, browser: Browser
) -> None:
    one, two = cluster.signals
    alice = await open_demo(browser, one.http_url, "alice", "room=x1&name=alice&autojoin=1")
    published = await alice.wait_demo(
        lambda d: d.get("state") == "joined" and d.get("localMid"), "publish camera"
    )
    mid = published["localMid"]
    bob = await open_demo(browser, two.http_url, "bob", "room=x1&name=bob&autojoin=1&publish=0")
    await bob.wait_demo(
        lambda d: d.get("state") == "joined" and any(s["mid"] == mid for s in d["subscriptions"]),
        "subscribe to alice across signal nodes",
    )
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
            f"bob (signal-2) did not decode {FRAMES_REQUIRED} frames at {WIDTH}x{HEIGHT} "
            f"within {DECODE_DEADLINE_MS} ms: {exc}\nlast stats: {latest}\nbob console:\n"
            + "\n".join(bob.console)
        ) from exc
    print(f"\ncross-node Chromium: {latest['framesDecoded']} frames at {WIDTH}x{HEIGHT}, "
          f"{latest['now'] - latest['answerAt']:.0f} ms after the answer")  # fmt: skip
    assert_no_page_errors(alice, bob)


async def test_chromium_publishes_again_when_its_sfu_node_is_killed(
    cluster: Cluster, browser: Browser
) -> None:
    one, two = cluster.signals
    alice = await open_demo(browser, one.http_url, "alice", "room=x2&name=alice&autojoin=1")
    first = (
        await alice.wait_demo(
            lambda d: d.get("state") == "joined" and d.get("localMid"), "publish camera"
        )
    )["localMid"]
    bob = await open_demo(browser, two.http_url, "bob", "room=x2&name=bob&autojoin=1&publish=0")
    await bob.wait_demo(
        lambda d: any(s["mid"] == first for s in d["subscriptions"]), "subscribe to alice"
    )
    stats = await bob.video_stats()
    sfuid = next(s for s in (await bob.demo())["subscriptions"] if s["mid"] == first)["sfuid"]
    node = next(n for n in cluster.sfus if n.name == sfuid)
    node.kill()
    republished = await alice.wait_demo(
        lambda d: d.get("localMid") not in (None, first), "publish again by itself", within=15
    )
    second = republished["localMid"]
    await bob.wait_demo(
        lambda d: [s["mid"] for s in d["subscriptions"]] == [second],
        "drop the lost stream and subscribe to the new one",
        within=10,
    )

    async def decoding() -> bool:
        sample = await bob.video_stats()
        stat = next((s for s in sample["stats"] if s["mid"] == second), None)
        return bool(stat and stat["framesDecoded"] >= 30 and stat["frameWidth"] == WIDTH)

    await wait_for(decoding, timeout=15, interval=0.2)
    assert stats  # bob had been decoding the first stream
    assert_no_page_errors(alice, bob)
