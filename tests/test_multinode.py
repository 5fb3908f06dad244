"""Two signal nodes and two SFU nodes on real etcd, NATS and Redis: a room spans both
signal nodes as if it were one server, and media crosses them without being decoded."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from aiosfu.client import Client
from aiosfu.client.signaling import SignalingError
from tests.cluster import Cluster, clients, cluster, connect, received_since, signal_stats
from tests.conftest import wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

__all__ = ["clients", "cluster"]  # the fixtures


async def test_a_room_spans_both_signal_nodes(cluster: Cluster, clients: list[Client]) -> None:
    one, two = cluster.signals
    alice = await connect(clients, one.ws_url, "alice")
    bob = await connect(clients, two.ws_url, "bob")
    assert (await alice.join("span")) == {"pubs": [], "users": []}
    joined = await bob.join("span")
    # Seed 002's exact shape, with the real node id of the signal node alice is on.
    assert joined == {
        "pubs": [],
        "users": [{"signalid": "signal-1", "rid": "span", "uid": "alice"}],
    }
    peer_join = await alice.signaling.wait_for("peer-join", timeout=5)
    assert peer_join == {"rid": "span", "uid": "bob", "bizid": ""}

    publication = await alice.publish("span", [PatternTrack(320, 240)])
    assert publication.sfuid in {"sfu-1", "sfu-2"}
    stream_add = await bob.signaling.wait_for("stream-add", timeout=5)
    assert stream_add["mid"] == publication.mid
    assert stream_add["sfuid"] == publication.sfuid and stream_add["uid"] == "alice"

    carol = await connect(clients, two.ws_url, "carol")
    late = await carol.join("span")  # a late joiner hears the whole cluster's room
    assert {u["uid"]: u["signalid"] for u in late["users"]} == {
        "alice": "signal-1",
        "bob": "signal-2",
    }
    assert [p["mid"] for p in late["pubs"]] == [publication.mid]

    await alice.broadcast("span", {"text": "hello"})
    said = await carol.signaling.wait_for("broadcast", timeout=5)
    assert said == {"rid": "span", "uid": "alice", "data": {"text": "hello"}}

    await alice.leave("span")
    removed = await bob.signaling.wait_for("stream-remove", timeout=5)
    assert removed == {"rid": "span", "uid": "alice", "mid": publication.mid}
    left = await bob.signaling.wait_for("peer-leave", timeout=5)
    assert left == {"rid": "span", "uid": "alice"}
    again = await connect(clients, one.ws_url, "dave")
    assert {u["uid"] for u in (await again.join("span"))["users"]} == {"bob", "carol"}


async def test_media_published_on_one_signal_node_is_decoded_on_the_other(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    teacher = await connect(clients, one.ws_url, "teacher")
    await teacher.join("media")
    students = [await connect(clients, two.ws_url, f"student-{i}") for i in range(2)]
    for student in students:
        await student.join("media")
    publication = await teacher.publish("media", [PatternTrack(640, 480)])
    counters = []
    for student in students:
        added = await student.signaling.wait_for("stream-add", timeout=5)
        mid, sfuid = added["mid"], added["sfuid"]
        subscription = await student.subscribe("media", mid, sfuid, kinds=("video",))
        counters.append(FrameCounter(await wait_for_track(subscription, "video")).start())
    await wait_for(lambda: all(c.frames >= 20 for c in counters), 20)
    for counter in counters:
        assert counter.sizes == {(640, 480)}
        await counter.stop()
    stats = await signal_stats(one.http_url)
    node = stats["sfu"]["nodes"][publication.sfuid]
    assert publication.mid in node["publications"] and node["decoding"] is False


async def test_rooms_spread_over_both_sfu_nodes(cluster: Cluster, clients: list[Client]) -> None:
    one, two = cluster.signals

    async def settled() -> bool:  # the earlier tests' rooms are gone from the loads
        loads = (await signal_stats(one.http_url))["signal"]["cluster"]["sfu_loads"]
        return all(load["peers"] == 0 for load in loads.values())

    for _ in range(50):
        if await settled():
            break
        await asyncio.sleep(0.2)
    placed = set()
    for i in range(8):
        peer = await connect(clients, (one, two)[i % 2].ws_url, f"spread-{i}")
        await peer.join(f"spread-{i}")
        placed.add((await peer.publish(f"spread-{i}", [PatternTrack(160, 120)])).sfuid)
        if placed == {"sfu-1", "sfu-2"}:
            break
    loads = (await signal_stats(one.http_url))["signal"]["cluster"]["sfu_loads"]
    assert placed == {"sfu-1", "sfu-2"}, loads


async def canned_offer() -> str:
    """One real aiortc offer, reused: placement happens on publish, not on ICE."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(PatternTrack(160, 120))
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_fifty_races_for_a_new_room_from_both_signal_nodes_end_with_one_owner(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    sdp = await canned_offer()
    minfo = {"audio": False, "video": True, "audiotype": 0, "videotype": 0}

    async def race(n: int) -> tuple[str, str]:
        rid = f"race-{n}"
        a = await connect(clients, one.ws_url, f"race-a{n}")
        b = await connect(clients, two.ws_url, f"race-b{n}")
        await asyncio.gather(a.join(rid), b.join(rid))
        publish = {"rid": rid, "jsep": {"type": "offer", "sdp": sdp}, "minfo": minfo}
        ra, rb = await asyncio.gather(a.request("publish", publish), b.request("publish", publish))
        return ra["sfuid"], rb["sfuid"]

    results = []
    for batch in range(0, 50, 10):  # ten rooms raced at once, from both signal nodes
        results += await asyncio.gather(*(race(n) for n in range(batch, batch + 10)))
    split = [(n, r) for n, r in enumerate(results) if r[0] != r[1]]
    assert not split, f"rooms placed on two SFU nodes: {split}"
    assert {r[0] for r in results} == {"sfu-1", "sfu-2"}


async def test_a_stream_is_announced_on_the_other_node_only_once_it_connects(
    cluster: Cluster, clients: list[Client]
) -> None:
    """As on one node: a publication whose transport never connects is never announced."""
    one, two = cluster.signals
    stuck = await connect(clients, one.ws_url, "stuck-publisher")
    viewer = await connect(clients, two.ws_url, "stuck-viewer")
    await stuck.join("stuck")
    await viewer.join("stuck")
    minfo = {"audio": False, "video": True, "audiotype": 0, "videotype": 0}
    offer = {"type": "offer", "sdp": await canned_offer()}  # its peer connection is closed
    await stuck.request("publish", {"rid": "stuck", "jsep": offer, "minfo": minfo})
    live = await connect(clients, one.ws_url, "live-publisher")
    await live.join("stuck")
    publication = await live.publish("stuck", [PatternTrack(160, 120)])
    added = await viewer.signaling.wait_for("stream-add", timeout=5)
    assert added["mid"] == publication.mid  # the connected one, and it alone
    late = await connect(clients, two.ws_url, "stuck-late")
    assert [p["mid"] for p in (await late.join("stuck"))["pubs"]] == [publication.mid]


async def test_a_second_connection_through_the_other_node_takes_over_without_churn(
    cluster: Cluster, clients: list[Client]
) -> None:
    """The same uid joins through signal node 2 while its connection to node 1 lives
    (a network change, a second tab): node 2 adopts its place and stream, node 1 lets go
    of the old connection (4001) without ending the stream, and nobody sees a change."""
    one, two = cluster.signals
    first = await connect(clients, one.ws_url, "mover")
    watcher = await connect(clients, two.ws_url, "mover-watcher")
    await first.join("move")
    await watcher.join("move")
    publication = await first.publish("move", [PatternTrack(160, 120)])
    await watcher.signaling.wait_for("stream-add", timeout=5)
    seen = watcher.signaling.received

    second = await connect(clients, two.ws_url, "mover")
    joined = await second.join("move")
    assert joined["resumed"] == [publication.mid]
    assert [u["uid"] for u in joined["users"]] == ["mover-watcher"]
    await wait_for(lambda: first.signaling.closed, 5)
    assert first.signaling._ws.close_code == 4001
    await asyncio.sleep(1)
    assert received_since(watcher, seen) == []
    stats = await signal_stats(two.http_url)
    assert stats["signal"]["rooms"]["move"]["members"] == ["mover", "mover-watcher"]
    assert "move" not in (await signal_stats(one.http_url))["signal"]["rooms"]  # let go
    node = stats["sfu"]["nodes"][publication.sfuid]
    assert publication.mid in node["publications"]  # the stream lives on
    await second.request("unpublish", {"rid": "move", "mid": publication.mid})  # its own now
    removed = await watcher.signaling.wait_for("stream-remove", start=seen, timeout=5)
    assert removed["mid"] == publication.mid


OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


async def test_a_mesh_room_relays_between_signal_nodes(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    alice = await connect(clients, one.ws_url, "mesh-alice")
    bob = await connect(clients, two.ws_url, "mesh-bob")
    first = await alice.join("mesh", mode="p2p")
    assert first["mode"] == "p2p"
    joined = await bob.join("mesh", mode="p2p")  # the room's mode is known on node 2 too
    assert joined["mode"] == "p2p" and [u["uid"] for u in joined["users"]] == ["mesh-alice"]
    await alice.signaling.wait_for("peer-join", lambda d: d["uid"] == "mesh-bob", timeout=5)
    await alice.request("offer", {"rid": "mesh", "to": "mesh-bob", "jsep": OFFER})
    offer = await bob.signaling.wait_for("offer", timeout=5)
    assert offer == {"from": "mesh-alice", "jsep": OFFER, "rid": "mesh"}
    answer = {"type": "answer", "sdp": OFFER["sdp"]}
    await bob.request("answer", {"rid": "mesh", "to": "mesh-alice", "jsep": answer})
    assert (await alice.signaling.wait_for("answer", timeout=5))["from"] == "mesh-bob"
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0}  # fmt: skip
    await bob.request("candidate", {"rid": "mesh", "to": "mesh-alice", "candidate": candidate})
    heard = await alice.signaling.wait_for("candidate", timeout=5)
    assert heard["from"] == "mesh-bob" and heard["candidate"]["candidate"] == candidate["candidate"]
    with pytest.raises(SignalingError) as refused:  # no offer from carol: refused as on one node
        carol = await connect(clients, two.ws_url, "mesh-carol")
        await carol.join("mesh", mode="p2p")
        await carol.request("answer", {"rid": "mesh", "to": "mesh-alice", "jsep": answer})
    assert refused.value.code == "no-connection"
