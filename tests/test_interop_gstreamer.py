"""GStreamer 1.22's webrtcbin, left at its defaults (`a=setup:actpass`, an RSA
certificate), publishes through the SFU to Chromium and subscribes to Chromium, each
decoding at the far end: VP8 + Opus and H264.

Before the server answered `actpass` as the DTLS server, every one of these failed in the
DTLS handshake ("no shared cipher": aiortc's DTLS client offers only ECDSA suites).
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, Page

from aiosfu.client.signaling import SignalingClient, SignalingError
from tests.conftest import ServerProcess, wait_for
from tests.gst import gst_peer
from tests.js_peers import AUDIBLE, HEIGHT, WIDTH, start_sdk_peer, wait_decoded

pytestmark = [pytest.mark.browser, pytest.mark.media]

FRAMES_REQUIRED = 40  # two seconds at webrtcbin's 20 fps


async def sdk_page(browser: Browser, server: ServerProcess, uid: str, rid: str) -> Page:
    page = await (await browser.new_context()).new_page()
    await start_sdk_peer(page, server, uid, rid)
    return page


async def join(server: ServerProcess, uid: str, rid: str) -> SignalingClient:
    client = await SignalingClient.connect(server.ws_url, uid)
    await client.request("join", {"rid": rid})
    return client


@pytest.mark.parametrize(
    ("video", "audio", "codec"),
    [("vp8", True, "video/VP8"), ("h264", False, "video/H264")],
)
async def test_gstreamer_publishes_to_chromium(
    server: ServerProcess, browser: Browser, video: str, audio: bool, codec: str
) -> None:
    signaling = await join(server, "gst", "r1")
    chromium = await sdk_page(browser, server, "chromium", "r1")
    args = ["publish", "--video", video] + (["--audio"] if audio else [])
    async with gst_peer(*args) as gst:
        offer = await gst.offer()
        assert "a=setup:actpass" in offer
        published = await signaling.request(
            "publish",
            {
                "rid": "r1",
                "jsep": {"type": "offer", "sdp": offer},
                "minfo": {"audio": audio, "video": True, "audiotype": 0, "videotype": 0},
            },
        )
        assert "a=setup:passive" in published["jsep"]["sdp"]
        await gst.answer(published["jsep"]["sdp"])
        sub = await chromium.evaluate("() => window.interop.subscribeTo('gst')")
        assert sub["ok"], sub

        latest: list = []

        async def decoded() -> bool:
            nonlocal latest
            latest = await chromium.evaluate("() => window.interop.stats()")
            video_stats = latest[0]["video"] if latest else None
            audio_ok = not audio or (latest[0]["audio"] or {}).get("level", 0) > AUDIBLE
            return bool(
                video_stats
                and video_stats["framesDecoded"] >= FRAMES_REQUIRED
                and (video_stats["frameWidth"], video_stats["frameHeight"]) == (WIDTH, HEIGHT)
                and audio_ok
            )

        try:
            await wait_for(decoded, timeout=20, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(
                f"Chromium did not decode GStreamer's {video}: {latest}\n{gst.log()}\n"
                + server.log()[-3000:]
            ) from exc
        assert latest[0]["video"]["codec"] == codec
        if audio:
            assert latest[0]["audio"]["codec"] == "audio/opus"
    await signaling.close()


async def test_gstreamer_as_dtls_server_when_the_offer_says_passive(
    server: ServerProcess, browser: Browser
) -> None:
    """The other direction of the DTLS fault: told `setup:passive`, the server is the DTLS
    client, and must offer suites webrtcbin's RSA certificate can serve (aiortc's own
    list has only ECDSA ones)."""
    signaling = await join(server, "gst", "r1")
    chromium = await sdk_page(browser, server, "chromium", "r1")
    async with gst_peer("publish", "--video", "vp8") as gst:
        # webrtcbin offered actpass: whatever the answer says, it takes the other role.
        offer = (await gst.offer()).replace("a=setup:actpass", "a=setup:passive")
        published = await signaling.request(
            "publish",
            {
                "rid": "r1",
                "jsep": {"type": "offer", "sdp": offer},
                "minfo": {"audio": False, "video": True, "audiotype": 0, "videotype": 0},
            },
        )
        assert "a=setup:active" in published["jsep"]["sdp"]
        await gst.answer(published["jsep"]["sdp"])
        sub = await chromium.evaluate("() => window.interop.subscribeTo('gst')")
        assert sub["ok"], sub
        try:
            await wait_decoded(chromium, sub["mid"], FRAMES_REQUIRED, audio=False, what="GStreamer")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{gst.log()}\n{server.log()[-3000:]}") from exc
    await signaling.close()


@pytest.mark.parametrize(("video", "codec"), [("vp8", "VP8"), ("h264", "H264")])
async def test_gstreamer_subscribes_to_chromium(
    server: ServerProcess, browser: Browser, video: str, codec: str
) -> None:
    chromium = await sdk_page(browser, server, "chromium", "r1")
    # Every H264 profile Chromium has, Baseline 42001f first as it orders them: the SFU
    # receives Constrained Baseline, which webrtcbin (42e01f only) can then take.
    options = {"videoCodec": f"video/{codec}"}
    pub = await chromium.evaluate("(o) => window.interop.publish(o)", options)
    signaling = await join(server, "gst", "r1")
    async with gst_peer("subscribe", "--video", video, "--audio") as gst:
        offer = await gst.offer()
        assert "a=setup:actpass" in offer
        subscribed = await signaling.request(
            "subscribe",
            {
                "rid": "r1",
                "mid": pub["mid"],
                "sfuid": pub["sfuid"],
                "jsep": {"type": "offer", "sdp": offer},
            },
        )
        assert re.search(rf"a=rtpmap:\d+ {codec}/90000", subscribed["jsep"]["sdp"], re.I)
        await gst.answer(subscribed["jsep"]["sdp"])

        def decoded() -> bool:
            stats = gst.latest_stats
            return (
                stats.get("video_frames", 0) >= FRAMES_REQUIRED
                and (stats.get("width"), stats.get("height")) == (WIDTH, HEIGHT)
                and stats.get("audio_buffers", 0) > 0
            )

        try:
            await wait_for(decoded, timeout=20, interval=0.2)
        except AssertionError as exc:
            raise AssertionError(
                f"GStreamer did not decode Chromium's {codec}:\n{gst.log()}\n"
                + server.log()[-3000:]
            ) from exc
    await signaling.close()


async def test_chromium_baseline_h264_to_a_constrained_baseline_subscriber_is_refused_clearly(
    server: ServerProcess, browser: Browser
) -> None:
    """webrtcbin offers only Constrained Baseline (42e01f); a Chromium publication made
    Baseline-only (42001f) cannot be sent to it, and the refusal says so in full."""
    chromium = await sdk_page(browser, server, "chromium", "r1")
    pub = await chromium.evaluate(
        "(o) => window.interop.publish(o)", {"videoCodec": "video/H264", "profile": "42001f"}
    )
    signaling = await join(server, "gst", "r1")
    async with gst_peer("subscribe", "--video", "h264") as gst:
        offer = await gst.offer()
        with pytest.raises(SignalingError) as refused:
            await signaling.request(
                "subscribe",
                {
                    "rid": "r1",
                    "mid": pub["mid"],
                    "sfuid": pub["sfuid"],
                    "jsep": {"type": "offer", "sdp": offer},
                },
            )
    assert refused.value.code == "codec-unsupported"
    assert "H264 Baseline level 3.1 (42001f, packetization-mode 1)" in refused.value.reason
    assert "H264 Constrained Baseline level 3.1 (42e01f, packetization-mode 1)" in (
        refused.value.reason
    )
    # Nothing else changed: the peer is still served.
    assert (await signaling.request("keepalive", {"rid": "r1"})) == {}
    await signaling.close()
