"""Shared fixtures: a real `aiosfu serve` process on loopback, reached over HTTP and WS."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A running `aiosfu serve` child process and how to reach it."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stats(self) -> dict:
        async with aiohttp.ClientSession() as http, http.get(f"{self.http_url}/stats") as r:
            r.raise_for_status()
            return await r.json()

    def os_thread_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    tmp_path: Path,
    *extra: str,
    ice_ips: tuple[str, ...] = ("127.0.0.1",),
    host: str = "127.0.0.1",
) -> ServerProcess:
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    log = log_path.open("wb")
    cmd = [
        sys.executable,
        "-m",
        "aiosfu",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        *(arg for ip in ice_ips for arg in ("--ice-ip", ip)),
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    server = ServerProcess(proc=proc, port=port, log_path=log_path, extra_args=list(extra))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{server.log()}")


def stop_server(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server per test, so no test sees another's rooms."""
    srv = start_server(tmp_path)
    yield srv
    stop_server(srv)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium per test; each page opens its own context."""
    from tests.browser import launch_chromium

    async with async_playwright() as pw:
        chromium = await launch_chromium(pw)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `predicate` (sync or async) until it is truthy or fail after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
