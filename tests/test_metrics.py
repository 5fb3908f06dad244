"""Prometheus /metrics of a real server with real aiortc peers, and the Grafana dashboard
that reads them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiosfu.client import Client, SignalingError
from aiosfu.signal.metrics import ServerCollector
from tests.conftest import ROOT, ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track
from tests.test_access import keyed, token  # noqa: F401  (the keyed fixture)

pytestmark = pytest.mark.media

DASHBOARD = ROOT / "deploy" / "grafana" / "aiosfu.json"
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
# `aiosfu` as installed in the project's virtualenv, first on PATH.
CLI_ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def keyed_config(server: ServerProcess) -> Path:
    return Path(server.extra_args[server.extra_args.index("--config") + 1])


async def scrape(server: ServerProcess, **headers: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.http_url}/metrics", headers=headers) as r,
    ):
        return r.status, await r.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def test_metrics_follow_rooms_traffic_and_requests(server: ServerProcess) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [ToneTrack(), PatternTrack(320, 240)])
    student = await Client.connect(server.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    with pytest.raises(SignalingError):
        await student.subscribe("class", "no-such-mid")
    await wait_for(lambda: video.frames >= 20, 20)

    status, text = await scrape(server)
    assert status == 200
    assert value(text, "aiosfu_rooms") == 1
    assert value(text, "aiosfu_participants") == 2
    assert value(text, "aiosfu_publications") == 1
    assert value(text, "aiosfu_subscriptions") == 1
    for kind in ("audio", "video"):
        assert value(text, "aiosfu_packets_in_total", kind=kind) > 0
        assert value(text, "aiosfu_bytes_out_total", kind=kind) > 0
    assert value(text, "aiosfu_signaling_requests_total", method="join", result="ok") == 2
    assert value(text, "aiosfu_signaling_requests_total", method="publish", result="ok") == 1
    refused = value(
        text, "aiosfu_signaling_requests_total", method="subscribe", result="unknown-mid"
    )
    assert refused == 1

    # The subscriber leaves: its transport and counters are gone, the totals stay.
    sent = value(text, "aiosfu_bytes_out_total", kind="video")
    await video.stop()
    await student.close()
    await wait_for(lambda: not server_subscriptions(server), 10)
    _, after = await scrape(server)
    assert value(after, "aiosfu_subscriptions") == 0
    assert value(after, "aiosfu_participants") == 1
    assert value(after, "aiosfu_bytes_out_total", kind="video") >= sent
    await teacher.close()

    # Every metric the dashboard charts is one the server exports.
    exported = {family.name for family in text_string_to_metric_families(text)}
    exported |= {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    for expr in dashboard_expressions():
        if "aiosfu_node_" in expr:
            continue  # cluster nodes' load: tests/test_cluster_metrics.py checks those
        names = set(re.findall(r"\baiosfu_[a-z_]+", expr))
        assert names and names <= exported, (expr, names - exported)


def server_subscriptions(server: ServerProcess) -> bool:
    import urllib.request

    with urllib.request.urlopen(f"{server.http_url}/stats") as r:
        return bool(json.load(r)["sfu"]["subscriptions"])


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "the dashboard has no panels"
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(panel["targets"] for panel in dashboard["panels"])
    return exprs


async def test_metrics_need_an_operator_token(keyed: ServerProcess, tmp_path: Path) -> None:  # noqa: F811
    assert (await scrape(keyed))[0] == 401
    assert (await scrape(keyed, Authorization=f"Bearer {token('s')}"))[0] == 403
    # The token as docs/operations.md makes it.
    (command,) = re.findall(r"```sh\n(aiosfu token .*?)\n```", OPERATIONS)
    command = command.replace("aiosfu.toml", str(keyed_config(keyed)))
    command = command.replace("/etc/prometheus/aiosfu.token", str(tmp_path / "aiosfu.token"))
    proc = await asyncio.create_subprocess_shell(
        command, cwd=ROOT, env=CLI_ENV, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err
    admin = (tmp_path / "aiosfu.token").read_text().strip()
    status, text = await scrape(keyed, Authorization=f"Bearer {admin}")
    assert status == 200
    assert value(text, "aiosfu_rooms") == 0


class _Plane:
    """What a collector reads of the media plane: its stats(), here as a media plane with
    congestion control reports them."""

    def __init__(self, stats: dict[str, Any]) -> None:
        self._stats = stats

    def stats(self) -> dict[str, Any]:
        return self._stats


class _Service:
    def __init__(self, sfu: dict[str, Any]) -> None:
        self.sfu = _Plane(sfu)

    def stats(self) -> dict[str, Any]:
        return {"rooms": {}}


def test_downlink_estimates_and_loss_are_histograms() -> None:
    sfu = {
        "subscriptions": {
            "a": {"consumers": [], "downstream": {"estimateBps": 300_000, "fractionLost": 0.0}},
            "b": {"consumers": [], "downstream": {"estimateBps": 3_000_000, "fractionLost": 0.08}},
            "c": {"consumers": [], "downstream": None},
        }
    }
    service = _Service(sfu)
    collector = ServerCollector(service)  # type: ignore[arg-type]
    collector.sfu_stats = sfu  # what Metrics.render reads from the SFU before collecting
    families = {f.name: f for f in collector.collect()}
    estimate = {
        s.labels.get("le"): s.value for s in families["aiosfu_downlink_estimate_bps"].samples
    }
    assert estimate["250000"] == 0
    assert estimate["500000"] == 1
    assert estimate["4000000"] == 2
    assert estimate["+Inf"] == 2
    loss = {s.labels.get("le"): s.value for s in families["aiosfu_downlink_loss_ratio"].samples}
    assert loss["0.0"] == 1
    assert loss["0.05"] == 1
    assert loss["0.1"] == 2


def test_dashboard_is_grafana_json() -> None:
    dashboard = json.loads(Path(DASHBOARD).read_text())
    assert dashboard["title"] == "aiosfu"
    assert len(dashboard_expressions()) >= 9
