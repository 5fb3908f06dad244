"""A server with API keys: who may connect as whom, and every grant enforced end to end.

Each refusal is checked for its code and reason and for what it must not have done (no
state change, nobody else disturbed); each grant is also checked the other way round
(the request works once the grant is there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aiosfu.client import Client, Publication, SignalingError
from aiosfu.signal.auth import mint_token
from aiosfu.signal.grants import Grants, for_role
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track
from tests.test_announcing import MINFO, offer_without_candidates

pytestmark = pytest.mark.media

KEY, SECRET = "APIschoolA", "school-a-secret-0123456789abcdef0123"
KEY_B, SECRET_B = "APIschoolB", "school-b-secret-0123456789abcdef0123"
ROOM = "math-101"
CONFIG = f"""
[institutions.school-a]
keys = {{ {KEY} = "{SECRET}" }}
[institutions.school-b]
keys = {{ {KEY_B} = "{SECRET_B}" }}
"""


def token(uid: str, grants: Grants | str = "student", room: str = ROOM, **kw: Any) -> str:
    if isinstance(grants, str):
        grants = for_role(grants, room)  # type: ignore[arg-type]
    return mint_token(kw.pop("secret", SECRET), kw.pop("key", KEY), uid, grants, **kw)


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[ServerProcess]:
    path = tmp_path / "aiosfu.toml"
    path.write_text(CONFIG)
    server = start_server(tmp_path, "--config", str(path))
    yield server
    stop_server(server)


async def connect(server: ServerProcess, uid: str, role: Grants | str = "student") -> Client:
    return await Client.connect(server.ws_url, uid, token=token(uid, role))


async def announced(publication: Publication) -> None:
    """A stream is listed to joiners once its transport connects (docs/protocol.md)."""
    await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    await asyncio.sleep(0.2)  # the server sees it connect at about the same time


async def refused(call: Any, code: str, word: str) -> None:
    with pytest.raises(SignalingError) as info:
        await call
    assert info.value.code == code, info.value
    assert word.lower() in info.value.reason.lower(), info.value


async def upgrade_status(server: ServerProcess, query: str, **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.ws_url}{query}", headers=headers) as response,
    ):
        return response.status


async def stats(server: ServerProcess) -> dict[str, Any]:
    admin = token("ops", Grants(roomList=True))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.http_url}/stats", headers={"Authorization": f"Bearer {admin}"}) as r,
    ):
        r.raise_for_status()
        return await r.json()


async def test_no_identity_takeover(keyed: ServerProcess) -> None:
    alice = await connect(keyed, "alice", "teacher")
    await alice.join(ROOM)
    # No token, a token for someone else, an expired token, another institution's key
    # under this key's name: refused at the upgrade, and alice never notices.
    assert await upgrade_status(keyed, "?peer=alice") == 401
    assert await upgrade_status(keyed, f"?peer=alice&token={token('bob')}") == 401
    assert await upgrade_status(keyed, f"?peer=alice&token={token('alice', ttl=-60)}") == 401
    forged = token("alice", "teacher", secret=SECRET_B)
    assert await upgrade_status(keyed, f"?peer=alice&token={forged}") == 401
    assert await upgrade_status(keyed, "?peer=alice", Authorization=f"Bearer {token('bob')}") == 401
    assert await alice.request("keepalive", {"rid": ROOM}) == {}
    assert not alice.signaling.closed
    # A valid token for alice is alice: it replaces the old connection.
    again = await Client.connect(keyed.ws_url, "alice", token=token("alice", "teacher"))
    await wait_for(lambda: alice.signaling.closed, 5)
    await again.join(ROOM)
    # The uid may also come from the token alone, and via the Authorization header.
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(keyed.ws_url, headers={"Authorization": f"Bearer {token('carol')}"}) as ws,
    ):
        await ws.send_json({"request": True, "id": 1, "method": "join", "data": {"rid": ROOM}})
        reply = await ws.receive_json(timeout=5)
        assert reply["ok"] is True
        assert reply["data"]["grants"]["canPublish"] is False  # a student
    await again.close()
    await alice.close()


async def test_join_needs_the_room_grant_of_this_institution(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    wanderer = await connect(keyed, "wanderer")
    await refused(wanderer.join("other-room"), "forbidden", "grants room 'math-101'")
    no_join = await Client.connect(keyed.ws_url, "nojoin", token=token("nojoin", Grants(room=ROOM)))
    await refused(no_join.join(ROOM), "forbidden", "roomJoin")
    stranger = await Client.connect(
        keyed.ws_url, "stranger", token=token("stranger", key=KEY_B, secret=SECRET_B)
    )
    await refused(stranger.join(ROOM), "forbidden", "another institution")
    await refused(
        wanderer.request("join", {"rid": ROOM, "bizid": "school-b"}), "forbidden", "institution"
    )
    room = (await stats(keyed))["signal"]["rooms"][ROOM]
    assert room["members"] == ["teacher"]
    joined = await wanderer.join(ROOM)
    assert [u["uid"] for u in joined["users"]] == ["teacher"]
    peer_join = await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "wanderer")
    assert peer_join["bizid"] == "school-a"  # from the key, whatever the client says
    for client in (teacher, wanderer, no_join, stranger):
        await client.close()


async def test_publish_and_sources(keyed: ServerProcess) -> None:
    student = await connect(keyed, "student")
    await student.join(ROOM)
    await refused(student.publish(ROOM, [PatternTrack()]), "forbidden", "publishing")
    await refused(student.publish(ROOM, [ToneTrack()]), "forbidden", "publishing")
    camera_only = await connect(
        keyed, "cam", Grants(room=ROOM, roomJoin=True, canPublishSources=("camera",))
    )
    await camera_only.join(ROOM)
    await refused(camera_only.publish(ROOM, [ToneTrack()]), "forbidden", "microphone")
    screen = {"audio": False, "video": True, "audiotype": 0, "videotype": 1}
    await refused(camera_only.publish(ROOM, [PatternTrack()], screen), "forbidden", "screen_share")
    assert (await stats(keyed))["signal"]["rooms"][ROOM]["publications"] == []
    publication = await camera_only.publish(ROOM, [PatternTrack()])
    event = await student.signaling.wait_for("stream-add")
    assert event["mid"] == publication.mid
    await student.close()
    await camera_only.close()


async def test_subscribe_needs_can_subscribe(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    publication = await teacher.publish(ROOM, [PatternTrack()])
    deaf = await connect(keyed, "deaf", Grants(room=ROOM, roomJoin=True, canSubscribe=False))
    await deaf.join(ROOM)
    await refused(deaf.subscribe(ROOM, publication.mid), "forbidden", "subscribing")
    student = await connect(keyed, "student")
    await student.join(ROOM)
    subscription = await student.subscribe(ROOM, publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    await video.stop()
    for client in (teacher, deaf, student):
        await client.close()


async def test_data_needs_can_publish_data(keyed: ServerProcess) -> None:
    observer = await connect(keyed, "observer", "observer")
    await observer.join(ROOM)
    student = await connect(keyed, "student")
    await student.join(ROOM)
    await refused(observer.broadcast(ROOM, "psst"), "forbidden", "data")
    await refused(observer.publish(ROOM, [], data_channels=["chat"]), "forbidden", "data")
    await student.broadcast(ROOM, "hello")  # a student may chat
    heard = await observer.signaling.wait_for("broadcast")
    assert heard["data"] == "hello"
    assert not any(m == "broadcast" for m, _ in student.signaling.notifications)
    await student.publish(ROOM, [], data_channels=["chat"])
    await observer.close()
    await student.close()


async def test_record_needs_room_record(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    publication = await teacher.publish(ROOM, [PatternTrack()])
    student = await connect(keyed, "student")
    await student.join(ROOM)
    await refused(student.record(ROOM, publication.mid), "forbidden", "recording")
    started = await teacher.record(ROOM, publication.mid)
    await refused(student.stop_record(ROOM, publication.mid), "forbidden", "recording")
    assert (await stats(keyed))["sfu"]["recordings"]
    stopped = await teacher.stop_record(ROOM, publication.mid)
    assert stopped["file"] == started["file"]
    await teacher.close()
    await student.close()


async def test_only_the_owner_or_a_room_admin_ends_a_stream(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    lecture = await teacher.publish(ROOM, [PatternTrack()])
    speaker = await connect(keyed, "speaker", Grants(room=ROOM, roomJoin=True))
    await speaker.join(ROOM)
    talk = await speaker.publish(ROOM, [PatternTrack()])
    subscription = await speaker.subscribe(ROOM, lecture.mid)
    unpublish = {"rid": ROOM, "mid": lecture.mid}
    await refused(speaker.request("unpublish", unpublish), "not-owner", "another peer")
    mine = {"rid": ROOM, "mid": lecture.mid, "sid": subscription.sid}
    watching = await teacher.subscribe(ROOM, talk.mid)
    theirs = {"rid": ROOM, "mid": talk.mid, "sid": watching.sid}
    await refused(speaker.request("unsubscribe", theirs), "unknown-sid", "of yours")
    # The teacher may end the speaker's subscription and publication; the speaker hears.
    assert await teacher.request("unsubscribe", mine) == {}
    start = speaker.signaling.received
    assert await teacher.request("unpublish", {"rid": ROOM, "mid": talk.mid}) == {}
    removed = await speaker.signaling.wait_for("stream-remove", start=start)
    assert removed["mid"] == talk.mid
    room = (await stats(keyed))["signal"]["rooms"][ROOM]
    assert room["publications"] == [lecture.mid] and room["subscriptions"] == 0
    await teacher.close()
    await speaker.close()


async def test_the_publisher_hears_a_teacher_end_a_stream_still_connecting(
    keyed: ServerProcess,
) -> None:
    """A stream not yet announced (its transport still connecting) that the teacher
    ends: its publisher is told, as for a connected one."""
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    speaker = await connect(keyed, "speaker", Grants(room=ROOM, roomJoin=True))
    await speaker.join(ROOM)
    offer = {"type": "offer", "sdp": await offer_without_candidates("sendonly")}
    published = await speaker.request("publish", {"rid": ROOM, "jsep": offer, "minfo": MINFO})
    start = speaker.signaling.received
    assert await teacher.request("unpublish", {"rid": ROOM, "mid": published["mid"]}) == {}
    removed = await speaker.signaling.wait_for("stream-remove", start=start, timeout=5)
    assert removed == {"rid": ROOM, "uid": "speaker", "mid": published["mid"]}
    await teacher.close()
    await speaker.close()


async def test_hidden_members_are_not_announced(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    publication = await teacher.publish(ROOM, [PatternTrack()])
    await announced(publication)
    start = teacher.signaling.received
    inspector = await connect(keyed, "inspector", "observer")
    joined = await inspector.join(ROOM)
    if not joined["pubs"]:  # a stream is listed once its transport has connected
        await inspector.signaling.wait_for("stream-add", lambda d: d["mid"] == publication.mid)
    else:
        assert [p["mid"] for p in joined["pubs"]] == [publication.mid]
    subscription = await inspector.subscribe(ROOM, publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    student = await connect(keyed, "student")
    users = (await student.join(ROOM))["users"]
    assert [u["uid"] for u in users] == ["teacher"]
    await wait_for(lambda: video.frames >= 5, 10)
    await video.stop()
    await inspector.leave(ROOM)
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "student", start=start)
    seen = [(m, d.get("uid")) for m, d in list(teacher.signaling.notifications)[-5:]]
    assert ("peer-join", "inspector") not in seen and ("peer-leave", "inspector") not in seen
    for client in (teacher, inspector, student):
        await client.close()


async def test_relay_only_between_members_of_a_shared_room(keyed: ServerProcess) -> None:
    alice = await connect(keyed, "alice", Grants(room=ROOM, roomJoin=True))
    bob = await connect(keyed, "bob", Grants(room=ROOM, roomJoin=True))
    offer = {"to": "bob", "jsep": {"type": "offer", "sdp": "v=0\r\n"}}
    await refused(alice.request("offer", offer), "forbidden", "no room with you")
    await alice.join(ROOM)
    await refused(alice.request("offer", offer), "forbidden", "no room with you")
    await bob.join(ROOM)
    assert await alice.request("offer", offer) == {}
    assert await alice.request("offer", {**offer, "rid": ROOM}) == {}
    delivered = await bob.signaling.wait_for("offer")
    assert delivered["from"] == "alice"
    await alice.close()
    await bob.close()


async def test_stats_needs_an_operator_token(keyed: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{keyed.http_url}/stats") as response:
            assert response.status == 401
        student = {"Authorization": f"Bearer {token('s')}"}
        async with http.get(f"{keyed.http_url}/stats", headers=student) as response:
            assert response.status == 403
    assert "rooms" in (await stats(keyed))["signal"]
