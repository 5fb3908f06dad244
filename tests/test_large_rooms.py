"""Audience mode (docs/large-rooms.md) through a real server, with a small threshold.

With `announce_members_up_to = 3`, the first three members of a room are announced to
everyone exactly as seed 002 does; later joiners are audience: announced only to the
members who publish, never to each other, and everyone hears the head count instead
(`room-count`: publishers at most once a second, everyone else at most every
`room_count_audience_interval`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiosfu.client import Client
from aiosfu.signal.auth import mint_token
from aiosfu.signal.grants import Grants, for_role
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track

RID = "lecture"
AUDIENCE_INTERVAL = 2.0  # room-count to members who neither publish nor run the room


@pytest.fixture
def lecture_server(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "aiosfu.toml"
    config.write_text(
        f"announce_members_up_to = 3\nroom_count_audience_interval = {AUDIENCE_INTERVAL}\n"
    )
    server = start_server(tmp_path, "--config", str(config))
    yield server
    stop_server(server)


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    yield opened
    await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)


async def connect(server: ServerProcess, opened: list[Client], uid: str) -> Client:
    client = await Client.connect(server.ws_url, uid, ice_ips=["127.0.0.1"])
    opened.append(client)
    return client


def heard(client: Client, method: str) -> list[dict[str, Any]]:
    return [data for name, data in client.signaling.notifications if name == method]


def uids(client: Client, method: str) -> list[str]:
    return [data["uid"] for data in heard(client, method)]


async def settle(*clients: Client) -> None:
    """A keepalive round trip each: everything sent to them before it has arrived."""
    for client in clients:
        await client.request("keepalive", {"rid": RID})


async def test_below_the_threshold_every_member_is_announced_as_seed_002(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    a = await connect(lecture_server, clients, "a")
    b = await connect(lecture_server, clients, "b")
    c = await connect(lecture_server, clients, "c")
    assert (await a.join(RID))["users"] == []
    assert (await b.join(RID))["users"] == [{"signalid": "signal-1", "rid": RID, "uid": "a"}]
    joined = await c.join(RID)
    assert sorted(u["uid"] for u in joined["users"]) == ["a", "b"]
    await b.leave(RID)
    await settle(a, c)
    assert uids(a, "peer-join") == ["b", "c"]
    assert uids(a, "peer-leave") == ["b"]
    assert uids(c, "peer-leave") == ["b"]
    assert heard(a, "room-count") == [] and heard(c, "room-count") == []
    assert [name for name, _ in a.signaling.notifications] == [
        "peer-join",
        "peer-join",
        "peer-leave",
    ]


async def test_audience_is_announced_only_to_publishers(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    teacher = await connect(lecture_server, clients, "teacher")
    await teacher.join(RID)
    publication = await teacher.publish(RID, [ToneTrack(), PatternTrack(160, 120)])
    # A stream is in join's pubs once its transport is up (docs/protocol.md, publish).
    await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    early = [await connect(lecture_server, clients, f"early{i}") for i in range(2)]
    for client in early:
        await client.join(RID)
    students = [await connect(lecture_server, clients, f"s{i}") for i in range(4)]
    listed = [await s.join(RID) for s in students]

    # An audience joiner is told of the publishers and of every stream.
    for response in listed:
        assert [u["uid"] for u in response["users"]] == ["teacher"]
        assert [p["mid"] for p in response["pubs"]] == [publication.mid]
    await settle(teacher, *early, *students)
    assert uids(teacher, "peer-join") == ["early0", "early1", "s0", "s1", "s2", "s3"]
    for client in [*early, *students]:
        assert not set(uids(client, "peer-join")) & {"s0", "s1", "s2", "s3"}, client.uid

    await students[0].leave(RID)
    await early[0].leave(RID)
    await settle(teacher, early[1], *students[1:])
    assert uids(teacher, "peer-leave") == ["s0", "early0"]
    assert uids(early[1], "peer-leave") == ["early0"], "early members know each other"
    for client in students[1:]:
        assert uids(client, "peer-leave") == [], client.uid

    # The head count reaches everyone, the latest value last.
    async def counted() -> bool:
        return all(
            heard(c, "room-count") and heard(c, "room-count")[-1]["members"] == 5
            for c in [teacher, early[1], *students[1:]]
        )

    await wait_for(counted, timeout=5)


async def test_an_audience_member_who_publishes_is_announced_then(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    members = [await connect(lecture_server, clients, uid) for uid in ("t", "e1", "e2")]
    for client in members:
        await client.join(RID)
    s1 = await connect(lecture_server, clients, "s1")
    s2 = await connect(lecture_server, clients, "s2")
    await s1.join(RID)
    await s2.join(RID)
    await settle(*members, s1, s2)
    assert "s2" not in uids(s1, "peer-join")

    start = s1.signaling.received
    await s2.publish(RID, [ToneTrack()])
    joined = await s1.signaling.wait_for("peer-join", lambda d: d["uid"] == "s2", start=start)
    assert joined == {"rid": RID, "uid": "s2", "bizid": ""}
    added = await s1.signaling.wait_for("stream-add", start=start)
    assert added["uid"] == "s2"
    events = [(n, d.get("uid")) for n, d in s1.signaling.notifications]
    assert events.index(("peer-join", "s2")) < events.index(("stream-add", "s2"))
    # Now a publisher, s2 sees everyone: the audience it had not been told of is announced.
    await settle(s2)
    assert "s1" in uids(s2, "peer-join")
    for client in members:
        assert uids(client, "peer-join").count("s2") == 1, client.uid


async def test_room_count_is_sent_at_most_once_a_second(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    watchers = [await connect(lecture_server, clients, uid) for uid in ("a", "b", "c")]
    for client in watchers:
        await client.join(RID)
    loop = asyncio.get_running_loop()
    started = loop.time()
    students = [await connect(lecture_server, clients, f"s{i}") for i in range(20)]
    for student in students:
        await student.join(RID)
    joined_in = loop.time() - started

    async def final_count() -> bool:
        counts = heard(watchers[0], "room-count")
        return bool(counts) and counts[-1]["members"] == 23

    await wait_for(final_count, timeout=5)
    elapsed = loop.time() - started
    counts = heard(watchers[0], "room-count")
    assert len(counts) <= int(elapsed) + 2, (len(counts), elapsed, joined_in)
    assert [c["members"] for c in counts] == sorted(c["members"] for c in counts)


async def test_the_audience_hears_the_head_count_less_often_than_publishers(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    """Each room-count is a frame to every member: the audience (and early members) get
    it at most every `room_count_audience_interval`, publishers at most once a second."""
    teacher = await connect(lecture_server, clients, "teacher")
    await teacher.join(RID)
    publication = await teacher.publish(RID, [ToneTrack()])
    await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    early = [await connect(lecture_server, clients, f"e{i}") for i in range(2)]
    for client in early:
        await client.join(RID)
    loop = asyncio.get_running_loop()
    started = loop.time()
    students = [await connect(lecture_server, clients, f"s{i}") for i in range(16)]
    for student in students:  # arrivals over ~5 s: several intervals of either kind
        await student.join(RID)
        await asyncio.sleep(0.3)
    listeners = [teacher, early[0], students[0]]

    async def final_count() -> bool:
        return all(
            heard(c, "room-count") and heard(c, "room-count")[-1]["members"] == 19
            for c in listeners
        )

    await wait_for(final_count, timeout=AUDIENCE_INTERVAL + 3)
    elapsed = loop.time() - started
    assert len(heard(teacher, "room-count")) <= int(elapsed) + 2
    for client in (early[0], students[0]):
        counts = heard(client, "room-count")
        assert len(counts) <= int(elapsed / AUDIENCE_INTERVAL) + 2, (client.uid, counts, elapsed)
    # The publisher, at its one-second cadence, heard more of the arrivals.
    assert len(heard(teacher, "room-count")) > len(heard(students[0], "room-count"))


async def test_a_larger_audience_hears_the_head_count_less_often(
    tmp_path: Path, clients: list[Client]
) -> None:
    """`room_count_audience_rate` bounds the head-count frames a room sends its audience a
    second: at 2 a second, a room of N members tells its audience every N / 2 seconds
    (here up to 7.5 s), however short `room_count_audience_interval` is (1 s here)."""
    config = tmp_path / "aiosfu.toml"
    config.write_text(
        "announce_members_up_to = 3\nroom_count_audience_interval = 1.0\n"
        "room_count_audience_rate = 2.0\n"
    )
    server = start_server(tmp_path, "--config", str(config))
    try:
        teacher = await connect(server, clients, "teacher")
        await teacher.join(RID)
        publication = await teacher.publish(RID, [ToneTrack()])
        await wait_for(lambda: publication.pc.connectionState == "connected", 10)
        early = [await connect(server, clients, f"e{i}") for i in range(2)]
        for client in early:
            await client.join(RID)
        students = [await connect(server, clients, f"s{i}") for i in range(12)]
        for student in students:  # arrivals over ~4 s: at 1 s, five head counts or more
            await student.join(RID)
            await asyncio.sleep(0.3)

        async def final_count() -> bool:
            counts = heard(students[0], "room-count")
            return bool(counts) and counts[-1]["members"] == 15

        await wait_for(final_count, timeout=15)
        counts = heard(students[0], "room-count")
        assert len(counts) <= 3, counts
        assert len(heard(teacher, "room-count")) >= 4  # the publisher keeps its 1 s
    finally:
        stop_server(server)


@pytest.mark.media
async def test_a_burst_of_new_subscribers_shares_keyframe_requests(
    lecture_server: ServerProcess, clients: list[Client]
) -> None:
    """Each new video subscriber needs a keyframe, but a class arriving at once must not
    make the teacher's encoder send one per student: at most one request per interval."""
    teacher = await connect(lecture_server, clients, "teacher")
    await teacher.join(RID)
    publication = await teacher.publish(RID, [PatternTrack(160, 120)])
    students = [await connect(lecture_server, clients, f"s{i}") for i in range(12)]
    for student in students:
        await student.join(RID)
    await asyncio.sleep(1.0)  # past the interval of any request made for no subscriber

    def requests_sent(stats: dict[str, Any]) -> int:
        producers = stats["sfu"]["publications"][publication.mid]["producers"]
        return sum(p["keyframeRequestsSent"] for p in producers if p["kind"] == "video")

    before = requests_sent(await lecture_server.stats())
    loop = asyncio.get_running_loop()
    started = loop.time()
    subscriptions = await asyncio.gather(
        *(s.subscribe(RID, publication.mid, kinds=("video",)) for s in students)
    )
    counters = [FrameCounter(await wait_for_track(sub, "video")).start() for sub in subscriptions]
    await wait_for(lambda: all(c.frames >= 3 for c in counters), timeout=20)
    elapsed = loop.time() - started
    sent = requests_sent(await lecture_server.stats()) - before
    for counter in counters:
        await counter.stop()
    # keyframe_request_interval is 0.5 s: one now, at most one more per interval after.
    assert 1 <= sent <= elapsed / 0.5 + 1, (sent, elapsed)
    assert sent < len(students), "one request per subscriber: nothing was coalesced"


