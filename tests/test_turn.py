"""TURN: time-limited credentials (TURN REST scheme) checked by a real coturn on loopback.

Chromium restricted to relay candidates publishes through coturn and an aiortc
subscriber decodes it; a credential past its expiry gets no allocation at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser

from aiosfu.client import Client
from aiosfu.signal.turn import credential, ice_servers
from tests.browser import DemoTab, open_tab
from tests.conftest import ServerProcess, free_port, start_server, stop_server, wait_for
from tests.media import FrameCounter, wait_for_track

pytestmark = pytest.mark.media

TURN_SECRET = "turn-shared-secret-for-the-test"


def test_credentials_follow_the_turn_rest_scheme() -> None:
    username, password = credential(TURN_SECRET, "alice", 600, now=1_800_000_000)
    assert username == "1800000600:alice"
    expected = hmac.new(TURN_SECRET.encode(), b"1800000600:alice", hashlib.sha1).digest()
    assert password == base64.b64encode(expected).decode()
    servers = ice_servers([{"urls": ["stun:s"]}], ["turn:t"], TURN_SECRET, "bob", 60, now=0)
    assert servers == [
        {"urls": ["stun:s"]},
        {
            "urls": ["turn:t"],
            "username": "60:bob",
            "credential": credential(TURN_SECRET, "bob", 60, now=0)[1],
        },
    ]
    assert ice_servers([], ["turn:t"], "", "bob", 60) == []  # no secret: no TURN


class Coturn:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.log_path = tmp_path / "turnserver.log"
        self.proc = subprocess.Popen(
            [
                shutil.which("turnserver") or "turnserver",
                "-n",  # no config file
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                f"--listening-port={self.port}",
                "--min-port=40000",
                "--max-port=40100",
                "--use-auth-secret",
                f"--static-auth-secret={TURN_SECRET}",
                "--realm=aiosfu.test",
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--no-tcp-relay",
                f"--log-file={self.log_path}",
                "--simple-log",
                f"--pidfile={tmp_path / 'turnserver.pid'}",
                f"--db={tmp_path / 'turndb'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        # coturn logs no line once it listens: wait for its UDP socket to exist.
        while f"0100007F:{self.port:04X}" not in Path("/proc/net/udp").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start:\n{self.log()}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    turn = Coturn(tmp_path)
    yield turn
    turn.stop()


@pytest.fixture
def turn_server(tmp_path: Path, coturn: Coturn) -> Iterator[ServerProcess]:
    config = tmp_path / "aiosfu.toml"
    config.write_text(f'turn_urls = ["{coturn.url}"]\nturn_secret = "{TURN_SECRET}"\n')
    server = start_server(tmp_path, "--config", str(config))
    yield server
    stop_server(server)


async def test_join_and_ice_servers_hand_out_fresh_credentials(
    turn_server: ServerProcess, coturn: Coturn
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{turn_server.http_url}/api/ice-servers?peer=alice") as response,
    ):
        servers = (await response.json())["iceServers"]
    [turn] = servers
    expiry, uid = turn["username"].split(":")
    assert uid == "alice" and 86000 < int(expiry) - time.time() <= 86400
    client = await Client.connect(turn_server.ws_url, "bob")
    joined = await client.join("class")
    [turn] = joined["iceServers"]
    assert turn["urls"] == [coturn.url] and turn["username"].endswith(":bob")
    assert (
        turn["credential"]
        == credential(TURN_SECRET, "bob", 0, now=int(turn["username"].split(":")[0]))[1]
    )
    await client.close()


GATHER = """async ([url, username, credential]) => {
  const pc = new RTCPeerConnection({
    iceServers: [{urls: [url], username, credential}], iceTransportPolicy: "relay"});
  pc.createDataChannel("probe");
  const done = new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
    setTimeout(resolve, 8000);
  });
  await pc.setLocalDescription();
  await done;
  const relay = (pc.localDescription.sdp.match(/typ relay/g) || []).length;
  pc.close();
  return relay;
}"""


@pytest.mark.browser
async def test_chromium_relay_only_publishes_through_coturn(
    turn_server: ServerProcess, coturn: Coturn, browser: Browser
) -> None:
    page = await open_tab(
        browser,
        f"{turn_server.http_url}/?room=class&name=teacher&autojoin=1&relay=1",
        "teacher",
        DemoTab,
        state_script="() => window.aiosfuDemo && {state: window.aiosfuDemo.state,"
        " error: window.aiosfuDemo.error, localMid: window.aiosfuDemo.localMid}",
        fail_on_error_state=True,
    )
    published = await page.wait_demo(lambda d: d.get("localMid"), "publish through TURN", 20)
    student = await Client.connect(turn_server.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", published["localMid"])
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 30, 20)
    await video.stop()
    stats: dict = {}

    async def relayed_enough() -> bool:
        nonlocal stats
        stats = await page.page.evaluate("() => window.aiosfuDemo.publicationStats()")
        return bool(stats.get("bytesSent", 0) > 50_000)

    await wait_for(relayed_enough, 10)  # a slow machine encodes less per second
    assert stats["candidateType"] == "relay", stats
    assert stats["bytesSent"] > 50_000

    # An expired credential gets no allocation; a fresh one does (the same code path).
    username, password = credential(TURN_SECRET, "teacher", -60)
    assert await page.page.evaluate(GATHER, [coturn.url, username, password]) == 0
    username, password = credential(TURN_SECRET, "teacher", 600)
    assert await page.page.evaluate(GATHER, [coturn.url, username, "wrong"]) == 0
    assert await page.page.evaluate(GATHER, [coturn.url, username, password]) >= 1
    await student.close()
