"""Chromium pages in p2p (mesh) rooms, and chat over the SFU's data-channel relay.

The demo page and the JS SDK do the work; the pages are driven only through their
query parameters, the form and the `window.aiosfuDemo` hooks.
"""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from aiosfu.client import Client, Mesh
from tests.browser import DemoTab
from tests.browser import open_tab as open_demo_tab
from tests.conftest import ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.browser

DEMO_STATE = (
    "() => { const d = window.aiosfuDemo; return d && {state: d.state, error: d.error,"
    " errorCode: d.errorCode, mode: d.mode, localMid: d.localMid, chatReady: d.chatReady,"
    " chat: d.chat.map((c) => ({...c})), peers: d.peers.map((p) => ({...p}))}; }"
)


async def open_tab(browser: Browser, server: ServerProcess, name: str, query: str) -> DemoTab:
    url = f"{server.http_url}/?{query}"
    return await open_demo_tab(browser, url, name, DemoTab, state_script=DEMO_STATE)


def joined(d: dict) -> bool:
    if d.get("state") == "error":
        raise AssertionError(f"page error: {d.get('error')}")
    return d.get("state") == "joined"


async def test_one_to_one_p2p_room_decodes_each_others_camera_and_refuses_a_third(
    browser: Browser, server: ServerProcess
) -> None:
    query = "room=lesson&mode=p2p&capacity=2&autojoin=1"
    alice = await open_tab(browser, server, "alice", f"{query}&name=alice")
    await alice.wait_demo(joined, "alice joins")
    bob = await open_tab(browser, server, "bob", f"{query}&name=bob")
    await bob.wait_demo(joined, "bob joins")

    async def decoding(tab: DemoTab, other: str) -> bool:
        stats = await tab.page.evaluate("() => window.aiosfuDemo.peerStats()")
        return any(
            s["uid"] == other and s["framesDecoded"] >= 30 and s["frameWidth"] == 640 for s in stats
        )

    for tab, other in ((alice, "bob"), (bob, "alice")):
        try:
            await wait_for(lambda tab=tab, other=other: decoding(tab, other), 20, 0.2)
        except AssertionError as exc:
            raise AssertionError(
                f"{tab.name} did not decode {other}'s camera\n" + "\n".join(tab.console)
            ) from exc
    assert (await alice.demo())["mode"] == "p2p"
    await bob.page.locator('.tile[data-uid="alice"] video').wait_for(state="visible")

    # The media went directly between the browsers.
    stats = await server.stats()
    assert stats["sfu"]["publications"] == {} and stats["sfu"]["subscriptions"] == {}
    relayed = stats["signal"]["p2p"]["relayed"]
    assert relayed["offer"] >= 1 and relayed["answer"] >= 1 and relayed["candidate"] >= 2

    # Chat in a mesh room goes over the direct data channels.
    await alice.wait_demo(lambda d: d.get("chatReady"), "alice's chat channel opens")
    await alice.page.fill("#chat-input", "hello over p2p")
    await alice.page.click("#chat-form button")
    await bob.page.locator("#chat-log li", has_text="hello over p2p").wait_for()

    carol = await open_tab(browser, server, "carol", f"{query}&name=carol")
    refused = await carol.wait_demo(lambda d: d.get("state") == "error", "carol is refused")
    assert refused["errorCode"] == "room-full", refused
    assert "full" in await carol.page.locator("#status-text").inner_text()
    after = await server.stats()
    assert after["signal"]["rooms"]["lesson"]["members"] == ["alice", "bob"]
    assert (await alice.demo())["state"] == "joined" and len((await alice.demo())["peers"]) == 1


async def test_chat_through_the_sfu_data_channel_shows_on_the_other_page(
    browser: Browser, server: ServerProcess
) -> None:
    alice = await open_tab(browser, server, "alice", "room=class&name=alice&autojoin=1")
    await alice.wait_demo(lambda d: joined(d) and d.get("chatReady"), "alice joins with chat")
    bob = await open_tab(browser, server, "bob", "room=class&name=bob&autojoin=1&publish=0")
    await bob.wait_demo(lambda d: joined(d) and d.get("chatReady"), "bob joins with chat")

    async def relayed() -> bool:  # both chat channels have reached the SFU's relay
        labels = {(e["uid"], e["label"]) for e in (await server.stats())["sfu"]["datachannels"]}
        return {("alice", "chat"), ("bob", "chat")} <= labels

    await wait_for(relayed, 10)
    await alice.page.fill("#chat-input", "good morning class")
    await alice.page.click("#chat-form button")
    line = bob.page.locator("#chat-log li", has_text="good morning class")
    await line.wait_for(timeout=5000)
    assert (await line.inner_text()).startswith("alice")
    await bob.page.fill("#chat-input", "morning!")
    await bob.page.press("#chat-input", "Enter")
    await alice.page.locator("#chat-log li", has_text="morning!").wait_for(timeout=5000)

    chat = {e["uid"]: e for e in (await server.stats())["sfu"]["datachannels"]}
    assert chat["alice"]["messagesIn"] == 1 and chat["alice"]["messagesOut"] == 1
    assert chat["bob"]["messagesIn"] == 1 and chat["bob"]["messagesOut"] == 1
    assert (await bob.demo())["chat"] == [
        {"from": "alice", "text": "good morning class"},
        {"from": "bob", "text": "morning!"},
    ]
    # The chat connection is not a stream: bob still sees only alice's camera.
    assert await bob.page.locator(".tile").count() == 1


async def test_a_browser_and_an_aiortc_peer_share_a_mesh_room(
    browser: Browser, server: ServerProcess
) -> None:
    bot = await Client.connect(server.ws_url, "bot")
    mesh = Mesh(
        bot, "mixed", tracks=[PatternTrack(320, 240)], receive=["video"], data_channel="chat"
    )
    await mesh.join()
    page = await open_tab(browser, server, "alice", "room=mixed&mode=p2p&name=alice&autojoin=1")
    await page.wait_demo(joined, "alice joins")
    await wait_for(lambda: "alice" in mesh.links, 10)
    link = mesh.links["alice"]
    assert link.offerer  # the bot was there first

    # The browser trickles its candidates; aiortc adds them and connects. The bot offered
    # no audio slot, so the browser renegotiates to send its microphone.
    camera = FrameCounter(await wait_for_track(link, "video", timeout=15)).start()
    await wait_for(lambda: camera.frames >= 20, 20)
    assert camera.sizes == {(640, 480)}

    async def page_decodes() -> bool:
        stats = await page.page.evaluate("() => window.aiosfuDemo.peerStats()")
        return any(s["uid"] == "bot" and s["framesDecoded"] >= 20 for s in stats)

    await wait_for(page_decodes, 15, 0.2)
    channel = await link.wait_channel("chat")
    await page.wait_demo(lambda d: d.get("chatReady"), "chat channel opens")
    channel.send("hello from python")
    await page.page.locator("#chat-log li", has_text="hello from python").wait_for(timeout=5000)
    await page.page.fill("#chat-input", "hi bot")
    await page.page.press("#chat-input", "Enter")
    label, message = await link.recv()
    assert (label, json.loads(message)) == ("chat", {"type": "chat", "text": "hi bot"})
    relayed = (await server.stats())["signal"]["p2p"]["relayed"]
    assert relayed["candidate"] >= 1 and relayed["offer"] >= 2  # the bot's, then alice's
    await wait_for(lambda: "audio" in link.tracks, 10)
    assert mesh.links["alice"] is link  # renegotiated on the same connection
    await camera.stop()
    await bot.close()
