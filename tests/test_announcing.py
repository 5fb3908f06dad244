"""A publication is announced (stream-add, join's pubs) only once its transport is
connected, and a transport that does not connect in time is removed and its peer told
why: a candidate-less offer, as Firefox makes when it cannot gather, used to get
`stream-add` sent to the room and hold its resources until the socket closed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from playwright.async_api import Browser

from aiosfu.client import Client
from aiosfu.client.signaling import SignalingClient
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.js_peers import start_sdk_peer
from tests.media import PatternTrack, ToneTrack

pytestmark = pytest.mark.media

TIMEOUT = 2.0
MINFO = {"audio": True, "video": True, "audiotype": 0, "videotype": 0}


@pytest.fixture
def quick_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, "--connect-timeout", str(TIMEOUT))
    yield srv
    stop_server(srv)


async def offer_without_candidates(direction: str) -> str:
    """A real offer that can never connect: no candidate lines, nobody behind it."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction=direction)
    pc.addTransceiver("video", direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return re.sub(r"a=candidate:[^\r\n]*\r\n", "", sdp)


async def joined(server: ServerProcess, uid: str, rid: str = "r1") -> SignalingClient:
    client, _ = await joined_with_pubs(server, uid, rid)
    return client


async def joined_with_pubs(
    server: ServerProcess, uid: str, rid: str = "r1"
) -> tuple[SignalingClient, list[dict]]:
    client = await SignalingClient.connect(server.ws_url, uid)
    return client, (await client.request("join", {"rid": rid}))["pubs"]


async def test_unconnected_publication_is_never_announced_and_is_removed_with_a_reason(
    quick_server: ServerProcess,
) -> None:
    bob = await joined(quick_server, "bob")
    alice = await joined(quick_server, "alice")
    offer = await offer_without_candidates("sendonly")
    published = await alice.request(
        "publish", {"rid": "r1", "jsep": {"type": "offer", "sdp": offer}, "minfo": MINFO}
    )
    mid = published["mid"]
    assert published["jsep"]["type"] == "answer"  # seed-002's answer is unchanged

    # carol joins while alice's transport is pending: nothing to see yet
    carol, pubs = await joined_with_pubs(quick_server, "carol")
    assert pubs == []

    failed = await alice.wait_for("publish-failed", timeout=TIMEOUT + 5)
    assert failed["rid"] == "r1" and failed["mid"] == mid
    assert f"did not connect within {TIMEOUT:g} s" in failed["reason"]

    stats = await quick_server.stats()
    assert stats["sfu"]["publications"] == {}
    assert stats["signal"]["rooms"]["r1"]["publications"] == []
    heard = {name for client in (bob, carol) for name, _ in client.notifications}
    assert "stream-add" not in heard and "stream-remove" not in heard

    # The server keeps serving: a publisher that does connect is announced.
    teacher = await Client.connect(quick_server.ws_url, "teacher")
    await teacher.join("r1")
    publication = await teacher.publish("r1", [ToneTrack(), PatternTrack(160, 120)])
    added = await bob.wait_for("stream-add", timeout=10)
    assert added["mid"] == publication.mid
    # The server announces once its side is up; the client's side finishes a moment later.
    await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    assert publication.pc.connectionState == "connected"
    dave, pubs = await joined_with_pubs(quick_server, "dave")
    assert [p["mid"] for p in pubs] == [publication.mid]
    for client in (alice, bob, carol, dave):
        await client.close()
    await teacher.close()


async def test_stream_add_waits_for_the_transport(quick_server: ServerProcess) -> None:
    """The answer goes back at once, but stream-add only after ICE and DTLS complete."""
    bob = await joined(quick_server, "bob")
    teacher = await Client.connect(quick_server.ws_url, "teacher")
    await teacher.join("r1")
    publication = await teacher.publish("r1", [ToneTrack()])
    states = []

    def seen() -> bool:
        states.append(publication.pc.connectionState)
        return any(name == "stream-add" for name, _ in bob.notifications)

    await wait_for(seen, timeout=10, interval=0.001)
    log = quick_server.log()
    connected_at = log.index(f"event=publisher-state rid=r1 mid={publication.mid} state=connected")
    assert (
        log.index(f"event=stream-announced rid=r1 uid=teacher mid={publication.mid}") > connected_at
    )
    assert states[0] != "connected", "too fast to tell: the transport was up before the answer"
    await bob.close()
    await teacher.close()


async def test_unconnected_subscription_is_removed_and_its_subscriber_told(
    quick_server: ServerProcess,
) -> None:
    teacher = await Client.connect(quick_server.ws_url, "teacher")
    await teacher.join("r1")
    publication = await teacher.publish("r1", [ToneTrack(), PatternTrack(160, 120)])
    bob = await joined(quick_server, "bob")
    offer = await offer_without_candidates("recvonly")
    subscribed = await bob.request(
        "subscribe",
        {
            "rid": "r1",
            "mid": publication.mid,
            "sfuid": publication.sfuid,
            "jsep": {"type": "offer", "sdp": offer},
        },
    )
    failed = await bob.wait_for("subscribe-failed", timeout=TIMEOUT + 5)
    assert failed == {
        "rid": "r1",
        "mid": publication.mid,
        "sid": subscribed["sid"],
        "reason": failed["reason"],
    }
    assert f"did not connect within {TIMEOUT:g} s" in failed["reason"]
    stats = await quick_server.stats()
    assert stats["sfu"]["subscriptions"] == {}
    assert stats["signal"]["rooms"]["r1"]["subscriptions"] == 0
    # The publication itself is untouched.
    assert publication.mid in stats["sfu"]["publications"]
    await asyncio.sleep(0)
    await bob.close()
    await teacher.close()


# Cut every ICE candidate from the descriptions a page sends and is given: its peer
# connections can then never connect.
CUT_CANDIDATES = """() => {
    const cut = (d) => d && {type: d.type, sdp: d.sdp.replace(/a=candidate:.*\\r\\n/g, '')};
    const set = RTCPeerConnection.prototype.setRemoteDescription;
    RTCPeerConnection.prototype.setRemoteDescription = function (d) {
        return set.call(this, cut(d));
    };
    const local = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype,
                                                  'localDescription').get;
    Object.defineProperty(RTCPeerConnection.prototype, 'localDescription', {
        get() { return cut(local.call(this)); },
    });
}"""


@pytest.mark.browser
async def test_js_sdk_drops_what_the_server_removed(
    quick_server: ServerProcess, browser: Browser
) -> None:
    """A Chromium page whose candidates never reach the server and which never learns the
    server's (both cut from the descriptions on the way) cannot connect: the JS SDK
    closes the publication the server removed and hands the reason to the app."""
    page = await (await browser.new_context()).new_page()
    await start_sdk_peer(page, quick_server, "alice", "r1")
    await page.evaluate(CUT_CANDIDATES)
    published = await page.evaluate("() => window.interop.publish()")
    (state,) = await page.evaluate("() => window.interop.publishStates()")
    assert state["mid"] == published["mid"] and state["state"] != "connected"

    async def failed() -> list:
        notes = await page.evaluate("() => window.interop.notifications()")
        return [n["data"] for n in notes if n["method"] == "publish-failed"]

    await wait_for(failed, timeout=TIMEOUT + 5, interval=0.1)
    (note,) = await failed()
    assert note["mid"] == published["mid"] and "did not connect" in note["reason"]
    assert await page.evaluate("() => window.interop.publishStates()") == []


async def test_early_subscriber_of_an_unconnected_stream_hears_it_removed(
    quick_server: ServerProcess,
) -> None:
    """A peer that subscribed by a mid it learnt elsewhere, before the stream was
    announced, is the only one told `stream-remove` when the stream never connects."""
    alice = await joined(quick_server, "alice")
    published = await alice.request(
        "publish",
        {
            "rid": "r1",
            "jsep": {"type": "offer", "sdp": await offer_without_candidates("sendonly")},
            "minfo": MINFO,
        },
    )
    bob = await Client.connect(quick_server.ws_url, "bob")
    await bob.join("r1")
    await bob.subscribe("r1", published["mid"], published["sfuid"])
    carol = await joined(quick_server, "carol")
    removed = await bob.signaling.wait_for("stream-remove", timeout=TIMEOUT + 5)
    assert removed == {"rid": "r1", "uid": "alice", "mid": published["mid"]}
    await alice.wait_for("publish-failed", timeout=5)
    assert not [name for name, _ in carol.notifications if name.startswith("stream-")]
    for client in (alice, carol):
        await client.close()
    await bob.close()


@pytest.mark.browser
async def test_js_sdk_drops_a_subscription_the_server_removed(
    quick_server: ServerProcess, browser: Browser
) -> None:
    teacher = await Client.connect(quick_server.ws_url, "teacher")
    await teacher.join("r1")
    await teacher.publish("r1", [ToneTrack(), PatternTrack(160, 120)])
    page = await (await browser.new_context()).new_page()
    await start_sdk_peer(page, quick_server, "bob", "r1")
    await page.evaluate(CUT_CANDIDATES)
    subscribed = await page.evaluate("() => window.interop.subscribeTo('teacher')")
    assert subscribed["ok"], subscribed
    assert [s["mid"] for s in await page.evaluate("() => window.interop.stats()")] == [
        subscribed["mid"]
    ]

    async def failed() -> list:
        notes = await page.evaluate("() => window.interop.notifications()")
        return [n["data"] for n in notes if n["method"] == "subscribe-failed"]

    await wait_for(failed, timeout=TIMEOUT + 5, interval=0.1)
    (note,) = await failed()
    assert note["sid"] == subscribed["sid"] and "did not connect" in note["reason"]
    assert await page.evaluate("() => window.interop.stats()") == []
    await teacher.close()
