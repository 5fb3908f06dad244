"""RTSP cameras through the server API: the example of docs/rtsp.md run as written starts
an ingest process, a viewer decodes the camera's H264 at its resolution, the state follows
the camera, and DELETE unpublishes it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosfu.client import Client
from aiosfu.signal.auth import mint_token
from aiosfu.signal.grants import Grants
from tests.conftest import ROOT, ServerProcess, free_port, start_server, stop_server, wait_for
from tests.media import FrameCounter, wait_for_track
from tests.test_api import Api
from tests.test_rtsp import HEIGHT, WIDTH, Camera, camera

pytestmark = pytest.mark.media

__all__ = ["camera"]  # the fixture

KEY, SECRET = "APIkey1", "lobby-school-secret-0123456789abcdef"
OTHER_KEY, OTHER_SECRET = "APIkey2", "other-school-secret-0123456789abcdef"
CONFIG = f"""
[institutions.school]
keys = {{ {KEY} = "{SECRET}" }}
[institutions.other]
keys = {{ {OTHER_KEY} = "{OTHER_SECRET}" }}
"""
ADMIN = Grants(room="lobby", roomJoin=True, roomAdmin=True)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[ServerProcess]:
    (tmp_path / "aiosfu.toml").write_text(CONFIG)
    server = start_server(tmp_path, "--config", str(tmp_path / "aiosfu.toml"))
    yield server
    stop_server(server)


def documented_api_call(server: ServerProcess, camera: Camera) -> str:
    doc = (ROOT / "docs" / "rtsp.md").read_text()
    section = doc[doc.index("## Through the server API") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    script = block[1].replace("8554", str(camera.port)).replace("8080", str(server.port))
    return script


async def run_documented_call(script: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = await asyncio.create_subprocess_exec(
        "bash", "-euo", "pipefail", "-c", script, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def listed(api: Api) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/rooms/lobby/ingests")
    assert status == 200, body
    return list(body["ingests"])


async def test_an_ingest_started_by_the_api_is_watched_and_stopped(
    keyed: ServerProcess, camera: Camera, tmp_path: Path
) -> None:
    script = documented_api_call(keyed, camera)
    assert "aiosfu token" in script and "curl" in script
    started = json.loads(await run_documented_call(script, tmp_path))
    assert started["state"] == "connecting" and started["uid"] == "camera-1"
    assert re.fullmatch(r"ing_[0-9a-f]{12}", started["id"])

    api = Api(keyed, mint_token(SECRET, KEY, "backend", ADMIN))
    viewer_token = mint_token(SECRET, KEY, "viewer", Grants(room="lobby", roomJoin=True))
    viewer = await Client.connect(keyed.ws_url, "viewer", token=viewer_token)
    try:
        pubs = (await viewer.join("lobby"))["pubs"]
        if not pubs:  # announced once the camera's transport has connected
            pubs = [await viewer.signaling.wait_for("stream-add", timeout=30)]
        assert pubs[0]["uid"] == "camera-1"
        mid = str(pubs[0]["mid"])
        subscription = await viewer.subscribe("lobby", mid)
        assert "H264/90000" in subscription.pc.remoteDescription.sdp
        video = FrameCounter(await wait_for_track(subscription, "video")).start()
        await wait_for(lambda: video.frames >= 25, 20)
        assert video.sizes == {(WIDTH, HEIGHT)}
        (ingest,) = await listed(api)
        assert ingest["id"] == started["id"] and ingest["state"] == "live"

        # The camera drops: the ingest says so, pulls again, and the viewer sees it back.
        camera.kill()

        async def state(expected: str) -> bool:
            return (await listed(api))[0]["state"] == expected

        await wait_for(lambda: state("retrying"), 15, interval=0.2)
        assert (await listed(api))[0]["lastError"] == "the camera stopped sending"
        camera.start()
        await wait_for(lambda: state("live"), 30, interval=0.2)
        before = video.frames
        await wait_for(lambda: video.frames >= before + 20, 20)

        # DELETE stops the process; the camera leaves and the viewer is told.
        status, _ = await api.call("DELETE", f"/ingests/{started['id']}")
        assert status == 204
        removed = await viewer.signaling.wait_for("stream-remove", timeout=10)
        assert removed["mid"] == mid
        assert await listed(api) == []
        assert (await api.call("DELETE", f"/ingests/{started['id']}"))[0] == 404
        await video.stop()
    finally:
        await viewer.close()


async def test_the_api_refuses_with_codes_and_reports_a_camera_it_cannot_publish(
    keyed: ServerProcess,
) -> None:
    api = Api(keyed, mint_token(SECRET, KEY, "backend", ADMIN))
    vp8 = Camera(free_port(), "--vp8", "--no-audio")
    vp8.start()
    try:
        status, started = await api.call("POST", "/rooms/lobby/ingests", {"url": vp8.url})
        assert status == 201 and started["uid"] == "camera-1"

        async def failed() -> bool:
            return (await listed(api))[0]["state"] == "failed"

        await wait_for(failed, 30, interval=0.2)
        (ingest,) = await listed(api)
        assert "only H264 is passed through" in ingest["lastError"]
        assert ingest["restarts"] == 0  # a camera that cannot be published is not retried

        for body, code in (
            ({"url": "http://127.0.0.1/cam"}, "invalid-params"),
            ({"url": vp8.url, "uid": "camera-1"}, "conflict"),
            ({}, "invalid-params"),
        ):
            status, error = await api.call("POST", "/rooms/lobby/ingests", body)
            assert error["errorCode"] == code, (body, error)
        other = Api(keyed, mint_token(OTHER_SECRET, OTHER_KEY, "b", ADMIN))
        assert (await other.call("GET", "/rooms/lobby/ingests"))[1] == {"ingests": []}
        status, error = await other.call("DELETE", f"/ingests/{started['id']}")
        assert status == 404 and error["errorCode"] == "not-found"
        student = Api(keyed, mint_token(SECRET, KEY, "s", Grants(room="lobby", roomJoin=True)))
        status, error = await student.call("POST", "/rooms/lobby/ingests", {"url": vp8.url})
        assert status == 403 and "roomAdmin" in error["errorReason"]
        status, _ = await Api(keyed, "garbage").call("GET", "/rooms/lobby/ingests")
        assert status == 401

        assert (await api.call("DELETE", f"/ingests/{started['id']}"))[0] == 204
        assert await listed(api) == []
    finally:
        vp8.kill()
    # The password never shows: not in the API, the server's log or a command line.
    status, secret = await api.call(
        "POST", "/rooms/lobby/ingests", {"url": "rtsp://admin:hunter2@127.0.0.1:1/cam"}
    )
    assert status == 201 and secret["url"] == "rtsp://admin:***@127.0.0.1:1/cam"

    async def refused() -> bool:
        (ingest,) = await listed(api)
        return ingest["state"] == "retrying" and "refused" in ingest["lastError"]

    await wait_for(refused, 20, interval=0.2)  # its process runs and retries the camera
    assert not command_lines_with("hunter2")
    assert (await api.call("DELETE", f"/ingests/{secret['id']}"))[0] == 204
    assert "hunter2" not in keyed.log()


def command_lines_with(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


async def test_ingest_processes_end_with_the_server(keyed: ServerProcess) -> None:
    """Even a server killed outright leaves no camera process behind."""
    api = Api(keyed, mint_token(SECRET, KEY, "backend", ADMIN))
    status, _ = await api.call("POST", "/rooms/lobby/ingests", {"url": "rtsp://127.0.0.1:1/x"})
    assert status == 201
    marker = f"127.0.0.1:{keyed.port}/ws"
    await wait_for(lambda: command_lines_with(marker), 10)
    keyed.proc.kill()
    await wait_for(lambda: not command_lines_with(marker), 15, interval=0.2)
