"""The lean `/ws` path (signal/upgrade.py, signal/ws_frames.py).

It takes only upgrades it fully understands and must then behave as aiohttp's
`WebSocketResponse` did: pings answered, a close answered, protocol errors closed with
their RFC 6455 code. Everything else, every refusal included, is aiohttp's, as before.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiosfu.signal.ws_frames import (
    MESSAGE_TOO_BIG,
    PING,
    PROTOCOL_ERROR,
    TEXT,
    FrameError,
    FrameReader,
)
from tests.conftest import ServerProcess, start_server, stop_server

JOIN = json.dumps({"request": True, "id": 1, "method": "join", "data": {"rid": "r"}})


def client_frame(
    payload: bytes, opcode: int = TEXT, fin: bool = True, masked: bool = True
) -> bytes:
    """A client-to-server frame (masked, as RFC 6455 requires of clients)."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = bytes([first, mask_bit | n])
    elif n < 65536:
        header = bytes([first, mask_bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def upgrade_request(query: str = "peer=alice", extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{extra}\r\n"
    ).encode()


class Peer:
    """A raw client socket and what it has read but not yet used."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _more(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return chunk

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            if not self._more():
                break
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            assert self._more(), "connection closed before a whole frame"
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        first, second = self.exactly(2)
        n = second & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self.exactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self.exactly(8))
        return first & 0x0F, self.exactly(n)

    def ended(self) -> bool:
        return not self.buffer and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def upgraded(
    server: ServerProcess, query: str = "peer=alice", extra: str = ""
) -> tuple[Peer, bytes]:
    peer = Peer(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    peer.sock.sendall(upgrade_request(query, extra))
    return peer, peer.head()


@pytest.fixture
def lean_off(tmp_path: Path) -> Iterator[ServerProcess]:
    config = tmp_path / "aiosfu.toml"
    config.write_text("lean_upgrade = false\n")
    server = start_server(tmp_path, "--config", str(config))
    yield server
    stop_server(server)


# --- frames --------------------------------------------------------------------------


def test_the_reader_joins_fragments_around_a_ping() -> None:
    reader = FrameReader(1000)
    data = (
        client_frame(b'{"a":', fin=False)
        + client_frame(b"hi", opcode=PING)
        + client_frame(b"1}", opcode=0)
    )
    messages = reader.feed(data[:7]) + reader.feed(data[7:])
    assert [(m.opcode, m.data) for m in messages] == [(PING, b"hi"), (TEXT, b'{"a":1}')]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_frame(b"x", masked=False), PROTOCOL_ERROR),
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", PROTOCOL_ERROR),  # RSV1 without an extension
        (client_frame(b"x" * 126, opcode=PING), PROTOCOL_ERROR),  # control frame too long
        (client_frame(b"x", opcode=0), PROTOCOL_ERROR),  # continuation of nothing
        (client_frame(b"x", opcode=3), PROTOCOL_ERROR),  # no such opcode
        (client_frame(b"x" * 1001), MESSAGE_TOO_BIG),
        (client_frame(b"x" * 600, fin=False) + client_frame(b"x" * 600, opcode=0), MESSAGE_TOO_BIG),
    ],
)
def test_the_reader_refuses_what_rfc_6455_forbids(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as refused:
        FrameReader(1000).feed(data)
    assert refused.value.code == code


# --- through a server ------------------------------------------------------------------


def test_a_plain_upgrade_takes_the_lean_path_and_joins(server: ServerProcess) -> None:
    peer, head = upgraded(server, extra="Sec-WebSocket-Protocol: protoo\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"sec-websocket-protocol: protoo" in head.lower()
    assert b"Server:" not in head  # aiohttp names itself; the lean path does not
    peer.sock.sendall(client_frame(JOIN.encode()))
    opcode, payload = peer.frame()
    assert opcode == TEXT and json.loads(payload)["ok"] is True
    peer.close()


def test_with_lean_upgrade_off_aiohttp_upgrades(lean_off: ServerProcess) -> None:
    peer, head = upgraded(lean_off)
    assert head.startswith(b"HTTP/1.1 101 ") and b"Server:" in head
    peer.close()


def test_the_head_and_the_first_frame_in_one_segment(server: ServerProcess) -> None:
    peer = Peer(socket.create_connection(("127.0.0.1", server.port), timeout=10))
    peer.sock.sendall(upgrade_request() + client_frame(JOIN.encode()))
    assert peer.head().startswith(b"HTTP/1.1 101 ")
    opcode, payload = peer.frame()
    assert opcode == TEXT and json.loads(payload)["ok"] is True
    peer.close()


def test_what_the_lean_path_does_not_take_is_served_by_aiohttp(server: ServerProcess) -> None:
    # A percent escape is aiohttp's to decode: the uid is still "a@b".
    peer, head = upgraded(server, query="peer=a%40b")
    assert head.startswith(b"HTTP/1.1 101 ") and b"Server:" in head
    peer.sock.sendall(client_frame(JOIN.encode()))
    assert json.loads(peer.frame()[1])["ok"] is True
    peer.close()
    # A refusal is aiohttp's, with its status and reason, as before.
    peer, head = upgraded(server, query="peer=bad/uid")
    assert head.startswith(b"HTTP/1.1 400 ")
    peer.close()


def test_a_ping_is_answered_and_a_close_is_returned(server: ServerProcess) -> None:
    peer, _ = upgraded(server)
    peer.sock.sendall(client_frame(b"are you there", opcode=PING))
    assert peer.frame() == (0xA, b"are you there")
    peer.sock.sendall(client_frame(struct.pack("!H", 1000) + b"bye", opcode=0x8))
    opcode, payload = peer.frame()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
    assert peer.ended()  # then the server ends the connection
    peer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(b"\xff\xfe", opcode=TEXT), 1007),
        (client_frame(b"{}", masked=False), 1002),
    ],
)
def test_a_protocol_error_closes_with_its_code(
    server: ServerProcess, frame: bytes, code: int
) -> None:
    peer, _ = upgraded(server)
    peer.sock.sendall(frame)
    opcode, payload = peer.frame()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code
    peer.close()
