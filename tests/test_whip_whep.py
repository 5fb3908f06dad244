"""WHIP and WHEP: GStreamer's webrtcbin publishes through `curl` as docs/whip-whep.md
writes it, Chromium decodes over the WebSocket protocol; Chromium watches over WHEP with
the docs' plain-RTCPeerConnection function; with tokens, grants apply as on /ws."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from playwright.async_api import Browser

from aiosfu.client import Client
from aiosfu.signal.grants import Grants
from tests.conftest import ROOT, ServerProcess, wait_for
from tests.gst import gst_peer
from tests.js_peers import start_sdk_peer, wait_decoded
from tests.media import PatternTrack, ToneTrack
from tests.test_access import ROOM, keyed, token  # noqa: F401  (the keyed fixture)

pytestmark = [pytest.mark.browser, pytest.mark.media]

DOC = (ROOT / "docs" / "whip-whep.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


def on_port(command: str, server: ServerProcess) -> str:
    return command.replace("127.0.0.1:8080", f"127.0.0.1:{server.port}")


async def shell(command: str, cwd: Path) -> None:
    proc = await asyncio.create_subprocess_shell(
        command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


def sfu_stats(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.http_url}/stats") as r:
        import json

        return json.load(r)  # type: ignore[no-any-return]


async def test_gstreamer_publishes_over_whip_and_chromium_decodes(
    server: ServerProcess, browser: Browser, tmp_path: Path
) -> None:
    publish, delete = (on_port(b.strip(), server) for b in blocks("sh"))
    chromium = await (await browser.new_context()).new_page()
    await start_sdk_peer(chromium, server, "chromium", "class")
    async with gst_peer("publish", "--video", "vp8", "--audio") as gst:
        (tmp_path / "offer.sdp").write_text(await gst.offer())
        await shell(publish, tmp_path)
        headers = (tmp_path / "headers.txt").read_text()
        assert headers.startswith("HTTP/1.1 201"), headers
        assert re.search(r"(?im)^Location: /whip/class/resource/\S+", headers)
        await gst.answer((tmp_path / "answer.sdp").read_text())

        sub = await chromium.evaluate("() => window.interop.subscribeTo('camera-1')")
        assert sub["ok"], sub
        mid = re.search(r"(?im)^X-Aiosfu-Mid: (\S+)", headers).group(1)  # type: ignore[union-attr]
        stats = await wait_decoded(chromium, mid, 40, what=f"WHIP\n{gst.log()}")
        assert stats["video"]["codec"] == "video/VP8"
        assert stats["audio"]["codec"] == "audio/opus"

        await shell(delete, tmp_path)
        await wait_for(lambda: not sfu_stats(server)["sfu"]["publications"], 10)
        assert "camera-1" not in sfu_stats(server)["signal"]["rooms"]["class"]["members"]


async def test_chromium_watches_over_whep(server: ServerProcess, browser: Browser) -> None:
    (whep,) = blocks("js")
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [ToneTrack(), PatternTrack(320, 240)])
    page = await (await browser.new_context()).new_page()
    await page.goto(server.http_url)
    await page.add_script_tag(
        content=whep
        + """
        window.whep = whep;
        window.video = document.createElement("video");
        window.video.muted = true;
        document.body.appendChild(window.video);
        """
    )
    await page.evaluate(
        "async (mid) => {"
        " window.session = await whep('/whep/class/' + encodeURIComponent(mid), window.video); }",
        publication.mid,
    )
    inbound = """async () => {
        const report = await window.session.pc.getStats();
        return [...report.values()].filter((s) => s.type === "inbound-rtp")
            .map((s) => ({ kind: s.kind, frames: s.framesDecoded || 0, width: s.frameWidth,
                           height: s.frameHeight, bytes: s.bytesReceived }));
    }"""
    latest: list[dict[str, Any]] = []

    async def decoded() -> bool:
        nonlocal latest
        latest = await page.evaluate(inbound)
        video = next((s for s in latest if s["kind"] == "video"), {})
        audio = next((s for s in latest if s["kind"] == "audio"), {})
        return video.get("frames", 0) >= 30 and audio.get("bytes", 0) > 0

    try:
        await wait_for(decoded, 20, 0.2)
    except AssertionError as exc:
        raise AssertionError(f"not decoded over WHEP: {latest}\n{server.log()[-3000:]}") from exc
    video = next(s for s in latest if s["kind"] == "video")
    assert (video["width"], video["height"]) == (320, 240)
    assert len(sfu_stats(server)["sfu"]["subscriptions"]) == 1

    status = await page.evaluate("async () => (await window.session.stop()).status")
    assert status == 200
    await wait_for(lambda: not sfu_stats(server)["sfu"]["subscriptions"], 10)
    await teacher.close()


async def aiortc_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PatternTrack(320, 240))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post(
    http: aiohttp.ClientSession, url: str, body: str, tok: str | None = None, **kw: str
) -> tuple[int, dict[str, Any] | str, Any]:
    headers = {"Content-Type": kw.pop("content_type", "application/sdp")}
    if tok:
        headers["Authorization"] = f"Bearer {tok}"
    async with http.post(url, data=body, headers=headers) as r:
        text = await r.text()
        body_out: dict[str, Any] | str = (
            await r.json() if r.content_type == "application/json" else text
        )
        return r.status, body_out, r.headers


async def test_with_tokens_grants_apply_as_on_the_socket(keyed: ServerProcess) -> None:  # noqa: F811
    pc, offer = await aiortc_offer()
    url = f"{keyed.http_url}/whip/{ROOM}"
    async with aiohttp.ClientSession() as http:
        status, body, _ = await post(http, url, offer)
        assert status == 401
        status, body, _ = await post(http, url, offer, token("pupil"))
        assert status == 403 and body["errorCode"] == "forbidden", body  # type: ignore[index]
        status, body, _ = await post(
            http, url, "v=0", token("t1", "teacher"), content_type="text/plain"
        )
        assert status == 415
        status, body, _ = await post(http, url, "not sdp", token("t1", "teacher"))
        assert status == 400 and body["errorCode"] == "bad-sdp", body  # type: ignore[index]
        status, body, headers = await post(http, url, offer, token("t1", "teacher"))
        assert status == 201, body
        assert isinstance(body, str) and body.startswith("v=0")
        location = f"{keyed.http_url}{headers['Location']}"
        mid = headers["X-Aiosfu-Mid"]
        admin = {"Authorization": f"Bearer {token('ops', Grants(roomList=True))}"}
        async with http.get(f"{keyed.http_url}/stats", headers=admin) as r:
            room = (await r.json())["signal"]["rooms"][ROOM]
        assert room["members"] == ["t1"] and room["publications"] == [mid]

        status, body, _ = await post(http, f"{keyed.http_url}/whep/{ROOM}/nope", offer, token("s1"))
        assert status == 404 and body["errorCode"] == "unknown-mid", body  # type: ignore[index]
        other = {"Authorization": f"Bearer {token('t2', 'teacher')}"}
        async with http.patch(location, headers=other) as r:
            assert r.status == 403
        owner = {"Authorization": f"Bearer {token('t1', 'teacher')}"}
        async with http.patch(location, headers=owner, data="a=candidate") as r:
            assert r.status == 405
        async with http.delete(location, headers=other) as r:
            assert r.status == 403
        async with http.delete(location, headers=owner) as r:
            assert r.status == 200
        async with http.delete(location, headers=owner) as r:
            assert r.status == 404
        async with http.get(f"{keyed.http_url}/stats", headers=admin) as r:
            assert ROOM not in (await r.json())["signal"]["rooms"]
    await pc.close()
