"""Per-node load in /metrics, on a cluster of real etcd, NATS and Redis with two SFU and
two signal nodes: each node exports its own registry record, a signal node every node's,
labelled by node id and kind, and the dashboard's node panels read what is exported."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiosfu.client import Client
from tests.cluster import Cluster
from tests.conftest import free_port, wait_for
from tests.engines import start_engines
from tests.media import FrameCounter, PatternTrack, wait_for_track
from tests.test_metrics import dashboard_expressions

pytestmark = pytest.mark.media

NODES = {("sfu-1", "sfu"), ("sfu-2", "sfu"), ("signal-1", "signal"), ("signal-2", "signal")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict[str, int]]]:
    directory = tmp_path_factory.mktemp("cluster")
    running = Cluster(start_engines(directory), directory)
    metrics_ports = {"sfu-1": free_port(), "sfu-2": free_port()}
    try:
        for name, port in metrics_ports.items():
            running.sfu_node(name, "--metrics-port", str(port))
        running.signal_node("signal-1")
        running.signal_node("signal-2")
        yield running, metrics_ports
    finally:
        running.stop()


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        assert response.status == 200
        return await response.text()


def by_node(text: str, name: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["node"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_nodes_export_their_load_and_a_signal_node_everyone_s(
    cluster: tuple[Cluster, dict[str, int]],
) -> None:
    running, metrics_ports = cluster
    signal_1, signal_2 = (node.http_url for node in running.signals)

    async def all_known() -> bool:
        return set(by_node(await scrape(signal_1), "aiosfu_node_info")) == NODES

    await wait_for(all_known, 15, interval=0.2)

    teacher = await Client.connect(running.signals[0].ws_url, "teacher", ice_ips=["127.0.0.1"])
    student = await Client.connect(running.signals[1].ws_url, "student", ice_ips=["127.0.0.1"])
    try:
        await teacher.join("class")
        publication = await teacher.publish("class", [PatternTrack(320, 240)])
        if not (await student.join("class"))["pubs"]:  # announced once connected, via NATS
            await student.signaling.wait_for("stream-add", timeout=15)
        subscription = await student.subscribe("class", publication.mid)
        video = FrameCounter(await wait_for_track(subscription, "video")).start()
        await wait_for(lambda: video.frames >= 20, 20)

        # Within a load refresh (2 s) the room's SFU node carries both tracks and bytes.
        async def loaded() -> bool:
            text = await scrape(signal_1)
            tracks, rooms = by_node(text, "aiosfu_node_tracks"), by_node(text, "aiosfu_node_rooms")
            peers = by_node(text, "aiosfu_node_peers")
            busy = [node for node, kind in NODES if kind == "sfu" and rooms.get((node, kind))]
            # Each signal node holds one connection; signal-1 knows signal-2's from etcd.
            return (
                len(busy) == 1
                and tracks[(busy[0], "sfu")] >= 2
                and peers[("signal-1", "signal")] == peers[("signal-2", "signal")] == 1
            )

        await wait_for(loaded, 15, interval=0.3)
        text = await scrape(signal_1)
        rooms = by_node(text, "aiosfu_node_rooms")
        (busy,) = [node for (node, kind), n in rooms.items() if kind == "sfu" and n]
        idle = "sfu-2" if busy == "sfu-1" else "sfu-1"
        assert publication.sfuid == busy
        assert rooms[(idle, "sfu")] == 0
        assert by_node(text, "aiosfu_node_bytes_per_second")[(busy, "sfu")] > 0
        assert by_node(text, "aiosfu_node_peers")[(busy, "sfu")] == 2
        assert all(v == 0 for v in by_node(text, "aiosfu_node_draining").values())
        assert all(0 <= v < 5 for v in by_node(text, "aiosfu_node_load_age_seconds").values())
        assert set(by_node(await scrape(signal_2), "aiosfu_node_info")) == NODES
        # The signal node's own traffic families add up its SFU nodes' counters.
        exported = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
        assert exported["aiosfu_bytes_out_total"].value > 0

        # An SFU node exports its own record, and no one else's.
        own = await scrape(f"http://127.0.0.1:{metrics_ports[busy]}")
        assert set(by_node(own, "aiosfu_node_info")) == {(busy, "sfu")}
        assert by_node(own, "aiosfu_node_rooms") == {(busy, "sfu"): 1}
        assert by_node(own, "aiosfu_node_tracks")[(busy, "sfu")] >= 2

        # Every node panel of the dashboard charts metrics a signal node exports.
        names = {f.name for f in text_string_to_metric_families(text)} | set(exported)
        node_exprs = [e for e in dashboard_expressions() if "aiosfu_node_" in e]
        assert node_exprs, "the dashboard has no per-node panel"
        for expr in node_exprs:
            used = set(re.findall(r"\baiosfu_[a-z_]+", expr))
            assert used <= names, (expr, used - names)
        await video.stop()
    finally:
        await asyncio.gather(teacher.close(), student.close())
