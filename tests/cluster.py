"""A whole cluster on loopback for the multi-node tests: real etcd, NATS and Redis, two
`aiosfu sfu` and two `aiosfu signal` processes, each node killable on its own.

The fixtures (`cluster`, `clients`) and helpers here are shared by every multi-node test
module; a module imports the fixtures it uses.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from aiosfu.client import Client
from tests.conftest import ROOT, free_port
from tests.engines import Engines, start_engines, stop_engines

PEER_GRACE = 3.0


@dataclass
class Node:
    name: str
    args: list[str]
    port: int  # the port it is ready on (gRPC or HTTP)
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aiosfu", *self.args], stdout=log, stderr=subprocess.STDOUT,
            cwd=ROOT, env={**os.environ, **self.env},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    engines: Engines
    directory: Path
    sfus: list[Node] = field(default_factory=list)
    signals: list[Node] = field(default_factory=list)
    signal_env: dict[str, str] = field(default_factory=dict)  # AIOSFU_* for signal nodes
    admin_token: str | None = None  # reads /stats when the signal nodes require tokens

    def sfu_node(self, name: str, *extra: str) -> Node:
        port = free_port()
        args = [
            "sfu", "--id", name, "--etcd", self.engines.etcd_url, "--grpc-port", str(port),
            "--ice-ip", "127.0.0.1", "--log-level", "info", *extra,
        ]  # fmt: skip
        node = Node(name, args, port, self.directory / f"{name}.log")
        node.start()
        self.sfus.append(node)
        return node

    def signal_node(self, name: str) -> Node:
        port = free_port()
        args = [
            "signal", "--id", name, "--port", str(port), "--etcd", self.engines.etcd_url,
            "--nats", self.engines.nats_url, "--redis", self.engines.redis_url,
        ]  # fmt: skip
        # A short grace before a lost signal node's streams end, so a test can watch it.
        env = {"AIOSFU_SIGNAL_NODE": json.dumps({"peer_grace": PEER_GRACE}), **self.signal_env}
        node = Node(name, args, port, self.directory / f"{name}.log", env=env)
        node.start()
        self.signals.append(node)
        return node

    def stop(self) -> None:
        for node in [*self.signals, *self.sfus]:
            node.stop()
        stop_engines(self.engines)


def start_cluster(
    directory: Path,
    sfus: int = 2,
    signals: int = 2,
    signal_env: dict[str, str] | None = None,
    admin_token: str | None = None,
) -> Cluster:
    cluster = Cluster(
        start_engines(directory), directory, signal_env=signal_env or {}, admin_token=admin_token
    )
    try:
        for i in range(1, sfus + 1):
            cluster.sfu_node(f"sfu-{i}")
        for i in range(1, signals + 1):
            cluster.signal_node(f"signal-{i}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def received_since(client: Client, seen: int) -> list[tuple[str, dict]]:
    """The notifications `client` received after the `seen`-th one."""
    notifications = list(client.signaling.notifications)
    return notifications[len(notifications) - (client.signaling.received - seen) :]


async def signal_stats(url: str, token: str | None = None) -> dict:
    params = {"token": token} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/stats", params=params) as response,
    ):
        return await response.json()


async def wait_for_discovery(cluster: Cluster, sfus: int = 2) -> None:
    """Every signal node knows `sfus` SFU nodes (from etcd, within one load refresh)."""
    for node in cluster.signals:
        for _ in range(100):
            stats = await signal_stats(node.http_url, cluster.admin_token)
            if len(stats["signal"]["cluster"]["sfu_nodes"]) == sfus:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"{node.name} never saw {sfus} SFU nodes: {stats}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    asyncio.run(wait_for_discovery(running))
    yield running
    running.stop()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()


async def connect(clients: list[Client], url: str, uid: str, token: str | None = None) -> Client:
    client = await Client.connect(url, uid, token=token, ice_ips=["127.0.0.1"])
    clients.append(client)
    return client
