"""The classroom stage with real aiortc peers: on stage and off, mute, remove, hands."""

from __future__ import annotations

import asyncio

import pytest

from aiosfu.client import Client
from tests.conftest import ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track
from tests.test_access import ROOM, connect, keyed, refused

pytestmark = pytest.mark.media

__all__ = ["keyed"]  # the fixture


async def watch(client: Client, mid: str) -> FrameCounter:
    subscription = await client.subscribe(ROOM, mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    return video


async def stopped_within(counter: FrameCounter, seconds: float) -> None:
    """Frames stop arriving within `seconds` of now (and stay stopped)."""
    await asyncio.sleep(seconds)
    frames = counter.frames
    await asyncio.sleep(1.0)
    assert counter.frames <= frames + 1, (frames, counter.frames)


async def test_teacher_brings_a_student_on_stage_and_takes_them_off(
    keyed: ServerProcess,
) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    student = await connect(keyed, "student")
    await student.join(ROOM)
    classmate = await connect(keyed, "classmate")
    await classmate.join(ROOM)
    await refused(student.publish(ROOM, [PatternTrack()]), "forbidden", "publishing")
    await refused(
        classmate.request("update-grants", {"rid": ROOM, "uid": "student", "grants": {}}),
        "forbidden",
        "roomAdmin",
    )

    await student.raise_hand(ROOM)
    raised = await teacher.signaling.wait_for("hand-raised")
    assert raised == {"rid": ROOM, "uid": "student"}
    on_stage = {"rid": ROOM, "uid": "student", "grants": {"canPublish": True}}
    result = await teacher.request("update-grants", on_stage)
    assert result["grants"]["canPublish"] is True
    told = await student.signaling.wait_for("grants-updated")
    assert told["grants"]["canPublish"] is True and told["by"] == "teacher"
    await classmate.signaling.wait_for("hand-lowered", lambda d: d["uid"] == "student")

    publication = await student.publish(ROOM, [PatternTrack()])
    video = await watch(classmate, publication.mid)

    start = classmate.signaling.received
    await teacher.update_grants(ROOM, "student", canPublish=False)
    await stopped_within(video, 1.0)
    removed = await classmate.signaling.wait_for("stream-remove", start=start)
    assert removed["mid"] == publication.mid
    await student.signaling.wait_for("stream-remove", lambda d: d["mid"] == publication.mid)
    await refused(student.publish(ROOM, [PatternTrack()]), "forbidden", "publishing")
    await video.stop()
    for client in (teacher, student, classmate):
        await client.close()


async def test_mute_stops_forwarding_and_tells_the_room(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    speaker = await connect(keyed, "speaker", "teacher")
    await speaker.join(ROOM)
    publication = await speaker.publish(ROOM, [PatternTrack()])
    student = await connect(keyed, "student")
    await student.join(ROOM)
    video = await watch(student, publication.mid)
    mute = {"rid": ROOM, "mid": publication.mid, "kind": "video"}
    await refused(student.request("mute", mute), "forbidden", "roomAdmin")
    await teacher.mute(ROOM, publication.mid, "video")
    told = await speaker.signaling.wait_for("stream-muted")
    assert told == {**mute, "uid": "speaker", "muted": True, "by": "teacher"}
    await stopped_within(video, 0.5)
    late = await connect(keyed, "late")
    joined = await late.join(ROOM)
    assert joined["muted"] == [{"mid": publication.mid, "kinds": ["video"]}]
    await speaker.request("mute", {**mute, "muted": False})  # a publisher may unmute itself
    frames = video.frames
    await wait_for(lambda: video.frames >= frames + 10, 10)
    await refused(teacher.request("mute", {**mute, "kind": "audio"}), "unknown-kind", "audio")
    await video.stop()
    for client in (teacher, speaker, student, late):
        await client.close()


async def test_remove_ends_membership_for_the_rest_of_the_room(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    troll = await connect(keyed, "troll")
    await troll.join(ROOM)
    student = await connect(keyed, "student")
    await student.join(ROOM)
    await refused(
        student.request("remove", {"rid": ROOM, "uid": "troll"}), "forbidden", "roomAdmin"
    )
    await teacher.remove(ROOM, "troll")
    told = await troll.signaling.wait_for("peer-removed")
    assert told == {"rid": ROOM, "uid": "troll", "by": "teacher"}
    await student.signaling.wait_for("peer-leave", lambda d: d["uid"] == "troll")
    await refused(troll.join(ROOM), "forbidden", "removed")
    await refused(troll.broadcast(ROOM, "x"), "not-in-room", ROOM)
    for client in (teacher, troll, student):
        await client.close()


async def test_hands_are_shown_to_late_joiners_and_lowered_by_a_teacher(
    keyed: ServerProcess,
) -> None:
    student = await connect(keyed, "student")
    await student.join(ROOM)
    await student.request("raise-hand", {"rid": ROOM})
    teacher = await connect(keyed, "teacher", "teacher")
    joined = await teacher.join(ROOM)
    assert joined["hands"] == ["student"]
    other = await connect(keyed, "other")
    await other.join(ROOM)
    await refused(
        other.request("lower-hand", {"rid": ROOM, "uid": "student"}), "forbidden", "roomAdmin"
    )
    await teacher.lower_hand(ROOM, "student")
    await student.signaling.wait_for("hand-lowered")
    late = await connect(keyed, "late")
    assert "hands" not in await late.join(ROOM)
    for client in (teacher, student, other, late):
        await client.close()
