"""Bad input from one peer gets a clear error and disturbs nobody else."""

from __future__ import annotations

import json
import re
import socket

import aiohttp
import pytest

from aiosfu.client import Client
from tests.conftest import ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

GARBAGE_SDP = "v=0\r\nthis is not sdp\r\n"
NO_MEDIA_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE\r\n"


def request(method: str, data: object, request_id: int = 7) -> dict:
    return {"request": True, "id": request_id, "method": method, "data": data}


@pytest.fixture
async def streaming(server: ServerProcess):  # type: ignore[no-untyped-def]
    """A teacher publishing and a student decoding: the bystanders who must not notice."""
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [PatternTrack(320, 240)])
    student = await Client.connect(server.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    yield teacher, publication, student, subscription, video
    await video.stop()
    await student.close()
    await teacher.close()


class RawPeer:
    """A WebSocket peer that sends frames verbatim and reads the raw responses."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws

    @classmethod
    async def connect(cls, server: ServerProcess, uid: str) -> RawPeer:
        http = aiohttp.ClientSession()
        ws = await http.ws_connect(f"{server.ws_url}?peer={uid}", max_msg_size=0)
        return cls(http, ws)

    async def send(self, frame: object) -> dict:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))
        while True:
            message = await self.ws.receive(timeout=10)
            assert message.type == aiohttp.WSMsgType.TEXT, message
            reply = json.loads(message.data)
            if reply.get("response"):
                return reply

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


def offer(sdp: str) -> dict:
    return {"type": "offer", "sdp": sdp}


MINFO = {"audio": False, "video": True, "audiotype": 0, "videotype": 0}


async def test_every_bad_request_is_answered_and_nobody_else_notices(
    server: ServerProcess,
    streaming,  # type: ignore[no-untyped-def]
) -> None:
    _, publication, _, subscription, video = streaming
    mallory = await RawPeer.connect(server, "mallory")
    cases: list[tuple[object, int | None, str, str]] = [
        # (frame, expected id, errorCode, a word the reason must contain)
        ("{not json", None, "bad-json", "JSON"),
        ("[1, 2, 3]", None, "bad-request", "object"),
        ({"id": 1, "method": "join", "data": {"rid": "x"}}, 1, "bad-request", "request"),
        ({"request": True, "id": "one", "method": "join", "data": {}}, None, "bad-request", "id"),
        ({"request": True, "id": 2, "method": 5, "data": {}}, 2, "bad-request", "method"),
        (request("fly", {"rid": "class"}, 3), 3, "unknown-method", "fly"),
        (request("join", {}, 4), 4, "invalid-params", "data.rid"),
        (request("join", {"rid": 123}, 5), 5, "invalid-params", "data.rid"),
        (request("join", {"rid": ""}, 6), 6, "invalid-params", "data.rid"),
        (request("keepalive", {"rid": "class"}, 8), 8, "not-in-room", "class"),
        (request("publish", {"rid": "class", "minfo": MINFO}, 9), 9, "invalid-params", "jsep"),
    ]
    for frame, expected_id, code, word in cases:
        reply = await mallory.send(frame)
        assert reply["ok"] is False, frame
        assert reply["id"] == expected_id, frame
        assert reply["errorCode"] == code, (frame, reply)
        assert word.lower() in reply["errorReason"].lower(), (frame, reply)

    assert (await mallory.send(request("join", {"rid": "class"}, 10)))["ok"] is True
    in_room_cases: list[tuple[dict, str]] = [
        (request("join", {"rid": "class"}), "already-joined"),
        (
            request("publish", {"rid": "class", "jsep": offer(GARBAGE_SDP), "minfo": MINFO}),
            "bad-sdp",
        ),
        (
            request("publish", {"rid": "class", "jsep": offer(NO_MEDIA_SDP), "minfo": MINFO}),
            "bad-sdp",
        ),
        (
            request(
                "publish", {"rid": "class", "jsep": {"type": "answer", "sdp": "x"}, "minfo": MINFO}
            ),
            "invalid-params",
        ),
        (
            request(
                "publish",
                {"rid": "class", "jsep": offer("v=0"), "minfo": {**MINFO, "video": "yes"}},
            ),
            "invalid-params",
        ),
        (
            request("subscribe", {"rid": "class", "mid": "nope#1", "jsep": offer(GARBAGE_SDP)}),
            "unknown-mid",
        ),
        (
            request(
                "subscribe", {"rid": "class", "mid": publication.mid, "jsep": offer(GARBAGE_SDP)}
            ),
            "bad-sdp",
        ),
        (
            request(
                "subscribe",
                {
                    "rid": "class",
                    "mid": publication.mid,
                    "sfuid": "sfu-9",
                    "jsep": offer(GARBAGE_SDP),
                },
            ),
            "unknown-sfu",
        ),
        (
            request(
                "subscribe",
                {"rid": "elsewhere", "mid": publication.mid, "jsep": offer(GARBAGE_SDP)},
            ),
            "not-in-room",
        ),
        (
            request(
                "unsubscribe", {"rid": "class", "mid": publication.mid, "sid": subscription.sid}
            ),
            "unknown-sid",
        ),
        (request("unpublish", {"rid": "class", "mid": publication.mid}), "not-owner"),
        (request("unpublish", {"rid": "class", "mid": "ghost#0"}), "unknown-mid"),
        (request("broadcast", {"rid": "class"}), "invalid-params"),
        (request("leave", {"rid": "elsewhere"}), "not-in-room"),
    ]
    for frame, code in in_room_cases:
        reply = await mallory.send(frame)
        assert reply["ok"] is False and reply["errorCode"] == code, (frame, reply)
        assert reply["id"] == frame["id"] and reply["errorReason"]

    oversized = request("broadcast", {"rid": "class", "data": "x" * 300_000}, 11)
    reply = await mallory.send(oversized)
    assert reply["errorCode"] == "frame-too-large" and reply["id"] is None
    reply = await mallory.send(b"\x00\x01binary")
    assert reply["errorCode"] == "bad-request"

    # Garbage datagrams at the subscriber's media port on the server.
    answer_sdp = subscription.pc.remoteDescription.sdp
    port = int(re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)", answer_sdp).group(1))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for payload in (b"", b"\x80" * 12, b"\x90\x60" + bytes(200), bytes(range(256)) * 4):
            udp.sendto(payload, ("127.0.0.1", port))

    # The same connection still works, and the class never noticed.
    assert (await mallory.send(request("keepalive", {"rid": "class"}, 12)))["ok"] is True
    frames = video.frames
    await wait_for(lambda: video.frames >= frames + 20, 10)
    stats = await server.stats()
    assert list(stats["sfu"]["subscriptions"]) == [subscription.sid]
    assert stats["signal"]["rooms"]["class"]["members"] == ["mallory", "student", "teacher"]
    assert "request-failed" not in server.log()
    await mallory.close()


async def test_frame_above_hard_limit_closes_only_that_socket(
    server: ServerProcess,
    streaming,  # type: ignore[no-untyped-def]
) -> None:
    _, _, student, _, video = streaming
    mallory = await RawPeer.connect(server, "mallory")
    await mallory.ws.send_str("x" * (4 * 262_144 + 1))
    message = await mallory.ws.receive(timeout=10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert mallory.ws.close_code == 1009
    frames = video.frames
    await wait_for(lambda: video.frames >= frames + 20, 10)
    assert (await student.request("keepalive", {"rid": "class"})) == {}
    await mallory.close()


async def test_bad_peer_id_is_refused_before_upgrade(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for query in ("", "?peer=", "?peer=" + "x" * 200, "?peer=a%20b"):
            async with http.get(f"{server.ws_url}{query}") as response:
                assert response.status == 400
