"""A busy camera in Chromium, sent through the SFU and directly browser to browser.

Chromium's default fake camera is a simple picture its encoder needs ~350 kbps for, which
never tests congestion control; a noisy test pattern fills whatever rate the controller
allows. Both paths run at once, from the same file, so they share the machine's speed of
the moment. Used by tests/test_congestion_browser.py and `make bench` (bench/congestion.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page

from tests.conftest import ARTIFACTS

WIDTH, HEIGHT, FPS = 640, 480, 20
CAMERA = f"{{width: {WIDTH}, height: {HEIGHT}, frameRate: {FPS}}}"

# A slow first second (a busy machine) makes Chromium start at a lower resolution, and
# the per-resolution bitrate cap then hides what congestion control allows: keep 640x480
# so the target is the controller's alone.
KEEP_RESOLUTION_JS = """
async (pc) => {
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind !== "video") continue;
    const params = sender.getParameters();
    params.degradationPreference = "maintain-resolution";
    await sender.setParameters(params);
  }
}
"""

# Page helpers, evaluated on a page of the server's origin so the SDK imports from it.
PUBLISH_JS = """
async ({ws, rid, uid, keep}) => {
  const {Client} = await import("/static/aiosfu.js");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: CAMERA});
  const client = new Client();
  await client.connect(ws, uid);
  await client.join(rid);
  const pub = await client.publish(rid, stream);
  if (keep) await (KEEP_RESOLUTION)(pub.pc);
  window.measured = pub.pc;
  return {mid: pub.mid, sfuid: pub.sfuid};
}
""".replace("CAMERA", CAMERA).replace("KEEP_RESOLUTION", KEEP_RESOLUTION_JS)

SUBSCRIBE_JS = """
async ({ws, rid, uid, mid, sfuid}) => {
  const {Client} = await import("/static/aiosfu.js");
  const client = new Client();
  await client.connect(ws, uid);
  await client.join(rid);
  const sub = await client.subscribe(rid, mid, sfuid);
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.srcObject = sub.stream;
  document.body.append(video);
  window.measured = sub.pc;
}
"""

GATHERED_JS = """
(pc) => new Promise((resolve) => {
  if (pc.iceGatheringState === "complete") return resolve();
  pc.addEventListener("icegatheringstatechange", () => {
    if (pc.iceGatheringState === "complete") resolve();
  });
})
"""

DIRECT_OFFER_JS = (
    """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: true, video: CAMERA});
  const pc = new RTCPeerConnection({iceServers: []});
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription(await pc.createOffer());
  await (GATHERED)(pc);
  await (KEEP_RESOLUTION)(pc);
  window.measured = pc;
  return pc.localDescription.sdp;
}
""".replace("CAMERA", CAMERA)
    .replace("GATHERED", GATHERED_JS)
    .replace("KEEP_RESOLUTION", KEEP_RESOLUTION_JS)
)

DIRECT_ANSWER_JS = """
async (offer) => {
  const pc = new RTCPeerConnection({iceServers: []});
  const stream = new MediaStream();
  pc.addEventListener("track", (event) => stream.addTrack(event.track));
  await pc.setRemoteDescription({type: "offer", sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  await (GATHERED)(pc);
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.srcObject = stream;
  document.body.append(video);
  window.measured = pc;
  return pc.localDescription.sdp;
}
""".replace("GATHERED", GATHERED_JS)

DIRECT_ACCEPT_JS = (
    "async (answer) => window.measured.setRemoteDescription({type: 'answer', sdp: answer})"
)

STATS_JS = """
async () => {
  const out = {at: performance.now()};
  (await window.measured.getStats()).forEach((s) => {
    if (s.kind !== "video") return;
    if (s.type === "outbound-rtp") {
      out.targetBitrate = s.targetBitrate ?? 0;
      out.bytesSent = s.bytesSent;
      out.packetsSent = s.packetsSent;
      out.framesEncoded = s.framesEncoded;
      out.qualityLimitationReason = s.qualityLimitationReason;
      out.frameWidth = s.frameWidth;
      out.retransmittedPacketsSent = s.retransmittedPacketsSent;
      out.nackCount = s.nackCount;
    } else if (s.type === "inbound-rtp") {
      out.bytesReceived = s.bytesReceived;
      out.framesDecoded = s.framesDecoded ?? 0;
      out.packetsReceived = s.packetsReceived;
      out.packetsLost = s.packetsLost;
      out.nackCount = s.nackCount;
      out.pliCount = s.pliCount;
      out.frameWidth = s.frameWidth;
    }
  });
  return out;
}
"""


LOCAL_PORT_JS = """
async () => {
  const stats = await window.measured.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = stats.get(s.selectedCandidatePairId);
    }
  });
  if (!pair) {
    stats.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s;
    });
  }
  return pair ? stats.get(pair.localCandidateId).port : null;
}
"""


def busy_y4m() -> Path:
    """The busy test picture, made once (ffmpeg's noisy testsrc2; ~55 MB, 6 s, looped)."""
    path = ARTIFACTS / "busy-640x480.y4m"
    if not path.exists():
        ARTIFACTS.mkdir(exist_ok=True)
        partial = path.with_suffix(".part.y4m")
        subprocess.run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},noise=alls=30:allf=t",
                "-t",
                "6",
                "-pix_fmt",
                "yuv420p",
                str(partial),
            ],
            check=True,
        )
        partial.rename(path)
    return path


