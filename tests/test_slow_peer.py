"""A peer that stops reading its socket must not hold up anyone else's requests."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct

from aiosfu.client import Client
from tests.conftest import ServerProcess


def masked_text_frame(text: str) -> bytes:
    """A client-to-server WebSocket text frame (RFC 6455 requires the mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    header = bytes([0x81])
    if len(payload) < 126:
        header += bytes([0x80 | len(payload)])
    else:
        header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_peer(server: ServerProcess, uid: str, rid: str) -> socket.socket:
    """Upgrade, join `rid`, then never read again (a frozen tab on a full link)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?peer={uid} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in sock.recv(1024).split(b"\r\n", 1)[0]
    join = {"request": True, "id": 1, "method": "join", "data": {"rid": rid}}
    sock.sendall(masked_text_frame(json.dumps(join)))
    return sock


async def test_a_peer_that_stops_reading_is_dropped_and_delays_nobody(
    server: ServerProcess,
) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    student = await Client.connect(server.ws_url, "student")
    await student.join("class")
    frozen = stalled_peer(server, "frozen", "class")
    await teacher.signaling.wait_for("peer-join", lambda d: d["uid"] == "frozen")

    # 40 broadcasts of 200 kB: 8 MB the frozen peer will never read.
    slide = "x" * 200_000
    for n in range(40):
        await teacher.broadcast("class", {"slide": n, "body": slide})
    received = await student.signaling.wait_for(
        "broadcast", lambda d: d["data"]["slide"] == 39, timeout=20
    )
    assert received["uid"] == "teacher"
    left = await teacher.signaling.wait_for(
        "peer-leave", lambda d: d["uid"] == "frozen", timeout=20
    )
    assert left == {"rid": "class", "uid": "frozen"}
    assert "peer-too-slow" in server.log()
    stats = await server.stats()
    assert stats["signal"]["rooms"]["class"]["members"] == ["student", "teacher"]
    frozen.close()
    await student.close()
    await teacher.close()
