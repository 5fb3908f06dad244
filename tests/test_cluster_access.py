"""Access control across signal nodes (docs/security.md, "In a cluster"): tokens required
on every node, a teacher on one node running the stage of students connected to the
other, and the room's member limit counted over the whole cluster."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from aiosfu.client import Client, SignalingError
from aiosfu.cluster.store import grants_key, removed_key
from aiosfu.signal.grants import Grants
from tests.cluster import (
    Cluster,
    clients,
    connect,
    signal_stats,
    start_cluster,
    wait_for_discovery,
)
from tests.conftest import wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track
from tests.test_access import KEY, SECRET, refused, token
from tests.test_stage import stopped_within

pytestmark = pytest.mark.media

__all__ = ["clients"]  # the fixture

LIMIT = 3  # members per room, cluster-wide
GRACE = 15.0  # before a lost signal node's streams end: room for a resume after the TTL


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {
        "AIOSFU_INSTITUTIONS": json.dumps({"school-a": {"keys": {KEY: SECRET}}}),
        "AIOSFU_MAX_ROOM_MEMBERS": str(LIMIT),
        "AIOSFU_SIGNAL_NODE": json.dumps({"peer_grace": GRACE}),
    }
    admin = token("ops", Grants(roomList=True))
    running = start_cluster(tmp_path_factory.mktemp("keyed"), signal_env=env, admin_token=admin)
    asyncio.run(wait_for_discovery(running))
    yield running
    running.stop()


async def member(clients: list[Client], url: str, uid: str, role: str, rid: str) -> Client:
    client = await connect(clients, url, uid, token(uid, role, rid))
    await client.join(rid)
    return client


async def frames_flowing(subscription) -> FrameCounter:  # type: ignore[no-untyped-def]
    counter = FrameCounter(await wait_for_track(subscription, "video", 10)).start()
    await wait_for(lambda: counter.frames >= 10, 15)
    return counter


async def on_sfu(cluster: Cluster, mid: str) -> bool:
    stats = await signal_stats(cluster.signals[0].http_url, cluster.admin_token)
    return any(mid in node.get("publications", {}) for node in stats["sfu"]["nodes"].values())


async def test_every_signal_node_requires_a_token(keyed: Cluster) -> None:
    for node in keyed.signals:
        with pytest.raises(Exception) as info:
            await Client.connect(node.ws_url, "nobody", ice_ips=["127.0.0.1"])
        assert "401" in str(info.value)


async def test_a_teacher_on_one_node_runs_the_stage_of_a_student_on_the_other(
    keyed: Cluster, clients: list[Client]
) -> None:
    one, two = keyed.signals
    rid = "stage-across"
    teacher = await member(clients, one.ws_url, "teacher", "teacher", rid)
    classmate = await member(clients, one.ws_url, "classmate", "student", rid)
    student = await member(clients, two.ws_url, "student", "student", rid)
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "student", timeout=5)

    await student.raise_hand(rid)
    assert await teacher.signaling.wait_for("hand-raised", timeout=5) == {
        "rid": rid,
        "uid": "student",
    }
    result = await teacher.update_grants(rid, "student", canPublish=True)
    assert result["grants"]["canPublish"] is True  # the student's node answered
    told = await student.signaling.wait_for("grants-updated", timeout=5)
    assert told["grants"]["canPublish"] is True and told["by"] == "teacher"
    await classmate.signaling.wait_for("grants-updated", timeout=5)
    # Bringing the student on stage lowered its hand, on its node; node 1 heard it.
    await classmate.signaling.wait_for("hand-lowered", lambda d: d["uid"] == "student")

    publication = await student.publish(rid, [PatternTrack(160, 120)])
    added = await classmate.signaling.wait_for("stream-add", timeout=5)
    watched = await classmate.subscribe(rid, added["mid"], added["sfuid"], ("video",))
    video = await frames_flowing(watched)

    await teacher.mute(rid, publication.mid, "video")
    muted = await student.signaling.wait_for("stream-muted", timeout=5)
    assert muted["by"] == "teacher" and muted["muted"] is True
    await stopped_within(video, 1.0)
    await teacher.mute(rid, publication.mid, "video", muted=False)
    resumed_at = video.frames
    await wait_for(lambda: video.frames > resumed_at + 5, 10)

    seen = classmate.signaling.received
    revoked = time.monotonic()
    await teacher.update_grants(rid, "student", canPublish=False)
    removed = await classmate.signaling.wait_for("stream-remove", start=seen, timeout=1)
    took = time.monotonic() - revoked
    assert removed == {"rid": rid, "uid": "student", "mid": publication.mid}
    await stopped_within(video, 1.0)  # the subscriber on the other node gets nothing more
    print(f"\nrevoke across nodes: stream-remove at the subscriber after {took * 1000:.0f} ms")
    await student.signaling.wait_for("stream-remove", lambda d: d["mid"] == publication.mid)
    assert not await on_sfu(keyed, publication.mid)
    await refused(student.publish(rid, [PatternTrack()]), "forbidden", "publishing")
    await video.stop()

    lecture = await teacher.publish(rid, [PatternTrack(160, 120)])
    added = await student.signaling.wait_for("stream-add", lambda d: d["uid"] == "teacher")
    watching = await student.subscribe(rid, added["mid"], added["sfuid"], ("video",))
    lecture_video = await frames_flowing(watching)
    await teacher.update_grants(rid, "student", canSubscribe=False)
    ended = await student.signaling.wait_for("subscription-ended", timeout=2)
    assert ended == {"rid": rid, "sid": watching.sid, "mid": lecture.mid}
    await stopped_within(lecture_video, 1.0)
    await refused(student.subscribe(rid, lecture.mid), "forbidden", "subscribing")
    await lecture_video.stop()


async def test_remove_on_one_node_takes_out_a_member_of_the_other(
    keyed: Cluster, clients: list[Client]
) -> None:
    one, two = keyed.signals
    rid = "remove-across"
    teacher = await member(clients, one.ws_url, "teacher", "teacher", rid)
    classmate = await member(clients, one.ws_url, "classmate", "student", rid)
    student = await member(clients, two.ws_url, "student", "student", rid)
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "student", timeout=5)
    await refused(classmate.remove(rid, "student"), "forbidden", "roomAdmin")

    await teacher.remove(rid, "student")
    assert await student.signaling.wait_for("peer-removed", timeout=5) == {
        "rid": rid,
        "uid": "student",
        "by": "teacher",
    }
    await classmate.signaling.wait_for("peer-removed", timeout=5)
    await classmate.signaling.wait_for("peer-leave", lambda d: d["uid"] == "student", timeout=5)
    await refused(student.broadcast(rid, "still here?"), "not-in-room", "student")
    await refused(student.join(rid), "forbidden", "removed")
    # Not through the other node either.
    again = await connect(clients, one.ws_url, "student", token("student", "student", rid))
    await refused(again.join(rid), "forbidden", "removed")
    stats = await signal_stats(one.http_url, keyed.admin_token)
    assert stats["signal"]["rooms"][rid]["members"] == ["classmate", "teacher"]

    # Node 2 forgets the room once nobody there is in it (a departure elsewhere tidies
    # up); the removal still holds there, from Redis.
    visitor = await member(clients, two.ws_url, "visitor", "student", "elsewhere")
    await visitor.leave("elsewhere")
    await refused(student.join(rid), "forbidden", "removed")


async def test_the_member_limit_counts_across_both_nodes(
    keyed: Cluster, clients: list[Client]
) -> None:
    one, two = keyed.signals

    async def race(rid: str) -> tuple[list[Client], list[Client]]:
        """Twice the limit join at once, half through each node."""
        uids = [f"{rid}-m{i}" for i in range(2 * LIMIT)]
        peers = [
            await connect(clients, (one, two)[i % 2].ws_url, uid, token(uid, "student", rid))
            for i, uid in enumerate(uids)
        ]
        results = await asyncio.gather(*(p.join(rid) for p in peers), return_exceptions=True)
        for result in results:
            assert not isinstance(result, BaseException) or (
                isinstance(result, SignalingError) and result.code == "room-full"
            ), result
        inside = [
            p for p, r in zip(peers, results, strict=True) if not isinstance(r, BaseException)
        ]
        return inside, [p for p in peers if p not in inside]

    rooms = [f"full-{n}" for n in range(8)]
    raced = await asyncio.gather(*(race(rid) for rid in rooms))
    assert [len(inside) for inside, _ in raced] == [LIMIT] * len(rooms)

    rid, (inside, outside) = rooms[0], raced[0]
    await inside[0].leave(rid)
    entered = False
    for _ in range(50):  # a seat is free once the leave is written
        try:
            await outside[0].join(rid)
            entered = True
            break
        except SignalingError as exc:
            assert exc.code == "room-full"
            await asyncio.sleep(0.1)
    assert entered
    await refused(outside[1].join(rid), "room-full", "members")


async def test_the_stage_state_is_written_back_when_redis_comes_back_empty(
    keyed: Cluster, clients: list[Client]
) -> None:
    one, two = keyed.signals
    rid = "stage-redis"
    await member(clients, one.ws_url, "teacher", "teacher", rid)
    teacher = clients[-1]
    await member(clients, two.ws_url, "student", "student", rid)
    await member(clients, two.ws_url, "leaver", "student", rid)
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "leaver", timeout=5)
    await teacher.update_grants(rid, "student", canPublish=True)
    await teacher.remove(rid, "leaver")

    async def kept() -> bool:
        state = aioredis.from_url(keyed.engines.redis_url, decode_responses=True)
        try:
            grants = await state.hget(grants_key(rid), "student")
            removed = await state.smembers(removed_key(rid))
        finally:
            await state.aclose()
        return grants is not None and json.loads(grants)["canPublish"] and removed == {"leaver"}

    assert await kept()
    keyed.engines.redis.stop()
    keyed.engines.redis.start()  # empty: no dump, no append-only file
    assert not await kept()
    await wait_for(kept, 15)  # within a refresh (state_ttl / 3)


async def test_a_student_resumed_on_another_node_keeps_the_grants_the_teacher_gave(
    keyed: Cluster, clients: list[Client]
) -> None:
    """Last in this module: it kills a signal node. The student resumes after its peers saw
    it leave: its live stream comes back, the one that ended meanwhile does not."""
    one, two = keyed.signals
    rid = "resume-grants"
    teacher = await member(clients, one.ws_url, "teacher", "teacher", rid)
    student = await member(clients, two.ws_url, "student", "student", rid)
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "student", timeout=5)
    await teacher.update_grants(rid, "student", canPublish=True)
    publication = await student.publish(rid, [PatternTrack(160, 120)])
    added = await teacher.signaling.wait_for("stream-add", timeout=5)
    video = await frames_flowing(await teacher.subscribe(rid, added["mid"], added["sfuid"]))
    doomed = await student.publish(rid, [PatternTrack(160, 120)])
    await teacher.signaling.wait_for("stream-add", lambda d: d["mid"] == doomed.mid, timeout=5)

    seen = teacher.signaling.received
    two.kill()  # SIGKILL
    killed = time.monotonic()
    await teacher.signaling.wait_for("peer-leave", start=seen, timeout=10)
    await student.publications.pop(doomed.mid).pc.close()  # ends on the SFU node meanwhile
    await wait_for(lambda: not_on_sfu(keyed, doomed.mid), 5)
    resumed = await student.resume(one.ws_url, token=token("student", "student", rid))
    assert time.monotonic() - killed < GRACE  # within the grace period
    assert resumed == {rid: [publication.mid]}
    back = await teacher.signaling.wait_for("stream-add", start=seen, timeout=2)
    assert back["mid"] == publication.mid
    # The token says canPublish false; the teacher's decision holds.
    second = await student.publish(rid, [PatternTrack(160, 120)])
    frames = video.frames
    await wait_for(lambda: video.frames > frames + 10, 5)  # the resumed stream goes on

    seen = teacher.signaling.received
    await teacher.update_grants(rid, "student", canPublish=False)  # now on node 1
    for mid in (publication.mid, second.mid):
        await teacher.signaling.wait_for("stream-remove", lambda d, m=mid: d["mid"] == m,
                                         start=seen, timeout=2)  # fmt: skip
    await stopped_within(video, 1.0)
    await video.stop()
    keyed.signals.remove(two)


async def not_on_sfu(cluster: Cluster, mid: str) -> bool:
    return not await on_sfu(cluster, mid)
