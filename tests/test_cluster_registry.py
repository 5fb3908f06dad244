"""The etcd registry against a real etcd: registration under a lease, discovery by watch,
room placement by transaction (one owner per room, however many signal nodes race),
owners that vanish with their node, and an etcd outage that refuses only new rooms.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.nodes import Load, NodeInfo, choose_node
from aiosfu.cluster.registry import EtcdRegistry, Placement, Timing
from aiosfu.contract import ErrorCode
from tests.conftest import wait_for
from tests.engines import Engine, etcd

FAST = Timing(lease_ttl=2, renew_every=0.5, load_every=0.5)


@pytest.fixture(scope="module")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = etcd(tmp_path_factory.mktemp("etcd"))
    engine.start()
    yield engine
    engine.stop()


def url(engine: Engine) -> str:
    return f"http://127.0.0.1:{engine.port}"


def sfu_node(node_id: str, **kw) -> NodeInfo:
    return NodeInfo(id=node_id, kind="sfu", version="test", addresses={"grpc": "x"}, **kw)


@pytest.fixture
async def started() -> AsyncIterator[list[EtcdRegistry]]:
    """Registries started by a test, closed after it."""
    registries: list[EtcdRegistry] = []
    yield registries
    for registry in registries:
        await registry.close()


async def start(started: list[EtcdRegistry], registry: EtcdRegistry) -> EtcdRegistry:
    await registry.start()
    started.append(registry)
    return registry


async def test_a_node_is_discovered_with_its_load_and_leaves_on_close(
    etcd_server: Engine, started: list[EtcdRegistry]
) -> None:
    watcher = await start(started, EtcdRegistry(url(etcd_server)))
    loads = iter(range(1, 1000))
    node = EtcdRegistry(
        url(etcd_server),
        sfu_node("sfu-d", region="eu"),
        load=lambda: Load(rooms=next(loads)),
        timing=FAST,
    )
    await node.start()
    await wait_for(lambda: watcher.node("sfu-d") is not None, 5)
    seen = watcher.node("sfu-d")
    assert seen is not None and seen.region == "eu" and seen.state == "serving"
    assert seen.lease and seen.addresses == {"grpc": "x"}
    first = seen.load.rooms
    await wait_for(lambda: watcher.node("sfu-d").load.rooms > first, 5)  # refreshed, watched
    await node.set_state("draining")
    await wait_for(lambda: watcher.node("sfu-d").state == "draining", 5)
    await node.close()
    await wait_for(lambda: watcher.node("sfu-d") is None, 5)


def test_stale_load_counts_as_gone() -> None:
    node = sfu_node("sfu-s").with_load(Load())
    assert node.fresh() and node.accepts_rooms()
    assert not node.fresh(now=node.updated_at + 5.5)
    assert not node.accepts_rooms(now=node.updated_at + 5.5)


def test_two_choices_prefer_the_lighter_node() -> None:
    light, heavy = sfu_node("a").with_load(Load(tracks=1)), sfu_node("b").with_load(Load(tracks=9))
    assert {choose_node([light, heavy]).id for _ in range(20)} == {"a"}
    assert choose_node([heavy]).id == "b"


async def test_races_for_new_rooms_from_two_signal_nodes_end_with_one_owner(
    etcd_server: Engine, started: list[EtcdRegistry]
) -> None:
    for name in ("sfu-r1", "sfu-r2"):
        await start(started, EtcdRegistry(url(etcd_server), sfu_node(name), timing=FAST))
    signals = [await start(started, EtcdRegistry(url(etcd_server))) for _ in range(2)]
    for signal_node in signals:
        await wait_for(lambda s=signal_node: len(s.nodes("sfu")) >= 2, 5)
    owners: set[str] = set()
    for race in range(50):
        rid = f"race-{race}-{time.monotonic_ns()}"
        claims = [s.place_room(rid) for s in signals for _ in range(3)]
        placements = await asyncio.gather(*claims)
        assert len(set(placements)) == 1, f"race {race}: {set(placements)}"
        owners.add(placements[0].sfuid)
    assert owners == {"sfu-r1", "sfu-r2"}  # two random choices spread rooms over both


KILLABLE_NODE = """
import asyncio, sys
from aiosfu.cluster.nodes import NodeInfo
from aiosfu.cluster.registry import EtcdRegistry, Timing
async def main():
    node = NodeInfo(id=sys.argv[2], kind="sfu", version="test")
    registry = EtcdRegistry(sys.argv[1], node, timing=Timing(lease_ttl=2, renew_every=0.5))
    await registry.start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def test_a_killed_nodes_rooms_lose_their_owner_and_move(
    etcd_server: Engine, started: list[EtcdRegistry]
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLABLE_NODE, url(etcd_server), "sfu-k1",
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert (await asyncio.wait_for(proc.stdout.readline(), 10)).strip() == b"ready"
        signal_node = await start(started, EtcdRegistry(url(etcd_server)))
        lost: list[Placement] = []

        async def on_lost(placement: Placement) -> None:
            lost.append(placement)

        signal_node.on_owner_lost(on_lost)
        await wait_for(lambda: signal_node.node("sfu-k1") is not None, 5)
        first = await signal_node.place_room("moving")
        assert first.sfuid == "sfu-k1"
        await start(started, EtcdRegistry(url(etcd_server), sfu_node("sfu-k2"), timing=FAST))
        await wait_for(lambda: signal_node.node("sfu-k2") is not None, 5)
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await wait_for(lambda: lost, 2 + 3)
        took = time.monotonic() - killed
        assert lost == [first]
        assert took < 2 + 1.5, f"owner key outlived the lease TTL by {took - 2:.1f}s"
        assert signal_node.node("sfu-k1") is None
        second = await signal_node.place_room("moving")
        assert second.sfuid == "sfu-k2" and second.epoch > first.epoch
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_an_etcd_outage_refuses_new_rooms_and_heals_without_restart(
    tmp_path: Path, started: list[EtcdRegistry]
) -> None:
    engine = etcd(tmp_path)
    engine.start()
    try:
        sfu = await start(started, EtcdRegistry(url(engine), sfu_node("sfu-o"), timing=FAST))
        signal_node = await start(started, EtcdRegistry(url(engine)))
        await wait_for(lambda: signal_node.nodes("sfu"), 5)
        live = await signal_node.place_room("live")
        engine.stop()
        await wait_for(lambda: not signal_node.synced.is_set(), 5)
        assert signal_node.owner("live") == live  # a live room keeps its placement
        assert await signal_node.place_room("live") == live
        with pytest.raises(ClusterError) as refused:
            await signal_node.place_room("new-during-outage")
        assert refused.value.code == ErrorCode.CLUSTER_UNAVAILABLE
        await asyncio.sleep(1.0)  # less than the lease TTL: etcd keeps the lease on restart
        engine.start()
        await wait_for(signal_node.synced.is_set, 10)
        await wait_for(lambda: signal_node.nodes("sfu"), 10)
        placed = await signal_node.place_room("new-after-outage")
        assert placed.sfuid == "sfu-o" and sfu.registered.is_set()
    finally:
        engine.stop()