async def test_with_tokens_grants_decide_who_is_audience(
    tmp_path: Path, clients: list[Client]
) -> None:
    """A teacher (room admin) sees everyone from the start; a student without a publish
    grant is audience past the threshold; one who may publish is announced as seed 002."""
    key, secret = "APIschool", "school-secret-0123456789abcdef01234"
    config = tmp_path / "aiosfu.toml"
    config.write_text(
        f'announce_members_up_to = 1\n[institutions.school]\nkeys = {{ {key} = "{secret}" }}\n'
    )
    server = start_server(tmp_path, "--config", str(config))
    try:

        async def join(uid: str, grants: Grants) -> tuple[Client, dict[str, Any]]:
            token = mint_token(secret, key, uid, grants)
            client = await Client.connect(server.ws_url, uid, token=token, ice_ips=["127.0.0.1"])
            clients.append(client)
            return client, await client.join(RID)

        student = for_role("student", RID)
        speaker = student.model_copy(update={"canPublish": True})
        first, _ = await join("first", student)
        teacher, _ = await join("teacher", for_role("teacher", RID))
        quiet, listed = await join("quiet", student)
        talker, _ = await join("talker", speaker)
        assert [u["uid"] for u in listed["users"]] == ["teacher"]
        await settle(first, teacher, quiet, talker)
        assert uids(teacher, "peer-join") == ["quiet", "talker"], "an admin hears of everyone"
        assert uids(first, "peer-join") == ["teacher", "talker"], "not of the audience"
        assert "quiet" not in uids(talker, "peer-join")
    finally:
        stop_server(server)
