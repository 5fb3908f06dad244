"""A real Chromium publishes from the demo page; a Python member records it mid-stream.

Chromium's fake capture device supplies camera and microphone; the browser is Debian's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from aiosfu.client import Client
from tests.browser import launch_chromium
from tests.conftest import start_server, stop_server
from tests.test_recording import DURATION_TOLERANCE, analyse, decode_errors, probe

pytestmark = pytest.mark.browser

RECORD_SECONDS = 6.0


async def test_chromium_publication_recorded_to_webm(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--record-dir", str(tmp_path / "rec"))
    try:
        recorder = await Client.connect(server.ws_url, "recorder")
        await recorder.join("r1")
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            page = await browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(f"[{msg.type}] {msg.text}"))
            await page.goto(f"{server.http_url}/?room=r1&name=alice&autojoin=1")
            try:
                added = await recorder.signaling.wait_for("stream-add", timeout=20)
            except TimeoutError as exc:
                raise AssertionError("the page did not publish:\n" + "\n".join(console)) from exc
            mid = added["mid"]
            await asyncio.sleep(1.0)  # past the first keyframe: the recorder must ask for one
            started = await recorder.request("record", {"rid": "r1", "mid": mid})
            begun = asyncio.get_running_loop().time()
            await asyncio.sleep(RECORD_SECONDS)
            stopped = await recorder.request("stop-record", {"rid": "r1", "mid": mid})
            elapsed = asyncio.get_running_loop().time() - begun
            await browser.close()
        await recorder.close()
    finally:
        stop_server(server)

    path = tmp_path / "rec" / stopped["file"]
    assert stopped["file"] == started["file"] and path.suffix == ".webm"
    assert stopped["reason"] == "requested" and path.stat().st_size == stopped["size"]
    info = probe(path)
    assert info["streams"]["video"]["codec_name"] == "vp8"
    assert (info["streams"]["video"]["width"], info["streams"]["video"]["height"]) == (640, 480)
    assert info["streams"]["audio"]["codec_name"] == "opus"
    # Our answer asks for stereo Opus (RFC 7587 stereo=1), so Chromium sends two channels.
    assert info["streams"]["audio"]["channels"] == 2
    assert abs(info["duration"] - elapsed) <= DURATION_TOLERANCE, (info, elapsed)
    assert decode_errors(path, jittery_capture=True) == ""
    content = analyse(path)
    assert content.first_video_keyframe
    assert abs(content.audio_seconds - elapsed) <= DURATION_TOLERANCE, content
    assert content.video_frames >= RECORD_SECONDS * 15, content
    print(f"chromium recording: {info}, {content.video_frames} frames, {elapsed:.2f}s asked")
