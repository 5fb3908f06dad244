"""Congestion and loss on a real link: the server sits in its own network namespace and
nftables on the link limits or drops what crosses it (no netem, nothing leaves the machine).

- A subscriber's downlink limited to ~600 kbit/s: with one subscriber the publisher
  follows that downlink (the SFU tells it the subscriber's estimate) instead of sending
  what only gets dropped, the subscriber still decoding 15 fps with under 2% loss; when
  the limit goes, a probe of the downlink finds out and the publisher climbs back.
- The same for an aiortc publisher, which offers only goog-remb: the ceiling reaches it
  inside the REMB it goes by.
- 5% random loss each way: NACK and RTX repair both legs, so the subscriber still
  decodes nearly what a lossless subscriber does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from aiosfu.client import Client
from tests.browser import launch_chromium
from tests.conftest import wait_for
from tests.congestion import (
    KEEP_RESOLUTION_JS,
    LOCAL_PORT_JS,
    SUBSCRIBE_JS,
    Leg,
    busy_camera_args,
    open_origin_page,
    run_legs,
    sfu_leg,
)
from tests.media import NoiseTrack
from tests.netns import (
    RemoteServer,
    clear_impairments,
    impair,
    impairment_counters,
    start_remote_server,
    stop_remote_server,
)

pytestmark = pytest.mark.browser

LIMIT_KBIT = 600
# a policer, as a provider's shaping drops: 600 kbit/s with a 40 kB bucket
LIMIT_RULE = f"limit rate over {LIMIT_KBIT // 8} kbytes/second burst 40 kbytes drop"


@pytest.fixture
def remote_server(tmp_path: Path) -> Iterator[RemoteServer]:
    server = start_remote_server(tmp_path)
    yield server
    stop_remote_server(server)


@pytest.fixture
async def busy_browser(remote_server: RemoteServer) -> AsyncIterator[Browser]:
    # The camera is only offered to secure origins; the server's address is not loopback.
    secure = f"--unsafely-treat-insecure-origin-as-secure={remote_server.http_url}"
    async with async_playwright() as pw:
        chromium = await launch_chromium(pw, *busy_camera_args(), secure)
        try:
            yield chromium
        finally:
            await chromium.close()


def target_kbps(sample: tuple[dict[str, Any], dict[str, Any]]) -> float:
    return sample[0].get("targetBitrate", 0) / 1000


SERVER_SAMPLES: list[dict[str, Any]] = []


async def sample_server(server: RemoteServer | None) -> None:
    if server is None:
        return
    sfu = (await server.stats())["sfu"]
    SERVER_SAMPLES.append(
        {
            "cap": [
                (p.get("uplink") or {}).get("publisherCapBps") for p in sfu["publications"].values()
            ],
            "down": [
                {
                    k: s["downstream"].get(k)
                    for k in (
                        "estimateBps",
                        "limitingBps",
                        "limitedBy",
                        "lossFraction",
                        "deliveredBps",
                        "usage",
                        "probeClusters",
                        "probeResultBps",
                        "probeMisled",
                    )
                }
                for s in sfu["subscriptions"].values()
            ],
        }
    )


async def sample_until(  # type: ignore[no-untyped-def]
    leg: Leg, predicate, within: float, interval: float = 0.5, server: RemoteServer | None = None
) -> float:
    """Sample `leg` until `predicate(latest sample)`; seconds it took, or fail."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        await leg.sample()
        await sample_server(server)
        if predicate(leg.samples[-1]):
            return loop.time() - start
        if loop.time() - start > within:
            raise AssertionError(
                f"not within {within}s; target kbps each sample: "
                f"{[round(target_kbps(s)) for s in leg.samples[-30:]]}"
            )
        await asyncio.sleep(interval)


def sent_kbps(leg: Leg) -> list[int]:
    out = []
    for (a, _), (b, _) in zip(leg.samples, leg.samples[1:], strict=False):
        seconds = (b["at"] - a["at"]) / 1000
        out.append(round((b["bytesSent"] - a["bytesSent"]) * 8 / 1000 / max(seconds, 0.001)))
    return out


def window(leg: Leg, start: int) -> dict[str, float]:
    """Receive-side figures from sample `start` to the last one."""
    first, last = leg.samples[start][1], leg.samples[-1][1]
    seconds = (last["at"] - first["at"]) / 1000
    received = last["packetsReceived"] - first["packetsReceived"]
    lost = last["packetsLost"] - first["packetsLost"]
    return {
        "seconds": round(seconds, 2),
        "decodedFps": round((last["framesDecoded"] - first["framesDecoded"]) / seconds, 1),
        "lossFraction": round(lost / max(1, received + lost), 4),
        "framesDecoded": last["framesDecoded"] - first["framesDecoded"],
    }


