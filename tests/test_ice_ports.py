"""`--ice-ports LOW-HIGH`: the server's ICE host candidates stay in a UDP port range (for
a firewall or a Kubernetes node that opens only that range), media flows through them,
and a transport that finds the range full is refused with a code and a reason at once."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosfu.client import Client, SignalingError
from aiosfu.config import Config, load_config, port_range
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

# Below Linux's ephemeral range (32768-60999), so the test's own peers never take them.
LOW = random.randrange(20000, 30000, 10)
HIGH = LOW + 2  # three ports: one publisher, two subscribers
HOST_CANDIDATE = re.compile(r"^a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", re.I | re.M)


def test_the_range_is_read_from_flags_and_config() -> None:
    assert port_range("50000-50100") == (50000, 50100)
    for bad in ("50000", "50000-", "a-b", "50000:50100"):
        with pytest.raises(ValueError, match="LOW-HIGH"):
            port_range(bad)
    assert load_config(env={"AIOSFU_ICE_PORT_MIN": "50000", "AIOSFU_ICE_PORT_MAX": "50100"})
    for low, high in ((50100, 50000), (0, 50000), (50000, 0)):
        with pytest.raises(ValueError, match="ice_port_min"):
            Config(ice_port_min=low, ice_port_max=high)


@pytest.fixture
def ranged(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path, "--ice-ports", f"{LOW}-{HIGH}")
    yield srv
    stop_server(srv)


def server_ports(sdp: str) -> set[int]:
    found = {int(port) for _, port in HOST_CANDIDATE.findall(sdp)}
    assert found, sdp
    return found


async def test_candidates_use_the_range_and_media_flows(ranged: ServerProcess) -> None:
    teacher = await Client.connect(ranged.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [PatternTrack(320, 240)])
    ports = server_ports(publication.pc.remoteDescription.sdp)

    viewers, counters = [], []
    for uid in ("s1", "s2"):
        viewer = await Client.connect(ranged.ws_url, uid)
        await viewer.join("class")
        subscription = await viewer.subscribe("class", publication.mid)
        ports |= server_ports(subscription.pc.remoteDescription.sdp)
        counters.append(FrameCounter(await wait_for_track(subscription, "video")).start())
        viewers.append((viewer, subscription))
    assert ports == set(range(LOW, HIGH + 1))  # every port in the range, none outside
    await wait_for(lambda: all(c.frames >= 20 for c in counters), 20)
    assert all(c.sizes == {(320, 240)} for c in counters)

    # The range is full: the next transport is refused at once, with the code and range.
    late = await Client.connect(ranged.ws_url, "s3")
    await late.join("class")
    with pytest.raises(SignalingError) as refused:
        await late.subscribe("class", publication.mid)
    assert refused.value.code == "no-media-port"
    assert f"{LOW}-{HIGH}" in refused.value.reason
    with pytest.raises(SignalingError, match="no-media-port"):
        await late.publish("class", [PatternTrack()])

    # Everyone else is still served, and a port that is given back is used again.
    frames = counters[0].frames
    await wait_for(lambda: counters[0].frames > frames + 10, 10)
    viewer, subscription = viewers.pop()
    await counters.pop().stop()
    await viewer.unsubscribe(subscription)
    await viewer.close()

    async def subscribed() -> bool:
        try:
            again = await late.subscribe("class", publication.mid)
        except SignalingError as exc:
            assert exc.code == "no-media-port"
            return False
        assert server_ports(again.pc.remoteDescription.sdp) <= set(range(LOW, HIGH + 1))
        counters.append(FrameCounter(await wait_for_track(again, "video")).start())
        return True

    await wait_for(subscribed, 10, interval=0.2)
    await wait_for(lambda: counters[-1].frames >= 10, 20)
    for counter in counters:
        await counter.stop()
    for client in (teacher, late, *(v for v, _ in viewers)):
        await client.close()
