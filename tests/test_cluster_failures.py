"""A cluster losing parts of itself (docs/cluster.md, "Failures"): the times are measured
and asserted loosely; the figures in docs/cluster.md come from these tests' output."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from aiosfu.client import Client
from aiosfu.client.recovery import Recovery
from tests.cluster import (
    PEER_GRACE,
    Cluster,
    Node,
    clients,
    cluster,
    connect,
    received_since,
    signal_stats,
    wait_for_discovery,
)
from tests.conftest import wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

__all__ = ["clients", "cluster"]  # the fixtures

LEASE_TTL = 5.0


async def not_(predicate) -> bool:
    return not await predicate()


def sfu_named(cluster: Cluster, name: str) -> Node:
    return next(node for node in cluster.sfus if node.name == name)


async def watch_frames(subscription, minimum: int, timeout: float) -> FrameCounter:
    counter = FrameCounter(await wait_for_track(subscription, "video", timeout)).start()
    await wait_for(lambda: counter.frames >= minimum, timeout)
    return counter


async def test_a_killed_sfu_nodes_rooms_move_and_media_comes_back(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    teacher = await connect(clients, one.ws_url, "teacher")
    student = await connect(clients, two.ws_url, "student")
    Recovery(teacher)
    student_recovery = Recovery(student)
    await teacher.join("lesson")
    await student.join("lesson")
    publication = await teacher.publish("lesson", [PatternTrack(320, 240)])
    added = await student.signaling.wait_for("stream-add", timeout=5)
    subscription = await student.subscribe("lesson", added["mid"], added["sfuid"], ("video",))
    before = await watch_frames(subscription, 10, 15)
    await before.stop()
    doomed = sfu_named(cluster, publication.sfuid)
    seen = student.signaling.received

    doomed.kill()  # SIGKILL
    killed = time.monotonic()
    removed = await student.signaling.wait_for("stream-remove", start=seen, timeout=LEASE_TTL + 5)
    removed_after = time.monotonic() - killed
    assert removed == {"rid": "lesson", "uid": "teacher", "mid": added["mid"]}
    lost = await student.signaling.wait_for("stream-lost", start=seen, timeout=1)
    assert lost["sfuid"] == doomed.name
    republish = await teacher.signaling.wait_for("republish", timeout=1)
    assert republish["mid"] == added["mid"] and republish["reason"] == "sfu-lost"

    # The SDKs publish and subscribe again on their own; the room is on the other node.
    await wait_for(lambda: student_recovery.resubscribed == 1, 10)
    assert publication.sfuid != doomed.name and publication.mid != added["mid"]
    assert subscription.mid == publication.mid and subscription.sfuid == publication.sfuid
    try:
        after = await watch_frames(subscription, 10, 10)
    except AssertionError:
        print((await signal_stats(one.http_url))["sfu"])
        raise
    back_after = time.monotonic() - killed
    assert after.sizes == {(320, 240)}
    await after.stop()
    print(f"\nsfu-kill: stream-remove after {removed_after:.2f} s, media back after "
          f"{back_after:.2f} s (lease TTL {LEASE_TTL:.0f} s)")  # fmt: skip
    assert removed_after < LEASE_TTL + 1.5
    assert back_after < LEASE_TTL + 5
    cluster.sfu_node("sfu-3")  # the cluster has two SFU nodes again for the next tests


async def test_a_killed_signal_nodes_peers_leave_the_others_view(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    await wait_for_discovery(cluster)
    gone = await connect(clients, one.ws_url, "leaving")
    stays = await connect(clients, two.ws_url, "staying")
    await gone.join("crash")
    await stays.join("crash")
    publication = await gone.publish("crash", [PatternTrack(160, 120)])
    await stays.signaling.wait_for("stream-add", timeout=5)
    # A room whose members were all on the lost node: no other node follows it.
    solo = await connect(clients, one.ws_url, "solo")
    await solo.join("crash-solo")
    solo_publication = await solo.publish("crash-solo", [PatternTrack(160, 120)])
    await wait_for(lambda: solo_publication.pc.connectionState == "connected", 10)
    seen = stays.signaling.received
    one.kill()
    killed = time.monotonic()
    removed = await stays.signaling.wait_for("stream-remove", start=seen, timeout=LEASE_TTL + 5)
    left = await stays.signaling.wait_for("peer-leave", start=seen, timeout=1)
    took = time.monotonic() - killed
    assert removed == {"rid": "crash", "uid": "leaving", "mid": publication.mid}
    assert left == {"rid": "crash", "uid": "leaving"}
    print(f"\nsignal-kill: peer-leave after {took:.2f} s (lease TTL {LEASE_TTL:.0f} s)")
    assert took < LEASE_TTL + 1.5

    async def on_sfu(mid: str = publication.mid) -> bool:
        nodes = (await signal_stats(two.http_url))["sfu"]["nodes"]
        return any(mid in n.get("publications", {}) for n in nodes.values())

    assert await on_sfu()  # kept during the grace period: the peer may come back
    assert await on_sfu(solo_publication.mid)
    await wait_for(lambda: not_(on_sfu), PEER_GRACE + 5)
    ended = time.monotonic() - killed
    print(f"signal-kill: stream ended on the SFU node {ended:.2f} s after the kill "
          f"(grace {PEER_GRACE:.0f} s)")  # fmt: skip
    assert ended - took >= PEER_GRACE - 0.5  # not before the grace period ran out
    await wait_for(lambda: not_(lambda: on_sfu(solo_publication.mid)), 5)
    late = await connect(clients, two.ws_url, "late")
    assert {u["uid"] for u in (await late.join("crash"))["users"]} == {"staying"}
    cluster.signals.remove(one)
    cluster.signal_node("signal-1")  # back, as a restarted node would be


async def test_a_peer_resumes_through_the_other_signal_node(
    cluster: Cluster, clients: list[Client]
) -> None:
    """`quick` comes back before its node's loss is noticed: nobody sees anything change.
    `late` comes back after its peers saw it leave, within the grace period: the same
    stream comes back. Both streams outlive the grace period on the SFU node."""
    await wait_for_discovery(cluster)
    doomed = next(node for node in cluster.signals if node.name == "signal-1")
    survivor = next(node for node in cluster.signals if node is not doomed)
    quick = await connect(clients, doomed.ws_url, "resume-quick")
    late = await connect(clients, doomed.ws_url, "resume-late")
    watcher = await connect(clients, survivor.ws_url, "resume-watcher")
    for client in (quick, late, watcher):
        await client.join("resume")
    quick_pub = await quick.publish("resume", [PatternTrack(160, 120)])
    late_pub = await late.publish("resume", [PatternTrack(160, 120)])
    for uid in ("resume-quick", "resume-late"):
        await watcher.signaling.wait_for("stream-add", lambda d, u=uid: d["uid"] == u, timeout=5)
    subscription = await watcher.subscribe("resume", quick_pub.mid, quick_pub.sfuid, ("video",))
    video = await watch_frames(subscription, 10, 15)
    seen = watcher.signaling.received

    doomed.kill()  # SIGKILL
    killed = time.monotonic()
    assert await quick.resume(survivor.ws_url) == {"resume": [quick_pub.mid]}
    quick_after = time.monotonic() - killed
    left = await watcher.signaling.wait_for(
        "peer-leave", lambda d: d["uid"] == "resume-late", start=seen, timeout=LEASE_TTL + 5
    )
    assert left == {"rid": "resume", "uid": "resume-late"}
    assert await late.resume(survivor.ws_url) == {"resume": [late_pub.mid]}
    late_after = time.monotonic() - killed
    back = await watcher.signaling.wait_for(
        "stream-add", lambda d: d["uid"] == "resume-late", start=seen, timeout=2
    )
    assert back["mid"] == late_pub.mid  # the same stream: it never ended on the SFU node
    await watcher.signaling.wait_for("peer-join", lambda d: d["uid"] == "resume-late", start=seen)

    await asyncio.sleep(PEER_GRACE + 1)  # past the grace period of the lost node's peers
    since = received_since(watcher, seen)
    assert [m for m, d in since if d.get("uid") == "resume-quick"] == []  # no churn at all
    frames = video.frames
    await asyncio.sleep(1)
    assert video.frames > frames + 10  # its media never stopped

    async def live(mid: str) -> bool:
        nodes = (await signal_stats(survivor.http_url))["sfu"]["nodes"]
        return any(mid in n.get("publications", {}) for n in nodes.values())

    assert await live(quick_pub.mid) and await live(late_pub.mid)
    print(f"\nresume: quick back {quick_after:.2f} s after the kill (unnoticed), late back "
          f"{late_after:.2f} s after it (grace {PEER_GRACE:.0f} s)")  # fmt: skip
    # The streams are the resumed peers' own on their new node.
    await quick.unpublish(quick.publications[quick_pub.mid])
    removed = await watcher.signaling.wait_for(
        "stream-remove", lambda d: d["mid"] == quick_pub.mid, start=seen, timeout=5
    )
    assert removed["uid"] == "resume-quick"
    await wait_for(lambda: not_(lambda: live(quick_pub.mid)), 5)
    await video.stop()
    cluster.signals.remove(doomed)
    cluster.signal_node("signal-1")


async def test_a_draining_sfu_node_keeps_its_rooms_takes_no_new_ones_then_exits(
    cluster: Cluster, clients: list[Client]
) -> None:
    one, two = cluster.signals
    await wait_for_discovery(cluster)
    teacher = await connect(clients, one.ws_url, "drain-teacher")
    student = await connect(clients, two.ws_url, "drain-student")
    await teacher.join("draining")
    await student.join("draining")
    publication = await teacher.publish("draining", [PatternTrack(160, 120)])
    added = await student.signaling.wait_for("stream-add", timeout=5)
    subscription = await student.subscribe("draining", added["mid"], added["sfuid"], ("video",))
    counter = await watch_frames(subscription, 10, 15)
    node = sfu_named(cluster, publication.sfuid)

    node.signal(signal.SIGTERM)
    states = {}
    for _ in range(50):
        states = (await signal_stats(one.http_url))["signal"]["cluster"]["sfu_states"]
        if states.get(node.name) == "draining":
            break
        await asyncio.sleep(0.1)
    assert states.get(node.name) == "draining", states
    for i in range(4):  # new rooms go elsewhere
        peer = await connect(clients, (one, two)[i % 2].ws_url, f"drain-new-{i}")
        await peer.join(f"after-drain-{i}")
        placed = await peer.publish(f"after-drain-{i}", [PatternTrack(160, 120)])
        assert placed.sfuid != node.name
    before = counter.frames
    await asyncio.sleep(2)
    assert counter.frames > before + 20  # the live room is kept
    assert node.proc is not None and node.proc.poll() is None
    await counter.stop()
    await student.unsubscribe(subscription)
    await teacher.unpublish(publication)
    emptied = time.monotonic()
    await wait_for(lambda: node.proc.poll() is not None, 10)
    print(f"\ndrain: exited {time.monotonic() - emptied:.2f} s after its last room emptied")
    assert node.proc.returncode == 0, node.log()[-2000:]
