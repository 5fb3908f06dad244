"""`aiosfu cluster up` (`make cluster`): a newcomer's whole cluster, and all of it gone
again on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import pytest

from aiosfu.client import Client
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.media

ENGINE_PORTS = (2379, 4222, 6379, 50051, 50052)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_cluster_up_serves_two_signal_nodes_and_stops_everything() -> None:
    if any(listening(p) for p in ENGINE_PORTS):
        pytest.skip("a default engine port is taken on this machine")
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosfu", "cluster", "up", "--port", str(port),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    printed = []
    try:
        async with asyncio.timeout(60):
            while not printed or "Ctrl-C" not in printed[-1]:
                printed.append((await proc.stdout.readline()).decode())
        text = "".join(printed)
        assert f"http://127.0.0.1:{port}/" in text and f"http://127.0.0.1:{port + 1}/" in text
        alice = await Client.connect(f"ws://127.0.0.1:{port}/ws", "alice", ice_ips=["127.0.0.1"])
        bob = await Client.connect(f"ws://127.0.0.1:{port + 1}/ws", "bob", ice_ips=["127.0.0.1"])
        await alice.join("hello")
        joined = await bob.join("hello")
        assert joined["users"] == [{"signalid": "signal-1", "rid": "hello", "uid": "alice"}]
        await alice.close()
        await bob.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        rest = await asyncio.wait_for(proc.stdout.read(), 30)
        await proc.wait()
    assert "stopped" in rest.decode()
    assert not any(listening(p) for p in (*ENGINE_PORTS, port, port + 1))