async def bottleneck_attempt(
    remote_server: RemoteServer, busy_browser: Browser, artifacts: Path, attempt: int
) -> dict[str, Any]:
    """One publisher and subscriber pair through the policer and back; its figures."""
    leg = await sfu_leg(
        busy_browser,
        remote_server.http_url,
        remote_server.ws_url,
        rid=f"cc{attempt}",
        keep_resolution=False,
        name=f"sfu{attempt}",
    )
    await sample_until(
        leg, lambda s: target_kbps(s) > 2 * LIMIT_KBIT, within=15, server=remote_server
    )
    _, subscriber_port = await leg.ports()

    impair(remote_server, [f"down udp dport {subscriber_port} {LIMIT_RULE}"])
    try:
        fell_in = await sample_until(
            leg, lambda s: target_kbps(s) < LIMIT_KBIT, within=5, server=remote_server
        )
        # The encoder needs a moment to act on its new target, and what was in flight
        # at the old rate is still being dropped: loss is counted from 1 s after the fall.
        for _ in range(2):
            await asyncio.sleep(0.5)
            await leg.sample()
        settled = len(leg.samples) - 1
        for _ in range(12):
            await leg.sample()
            await sample_server(remote_server)
            await asyncio.sleep(0.5)
        limited = window(leg, settled)
        stats = await remote_server.stats()
    finally:
        clear_impairments(remote_server)
    # A busy picture never looks good enough to Chromium's quality scaler to scale back
    # up, and its lower resolution caps the encoder's rate (600 kbit/s at 320x240):
    # from here the resolution is kept, so the target is congestion control's alone.
    await leg.sender.evaluate(f"({KEEP_RESOLUTION_JS})(window.measured)")
    try:
        recovered_in = await sample_until(
            leg, lambda s: target_kbps(s) > 2 * LIMIT_KBIT, within=10, server=remote_server
        )
    finally:
        (artifacts / f"congestion-bottleneck-samples-{attempt}.json").write_text(
            json.dumps(
                {
                    "target": [round(target_kbps(s)) for s in leg.samples],
                    "sent": sent_kbps(leg),
                    "lost": [r.get("packetsLost") for _, r in leg.samples],
                    "received": [r.get("packetsReceived") for _, r in leg.samples],
                    "width": [r.get("frameWidth") for _, r in leg.samples],
                    "decoded": [r.get("framesDecoded") for _, r in leg.samples],
                    "server": SERVER_SAMPLES,
                }
            )
        )

    downstreams = [s["downstream"] for s in stats["sfu"]["subscriptions"].values()]
    metrics = {
        "fellBelowLimitInS": round(fell_in, 2),
        "limited": limited,
        "recoveredInS": round(recovered_in, 2),
        "targetKbpsEachSample": [round(target_kbps(s)) for s in leg.samples],
        "lostEachSample": [r.get("packetsLost") for _, r in leg.samples],
        "receivedEachSample": [r.get("packetsReceived") for _, r in leg.samples],
        "sentKbpsEachSample": sent_kbps(leg),
        "downstream": downstreams,
        "producers": [p for v in stats["sfu"]["publications"].values() for p in v["producers"]],
        "consumers": [c for v in stats["sfu"]["subscriptions"].values() for c in v["consumers"]],
    }
    name = f"congestion-bottleneck-{attempt}.json"
    (artifacts / name).write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"bottleneck metrics attempt={attempt}: {json.dumps(metrics)}")
    await leg.sender.close()
    await leg.receiver.close()
    assert fell_in <= 5 and downstreams[-1]["estimateBps"] is not None, metrics
    return metrics


def limited_phase_held(metrics: dict[str, Any]) -> bool:
    limited = metrics["limited"]
    return bool(limited["lossFraction"] < 0.02 and limited["decodedFps"] >= 15)


async def test_publisher_follows_a_bottlenecked_subscriber(
    remote_server: RemoteServer, busy_browser: Browser, artifacts: Path
) -> None:
    """The publisher falls below the policed downlink, the subscriber keeps decoding
    with little loss, and the target recovers once the limit is lifted.

    The limited phase depends on how fast Chromium's encoder acts on a lower target,
    which a loaded 2-core machine sometimes delays past the window (about one run in
    eight): a miss there is run once more with a fresh pair, and both attempts' figures
    are kept. The fall and the recovery must hold on every attempt."""
    metrics = await bottleneck_attempt(remote_server, busy_browser, artifacts, 1)
    if not limited_phase_held(metrics):
        metrics = await bottleneck_attempt(remote_server, busy_browser, artifacts, 2)
    assert limited_phase_held(metrics), metrics


