"""Room state in a real Redis and room events over a real NATS, as two signal nodes see
them; both engines stopped and started again to show the refusal and the recovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosfu.cluster.bus import Gone, NatsBus, node_subject, room_subject, token
from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.store import RedisStore, members_key
from aiosfu.contract import ErrorCode
from aiosfu.room import Member, Publication
from tests.conftest import wait_for
from tests.engines import Engine, nats, redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = redis(tmp_path_factory.mktemp("redis"))
    engine.start()
    yield engine
    engine.stop()


def redis_url(engine: Engine) -> str:
    return f"redis://127.0.0.1:{engine.port}/0"


def nats_url(engine: Engine) -> str:
    return f"nats://127.0.0.1:{engine.port}"


PUB = Publication(mid="alice#1", uid="alice", rid="math", sfuid="sfu-1", minfo={"video": True})


async def test_a_room_reads_the_same_from_every_signal_node(redis_server: Engine) -> None:
    one, two = RedisStore(redis_url(redis_server)), RedisStore(redis_url(redis_server))
    try:
        await one.add_member("math", Member("alice", "signal-1", "biz"))
        await two.add_member("math", Member("bob", "signal-2"))
        await one.add_publication(PUB)
        members, pubs = await two.load_room("math")
        assert sorted(members, key=lambda m: m.uid) == [
            Member("alice", "signal-1", "biz"),
            Member("bob", "signal-2"),
        ]
        assert pubs == [PUB]
        ttl = await one.redis.ttl(members_key("math"))
        assert 0 < ttl <= 30  # it expires unless refreshed
        await one.remove_member("math", "alice", ["alice#1"])
        members, pubs = await two.load_room("math")
        assert members == [Member("bob", "signal-2")] and pubs == []
    finally:
        await one.close()
        await two.close()


async def test_the_sweeper_drops_only_unowned_rooms_nobody_refreshes(redis_server: Engine) -> None:
    store = RedisStore(redis_url(redis_server), ttl=1)
    try:
        orphan = Publication("x#1", "x", "orphan", "sfu-gone", {})
        await store.add_member("kept", Member("a", "signal-1"))
        await store.add_publication(orphan)  # a room with publications but no member left
        assert await store.sweep(owned={"kept", "math"}) == ["orphan"]
        assert (await store.load_room("orphan"))[1] == []
        assert await store.sweep(owned={"math"}) == []  # "kept" still has a member
        await asyncio.sleep(2.1)  # nobody refreshed it
        assert await store.sweep(owned={"math"}) == ["kept"]
    finally:
        await store.close()


async def test_a_redis_outage_is_cluster_unavailable_and_heals(tmp_path: Path) -> None:
    engine = redis(tmp_path)
    engine.start()
    store = RedisStore(redis_url(engine))
    try:
        await store.add_member("r", Member("a", "signal-1"))
        engine.stop()
        with pytest.raises(ClusterError) as refused:
            await store.load_room("r")
        assert (
            refused.value.code == ErrorCode.CLUSTER_UNAVAILABLE and "Redis" in refused.value.reason
        )
        engine.start()
        await store.add_member("r", Member("b", "signal-1"))  # same client, no restart
        assert [m.uid for m in (await store.load_room("r"))[0]] == ["b"]
    finally:
        await store.close()
        engine.stop()


def test_any_rid_becomes_one_safe_subject_token() -> None:
    assert room_subject("math-101") == "aiosfu.room.math-101"
    for rid in ("a.b", "*", ">", "a b", "ünï"):
        assert token(rid).startswith("~") and "." not in token(rid)
    assert token("a.b") != token("a_b")


async def test_room_events_and_relay_across_two_nodes(tmp_path: Path) -> None:
    engine = nats(tmp_path)
    engine.start()
    one = await NatsBus.connect(nats_url(engine), "signal-1")
    two = await NatsBus.connect(nats_url(engine), "signal-2")
    try:
        heard: list[dict] = []

        async def on_room(message: dict) -> None:
            heard.append(message)

        async def on_relay(message: dict) -> dict:
            return {"delivered": message["to"]}

        await two.subscribe(room_subject("math"), on_room)
        await two.subscribe(node_subject("signal-2"), on_relay)
        await two.nc.flush()
        event = {"origin": "signal-1", "method": "peer-join", "data": {"uid": "alice"}}
        await one.publish(room_subject("math"), event)
        await wait_for(lambda: heard, 5)
        assert heard == [event]
        reply = await one.request(node_subject("signal-2"), {"to": "bob"})
        assert reply == {"delivered": "bob"}
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(Gone):
            await one.request(node_subject("signal-9"), {"to": "carol"}, timeout=5)
        assert loop.time() - began < 1  # no responders: answered at once, not at the timeout

        engine.stop()
        await wait_for(lambda: not one.connected, 10)
        with pytest.raises(ClusterError) as refused:
            await one.publish(room_subject("math"), event)
        assert refused.value.code == ErrorCode.CLUSTER_UNAVAILABLE
        engine.start()
        await wait_for(lambda: one.connected and two.connected, 15)
        heard.clear()

        async def heard_again() -> bool:  # two's subscription comes back by itself
            await one.publish(room_subject("math"), event)
            await asyncio.sleep(0.2)
            return bool(heard)

        await wait_for(heard_again, 10)
    finally:
        await one.close()
        await two.close()
        engine.stop()
