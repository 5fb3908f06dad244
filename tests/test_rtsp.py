"""`aiosfu ingest`: an RTSP camera (GStreamer's RTSP server, started here) published into a
room, H264 passed through and AAC transcoded to Opus, decoded by an aiortc subscriber;
and the camera dropping and coming back while the viewer stays subscribed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from aiosfu.client import Client
from aiosfu.ingest.publisher import CameraIngest
from aiosfu.ingest.rtsp import Backoff
from tests.conftest import ROOT, ServerProcess, free_port, start_server, stop_server, wait_for
from tests.gst import SYSTEM_PYTHON
from tests.media import FrameCounter, wait_for_track

pytestmark = pytest.mark.media

WIDTH, HEIGHT = 320, 240
CAMERA = ROOT / "tests" / "rtsp_camera.py"


class Camera:
    def __init__(self, port: int, *extra: str) -> None:
        self.port, self.extra = port, extra
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(CAMERA), str(self.port), str(WIDTH), str(HEIGHT), *self.extra],
            stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def camera() -> Iterator[Camera]:
    cam = Camera(free_port())
    cam.start()
    yield cam
    cam.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path)
    yield srv
    stop_server(srv)


@pytest.fixture
async def ingest(camera: Camera, server: ServerProcess) -> AsyncIterator[CameraIngest]:
    job = CameraIngest(
        camera.url, server.ws_url, "lobby", "camera-1", ice_ips=["127.0.0.1"],
        backoff=Backoff(initial=0.2, maximum=1.0),
    )  # fmt: skip
    task = asyncio.ensure_future(job.run())
    await asyncio.wait_for(job.published.wait(), 20)
    yield job
    await job.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def watch(
    server: ServerProcess, mid: str
) -> tuple[Client, object, FrameCounter, FrameCounter]:
    viewer = await Client.connect(server.ws_url, "viewer", ice_ips=["127.0.0.1"])
    await viewer.join("lobby")
    subscription = await viewer.subscribe("lobby", mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    audio = FrameCounter(await wait_for_track(subscription, "audio")).start()
    return viewer, subscription, video, audio


async def test_camera_h264_and_aac_reach_a_viewer_at_the_camera_resolution(
    server: ServerProcess, ingest: CameraIngest
) -> None:
    assert ingest.publication is not None
    offer = ingest.publication.pc.localDescription.sdp
    video_section = offer[offer.index("m=video") :]
    assert "H264/90000" in video_section and "VP8" not in video_section  # passed through
    viewer, subscription, video, audio = await watch(server, ingest.publication.mid)
    try:
        await wait_for(lambda: video.frames >= 40 and audio.frames >= 50, 20)
        assert video.sizes == {(WIDTH, HEIGHT)}
        assert audio.sample_rates == {48000}  # Opus, from the camera's AAC
        assert "H264/90000" in subscription.pc.remoteDescription.sdp  # type: ignore[attr-defined]
    finally:
        await video.stop()
        await audio.stop()
        await viewer.close()


async def test_a_dropped_camera_is_pulled_again_and_the_viewer_keeps_watching(
    server: ServerProcess, camera: Camera, ingest: CameraIngest
) -> None:
    assert ingest.publication is not None
    mid = ingest.publication.mid
    viewer, _, video, audio = await watch(server, mid)
    try:
        await wait_for(lambda: video.frames >= 20, 20)
        camera.kill()
        await asyncio.sleep(1.5)  # down for a while: connects fail, backoff grows
        before = video.frames
        camera.start()
        await wait_for(lambda: ingest.pull.connects == 2, 20)
        await wait_for(lambda: video.frames >= before + 30, 20)
        assert video.sizes == {(WIDTH, HEIGHT)}
        assert ingest.publication.mid == mid  # the same publication, never republished
    finally:
        await video.stop()
        await audio.stop()
        await viewer.close()


def documented_command() -> list[str]:
    doc = (ROOT / "docs" / "rtsp.md").read_text()
    line = next(line for line in doc.splitlines() if line.startswith("aiosfu ingest "))
    return line.split()


async def test_the_documented_command_publishes_the_camera(
    server: ServerProcess, camera: Camera
) -> None:
    argv = [
        arg.replace("8554", str(camera.port)).replace("8080", str(server.port))
        for arg in documented_command()
    ]
    assert argv[:2] == ["aiosfu", "ingest"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosfu", *argv[1:], cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    viewer = await Client.connect(server.ws_url, "viewer", ice_ips=["127.0.0.1"])
    try:
        pubs = (await viewer.join("lobby"))["pubs"]
        if not pubs:  # the camera is announced once its transport has connected
            pubs = [await viewer.signaling.wait_for("stream-add", timeout=30)]
        assert pubs[0]["uid"] == "camera-1"
        subscription = await viewer.subscribe("lobby", str(pubs[0]["mid"]))
        video = FrameCounter(await wait_for_track(subscription, "video")).start()
        await wait_for(lambda: video.frames >= 25, 20)
        assert video.sizes == {(WIDTH, HEIGHT)}
        await video.stop()
    finally:
        await viewer.close()
        proc.terminate()
    # SIGTERM unpublishes and exits cleanly.
    code = await asyncio.wait_for(proc.wait(), 10)
    assert proc.stdout is not None
    assert code == 0, (await proc.stdout.read()).decode()


async def test_a_camera_that_is_not_h264_is_refused_with_a_reason(
    server: ServerProcess,
) -> None:
    camera = Camera(free_port(), "--vp8", "--no-audio")
    camera.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aiosfu", "ingest", camera.url, "--room", "lobby",
            "--server", server.ws_url, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        camera.kill()
    assert proc.returncode == 1
    assert "the camera sends vp8 video; only H264 is passed through" in stderr.decode()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.http_url}/stats") as response:
            assert "lobby" not in json.dumps(await response.json())  # nothing was published
