"""Slowloris: connections that never finish their request headers hold no fds past the
header timeout, the pending caps refuse the surplus at once, and an established WebSocket
peer is answered throughout."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ServerProcess, start_server, stop_server

HEADER_TIMEOUT = 1.5


def open_fds(server: ServerProcess) -> int:
    return len(os.listdir(f"/proc/{server.pid}/fd"))


def slow_clients(port: int, count: int, source: str) -> list[socket.socket]:
    """Raw sockets that send half a request line and then nothing."""
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /ws?peer=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        sockets.append(s)
    return sockets


def closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def guarded_server(tmp_path: Path, **settings: object) -> Iterator[ServerProcess]:
    config = tmp_path / "aiosfu.toml"
    config.write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    server = start_server(tmp_path, "--config", str(config))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def timeout_server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from guarded_server(
        tmp_path,
        http_header_timeout=HEADER_TIMEOUT,
        http_max_pending=1000,
        http_max_pending_per_ip=1000,
    )


@pytest.fixture
def capped_server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from guarded_server(
        tmp_path, http_header_timeout=60.0, http_max_pending=1000, http_max_pending_per_ip=10
    )


async def keepalives(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> int:
    """Keepalives one at a time for `seconds`; every one must be answered ok."""
    answered = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        request_id = 100 + answered
        await ws.send_json(
            {"request": True, "id": request_id, "method": "keepalive", "data": {"rid": "c"}}
        )
        reply = await asyncio.wait_for(ws.receive_json(), 5)
        while not (reply.get("response") and reply.get("id") == request_id):  # notifications
            reply = await asyncio.wait_for(ws.receive_json(), 5)
        assert reply["ok"], reply
        answered += 1
        await asyncio.sleep(0.05)
    return answered


async def test_slow_headers_hold_no_fds_past_the_timeout(timeout_server: ServerProcess) -> None:
    server = timeout_server
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}?peer=member")
        await ws.send_json({"request": True, "id": 0, "method": "join", "data": {"rid": "c"}})
        assert (await ws.receive_json())["ok"]
        before = open_fds(server)

        sockets = slow_clients(server.port, 300, "127.0.0.2")
        try:
            await asyncio.sleep(0.3)
            during = open_fds(server)
            assert during >= before + 250, (before, during)  # they were really held

            assert await keepalives(ws, HEADER_TIMEOUT + 1.5) > 0
            after = open_fds(server)
            assert after <= before + 5, (before, during, after)
            assert all(closed_by_server(s) for s in sockets)
            assert await keepalives(ws, 0.2) > 0  # the member is still served
        finally:
            for s in sockets:
                s.close()
        await ws.close()


async def test_pending_connections_past_the_cap_are_refused(capped_server: ServerProcess) -> None:
    server = capped_server
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{server.ws_url}?peer=member")
        await ws.send_json({"request": True, "id": 0, "method": "join", "data": {"rid": "c"}})
        assert (await ws.receive_json())["ok"]
        before = open_fds(server)

        sockets = slow_clients(server.port, 50, "127.0.0.2")
        try:
            await asyncio.sleep(0.5)
            assert open_fds(server) <= before + 10 + 3
            refused = sum(closed_by_server(s) for s in sockets)
            assert refused == 40, refused
            # Another address is not held back by the first one's surplus.
            other = await http.ws_connect(f"{server.ws_url}?peer=other")
            await other.send_json(
                {"request": True, "id": 0, "method": "join", "data": {"rid": "c"}}
            )
            assert (await other.receive_json())["ok"]
            assert await keepalives(ws, 0.3) > 0
            await other.close()
        finally:
            for s in sockets:
                s.close()
        await ws.close()
