"""Attacks a reachable server must shrug off, open mode or not: cross-site sockets,
floods, resource exhaustion from one socket, SDP and STUN that break aiortc and aioice,
and peer-chosen text that would forge log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from aiosfu.client import Client, SignalingError
from aiosfu.log import KeyValueFormatter
from aiosfu.sfu.ice import use_host_addresses
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media


def request(method: str, data: object, request_id: int = 7) -> dict[str, Any]:
    return {"request": True, "id": request_id, "method": method, "data": data}


async def upgrade(server: ServerProcess, query: str, **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.ws_url}{query}",
            headers={"Connection": "Upgrade", "Upgrade": "websocket", **_ws_headers(), **headers},
        ) as response,
    ):
        return response.status


def _ws_headers() -> dict[str, str]:
    return {"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def offer_sdp(kinds: tuple[str, ...] = ("video",)) -> str:
    use_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


class Raw:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws

    @classmethod
    async def connect(cls, server: ServerProcess, uid: str) -> Raw:
        http = aiohttp.ClientSession()
        return cls(http, await http.ws_connect(f"{server.ws_url}?peer={uid}"))

    async def send(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self.ws.send_str(json.dumps(frame))
        while True:
            reply = json.loads((await self.ws.receive(timeout=15)).data)
            if reply.get("response"):
                return reply

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


# --- cross-site WebSocket --------------------------------------------------------------


async def test_pages_of_other_origins_cannot_open_a_socket(server: ServerProcess) -> None:
    own = f"http://127.0.0.1:{server.port}"
    assert await upgrade(server, "?peer=a", Origin="http://evil.example") == 403
    assert await upgrade(server, "?peer=a", Origin="null") == 403
    assert await upgrade(server, "?peer=a", Origin=f"https://127.0.0.1:{server.port}") == 403
    assert await upgrade(server, "?peer=a", Origin=own) == 101
    # Behind a TLS proxy: the page is https, the proxy says so.
    https = f"https://127.0.0.1:{server.port}"
    assert await upgrade(server, "?peer=c", Origin=https, **{"X-Forwarded-Proto": "https"}) == 101
    assert await upgrade(server, "?peer=b") == 101  # no Origin: not a browser page


async def test_configured_origins_are_allowed(tmp_path: Path) -> None:
    config = tmp_path / "aiosfu.toml"
    config.write_text('allowed_origins = ["https://portal.school.example"]\n')
    server = start_server(tmp_path, "--config", str(config))
    try:
        assert await upgrade(server, "?peer=a", Origin="https://portal.school.example") == 101
        assert await upgrade(server, "?peer=b", Origin="https://portal.school.example:443") == 101
        assert await upgrade(server, "?peer=c", Origin="https://evil.example") == 403
    finally:
        stop_server(server)


# --- identifiers and logs ------------------------------------------------------------


async def test_lookalike_and_newline_uids_are_refused(server: ServerProcess) -> None:
    for uid in ("alice%0A", "alice%0D%0Aevent=FORGED", "%EF%BD%81lice", "%D0%B0lice"):
        assert await upgrade(server, f"?peer={uid}") == 400, uid


async def test_room_ids_cannot_forge_log_lines(server: ServerProcess) -> None:
    mallory = await Raw.connect(server, "mallory")
    for rid in ("x\nts=2026 level=info logger=aiosfu.signal event=FORGED", "\uff4dath-101", "a b"):
        reply = await mallory.send(request("join", {"rid": rid}))
        assert reply["errorCode"] == "invalid-params" and "data.rid" in reply["errorReason"]
    await mallory.send(request("keepalive", {"rid": "x\nevent=FORGED"}))
    await mallory.close()
    await asyncio.sleep(0.2)
    assert not [line for line in server.log().splitlines() if "event=FORGED" in line.split()[:5]]


def test_log_values_are_escaped_onto_one_line() -> None:
    record = logging.LogRecord("aiosfu.x", logging.INFO, "", 0, "join", None, None)
    record.fields = {"rid": "a\nts=1 event=FORGED", "uid": "\uff41lice\r", "ok": "plain"}  # type: ignore[attr-defined]
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert 'rid="a\\nts=1 event=FORGED"' in line
    assert 'uid="\\uff41lice\\r"' in line
    assert line.endswith("ok=plain")


# --- SDP that aiortc handles badly -----------------------------------------------------


async def test_offers_aiortc_chokes_on_are_bad_sdp(server: ServerProcess) -> None:
    mallory = await Raw.connect(server, "mallory")
    await mallory.send(request("join", {"rid": "class"}))
    sdp = await offer_sdp(("audio", "video"))
    mids = re.findall(r"^a=mid:(\S+)\r$", sdp, flags=re.MULTILINE)
    assert len(mids) == 2
    offers = {
        "no mid": sdp.replace(f"a=mid:{mids[0]}\r\n", "", 1),
        "duplicate mid": sdp.replace(f"a=mid:{mids[1]}", f"a=mid:{mids[0]}"),
        "two mids": sdp.replace(f"a=mid:{mids[0]}\r\n", f"a=mid:{mids[0]}\r\na=mid:z\r\n", 1),
        "unbundled": re.sub(r"a=group:BUNDLE[^\r]*", f"a=group:BUNDLE {mids[0]}", sdp),
        "no bundle": re.sub(r"a=group:BUNDLE[^\r]*\r\n", "", sdp),
        "2000 m-lines": sdp
        + "".join(
            f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:x{i}\r\na=rtpmap:96 VP8/90000\r\n"
            for i in range(2000)
        ),
    }
    minfo = {"audio": True, "video": True, "audiotype": 0, "videotype": 0}
    for name, bad in offers.items():
        started = time.monotonic()
        data = {"rid": "class", "jsep": {"type": "offer", "sdp": bad}, "minfo": minfo}
        reply = await mallory.send(request("publish", data))
        assert reply["ok"] is False and reply["errorCode"] == "bad-sdp", (name, reply)
        assert time.monotonic() - started < 2.0, name  # generous: seconds were the attack
    data = {"rid": "class", "jsep": {"type": "offer", "sdp": sdp}, "minfo": minfo}
    assert (await mallory.send(request("publish", data)))["ok"] is True
    await mallory.close()
    log = server.log()
    assert "request-failed" not in log and "Traceback" not in log


# --- STUN that aioice's parser chokes on ---------------------------------------------


async def test_malformed_stun_is_dropped_without_a_traceback(server: ServerProcess) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [PatternTrack()])
    student = await Client.connect(server.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    answer = subscription.pc.remoteDescription.sdp
    port = int(re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+)", answer).group(1))
    # A binding request whose PRIORITY attribute is 2 bytes long instead of 4.
    attribute = struct.pack("!HH", 0x0024, 2) + b"\x00\x01" + b"\x00\x00"
    header = struct.pack("!HHI", 0x0001, len(attribute), 0x2112A442) + bytes(12)
    datagram = header + attribute
    assert len(datagram) == 28
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for _ in range(50):
            udp.sendto(datagram, ("127.0.0.1", port))
    frames = video.frames
    await wait_for(lambda: video.frames >= frames + 10, 10)
    await video.stop()
    assert (await student.request("keepalive", {"rid": "class"})) == {}
    await student.close()
    await teacher.close()
    log = server.log()
    assert "Traceback" not in log and "struct.error" not in log


# --- limits --------------------------------------------------------------------------

LIMITS = """
rate_limit = 20.0
rate_burst = 30
max_publications_per_peer = 1
max_subscriptions_per_peer = 2
max_rooms_per_peer = 2
max_room_members = 3
max_peer_connections = 4
max_connections = 6
"""


@pytest.fixture
async def limited(tmp_path: Path):  # type: ignore[no-untyped-def]
    config = tmp_path / "aiosfu.toml"
    config.write_text(LIMITS)
    server = start_server(tmp_path, "--config", str(config))
    yield server
    stop_server(server)


async def refused(call: Any, code: str, word: str) -> None:
    with pytest.raises(SignalingError) as info:
        await call
    assert info.value.code == code and word in info.value.reason, info.value


async def test_limits_refuse_only_the_peer_past_them(limited: ServerProcess) -> None:
    teacher = await Client.connect(limited.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [PatternTrack()])
    student = await Client.connect(limited.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)

    # Publications per peer.
    await refused(teacher.publish("class", [PatternTrack()]), "limit-exceeded", "1 publications")
    # Subscriptions per peer (the student holds one; a second is fine, a third is not).
    second = await student.subscribe("class", publication.mid)
    await refused(student.subscribe("class", publication.mid), "limit-exceeded", "2 subscriptions")
    # Rooms per peer.
    await student.join("second")
    await refused(student.join("third"), "limit-exceeded", "2 rooms")
    # Members per room.
    extra = await Client.connect(limited.ws_url, "extra")
    await extra.join("class")
    late = await Client.connect(limited.ws_url, "late")
    await refused(late.join("class"), "room-full", "3 members")
    # Peer connections on the server: 3 held, one more, then none.
    await extra.subscribe("class", publication.mid)
    await refused(extra.publish("class", [PatternTrack()]), "limit-exceeded", "4 peer connections")
    # Connections on the server: 4 open, 2 more, then HTTP 503.
    more = [await Client.connect(limited.ws_url, f"more{i}") for i in range(2)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await Client.connect(limited.ws_url, "one-too-many")
    assert info.value.status == 503

    # Requests per second: a burst of 30, then rate-limited; the student is untouched.
    replies = await asyncio.gather(
        *(late.signaling.request("keepalive", {"rid": "x"}) for _ in range(80)),
        return_exceptions=True,
    )
    codes = [r.code for r in replies if isinstance(r, SignalingError)]
    # About the burst passes (the refused join above took one token, refills add a few).
    assert codes.count("rate-limited") >= 40 and 25 <= codes.count("not-in-room") <= 40, codes
    assert (await student.request("keepalive", {"rid": "class"})) == {}
    await asyncio.sleep(1.0)  # the bucket refills
    await refused(late.request("keepalive", {"rid": "x"}), "not-in-room", "x")

    frames = video.frames
    await wait_for(lambda: video.frames >= frames + 10, 10)
    await video.stop()
    stats = await limited.stats()
    room = stats["signal"]["rooms"]["class"]
    assert room["members"] == ["extra", "student", "teacher"]
    assert room["publications"] == [publication.mid]
    assert second.sid in stats["sfu"]["subscriptions"]
    for client in (teacher, student, extra, late, *more):
        await client.close()