async def publisher_sent_kbps(pc: Any, seconds: float) -> float:
    """What an aiortc publisher's video sender put on the wire over `seconds`."""

    async def sent_bytes() -> int:
        stats = await pc.getStats()
        return sum(s.bytesSent for s in stats.values() if s.type == "outbound-rtp")

    before = await sent_bytes()
    await asyncio.sleep(seconds)
    return (await sent_bytes() - before) * 8 / 1000 / seconds


async def test_a_remb_only_publisher_follows_a_bottlenecked_subscriber(
    remote_server: RemoteServer, busy_browser: Browser
) -> None:
    # aiortc offers goog-remb only: all it goes by is the REMB we send it, which must
    # carry the subscriber's downlink as well as our receive-side estimate.
    client = await Client.connect(remote_server.ws_url, "aiortc-pub")
    try:
        await client.join("remb")
        publication = await client.publish("remb", [NoiseTrack()])
        subscriber = await open_origin_page(busy_browser, remote_server.http_url)
        await subscriber.evaluate(
            SUBSCRIBE_JS,
            {
                "ws": remote_server.ws_url,
                "rid": "remb",
                "uid": "remb-sub",
                "mid": publication.mid,
                "sfuid": publication.sfuid,
            },
        )
        await wait_for(lambda: publication.pc.connectionState == "connected", 10)
        opened = 0.0
        for _ in range(12):  # aiortc starts at 500 kbit/s and climbs as our REMB does
            opened = await publisher_sent_kbps(publication.pc, 2)
            if opened > 1.3 * LIMIT_KBIT:
                break
        port = await subscriber.evaluate(LOCAL_PORT_JS)
        impair(remote_server, [f"down udp dport {port} {LIMIT_RULE}"])
        try:
            rates = []
            for _ in range(6):
                rates.append(round(await publisher_sent_kbps(publication.pc, 2)))
                if rates[-1] < LIMIT_KBIT:
                    break
            uplink = (await remote_server.stats())["sfu"]["publications"][publication.mid]["uplink"]
        finally:
            clear_impairments(remote_server)
        metrics = {"openKbps": round(opened), "limitedKbps": rates, "uplink": uplink}
        print(f"remb-only metrics: {json.dumps(metrics)}")
        assert opened > 1.3 * LIMIT_KBIT, metrics  # it did send more than the limit
        assert rates[-1] < LIMIT_KBIT, metrics
        assert uplink["transportCcPackets"] == 0, metrics  # REMB was its only signal
        assert uplink["publisherCapBps"] is not None, metrics
    finally:
        await client.close()


async def test_nack_and_rtx_repair_loss_on_both_legs(
    remote_server: RemoteServer, busy_browser: Browser, artifacts: Path
) -> None:
    url, ws = remote_server.http_url, remote_server.ws_url
    lossy = await sfu_leg(busy_browser, url, ws, "lossy", name="lossy")
    clean = await sfu_leg(busy_browser, url, ws, "clean", name="clean")
    await run_legs([lossy, clean], 2)
    publisher_port, subscriber_port = await lossy.ports()
    loss = "numgen random mod 100 < 5 drop"
    impair(
        remote_server,
        [
            f"up udp sport {publisher_port} {loss}",  # the publisher's uplink
            f"down udp dport {publisher_port} {loss}",
            f"down udp dport {subscriber_port} {loss}",  # the subscriber's downlink
            f"up udp sport {subscriber_port} {loss}",
        ],
    )
    try:
        start = len(lossy.samples)
        await run_legs([lossy, clean], 10)
        stats = await remote_server.stats()
        dropped = impairment_counters(remote_server)
    finally:
        clear_impairments(remote_server)
    with_loss, without = window(lossy, start), window(clean, start)
    sfu = stats["sfu"]
    producer = next(p for p in sfu["publications"][lossy.mid]["producers"] if p["kind"] == "video")
    consumer = next(
        c
        for s in sfu["subscriptions"].values()
        if s["mid"] == lossy.mid
        for c in s["consumers"]
        if c["kind"] == "video"
    )
    metrics = {
        "lossy": with_loss,
        "clean": without,
        "producer": producer,
        "consumer": consumer,
        "dropped": dropped,
        "publisher": {
            k: lossy.samples[-1][0].get(k) - (lossy.samples[start][0].get(k) or 0)
            for k in ("packetsSent", "retransmittedPacketsSent", "nackCount")
        },
    }
    (artifacts / "congestion-loss.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"loss metrics: {json.dumps(metrics)}")
    assert with_loss["framesDecoded"] >= 0.8 * without["framesDecoded"], metrics
    assert producer["nacksSent"] > 0 and producer["rtxReceived"] > 0, metrics  # uplink repair
    assert consumer["nacksReceived"] > 0 and consumer["retransmitted"] > 0, metrics  # downlink