def busy_camera_args() -> list[str]:
    return [f"--use-file-for-fake-video-capture={busy_y4m()}"]


@dataclass
class Leg:
    """One sending page and one receiving page, sampled once a second."""

    name: str
    sender: Page
    receiver: Page
    samples: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    mid: str = ""  # the publication, through the SFU

    async def ports(self) -> tuple[int, int]:
        """The UDP ports the sending and the receiving page use (their selected pairs)."""
        for _ in range(50):  # the receiving side may still be connecting
            sender = await self.sender.evaluate(LOCAL_PORT_JS)
            receiver = await self.receiver.evaluate(LOCAL_PORT_JS)
            if sender and receiver:
                return int(sender), int(receiver)
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name}: no selected candidate pair")

    async def sample(self) -> None:
        sent, received = await asyncio.gather(
            self.sender.evaluate(STATS_JS), self.receiver.evaluate(STATS_JS)
        )
        self.samples.append((sent, received))

    def summary(self, last_seconds: float) -> dict[str, float]:
        """Over the last `last_seconds`: mean target bitrate, received and decoded rates."""
        end_received = self.samples[-1][1]
        window = [
            s for s in self.samples if end_received["at"] - s[1]["at"] <= last_seconds * 1000 + 1
        ]
        first_received = window[0][1]
        seconds = (end_received["at"] - first_received["at"]) / 1000
        targets = [s[0].get("targetBitrate", 0) for s in window]
        return {
            "targetKbps": round(sum(targets) / len(targets) / 1000, 1),
            "receivedKbps": round(
                (end_received.get("bytesReceived", 0) - first_received.get("bytesReceived", 0))
                * 8
                / 1000
                / seconds,
                1,
            ),
            "decodedFps": round(
                (end_received.get("framesDecoded", 0) - first_received.get("framesDecoded", 0))
                / seconds,
                1,
            ),
            "frameWidth": end_received.get("frameWidth", 0),
            "seconds": round(seconds, 2),
        }


async def open_origin_page(browser: Browser, http_url: str) -> Page:
    """A blank page of the server's origin: the SDK imports from there."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(f"{http_url}/api/ice-servers")
    return page


async def sfu_leg(
    browser: Browser,
    http_url: str,
    ws_url: str,
    rid: str = "cc",
    *,
    keep_resolution: bool = True,
    name: str = "sfu",
) -> Leg:
    """Publish the camera through the SFU and subscribe to it from another page."""
    publisher = await open_origin_page(browser, http_url)
    subscriber = await open_origin_page(browser, http_url)
    published = await publisher.evaluate(
        PUBLISH_JS, {"ws": ws_url, "rid": rid, "uid": f"{name}-pub", "keep": keep_resolution}
    )
    await subscriber.evaluate(
        SUBSCRIBE_JS, {"ws": ws_url, "rid": rid, "uid": f"{name}-sub", **published}
    )
    leg = Leg(name, publisher, subscriber)
    leg.mid = published["mid"]
    return leg


async def direct_leg(browser: Browser, http_url: str) -> Leg:
    """The same camera from one page straight to another, no server in between."""
    sender = await open_origin_page(browser, http_url)
    receiver = await open_origin_page(browser, http_url)
    offer = await sender.evaluate(DIRECT_OFFER_JS)
    answer = await receiver.evaluate(DIRECT_ANSWER_JS, offer)
    await sender.evaluate(DIRECT_ACCEPT_JS, answer)
    return Leg("direct", sender, receiver)


async def run_legs(legs: list[Leg], seconds: float) -> None:
    """Sample every leg once a second for `seconds`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        await asyncio.gather(*(leg.sample() for leg in legs))
        if loop.time() - start >= seconds:
            return
        await asyncio.sleep(1.0)
