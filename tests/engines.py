"""Real etcd, NATS and Redis servers for the cluster tests, each on free loopback ports
in its own temporary directory, started in the foreground and stopped with the test module.

`Engine.stop()` / `Engine.start()` stop and restart one on the same port and data
directory, for the outage tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosfu.cluster.up import etcd_command, nats_command, redis_command
from tests.conftest import free_port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{proc.args[0]} did not listen on {port}: {log.read_text()[-2000:]}")


@dataclass
class Engine:
    name: str
    port: int
    directory: Path
    command: Callable[[], list[str]]
    proc: subprocess.Popen[bytes] | None = None
    extra_ports: list[int] = field(default_factory=list)

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self, timeout: float = 10.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already runs"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _wait_for_port(self.port, self.proc, self.log_path, timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def etcd(directory: Path) -> Engine:
    if shutil.which("etcd") is None:
        raise RuntimeError("etcd is not installed: run make install")
    directory.mkdir(parents=True, exist_ok=True)
    port, peer = free_port(), free_port()
    return Engine(
        "etcd", port, directory, lambda: etcd_command(directory, port, peer), extra_ports=[peer]
    )


def nats(directory: Path) -> Engine:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Engine("nats", port, directory, lambda: nats_command(port))


def redis(directory: Path) -> Engine:
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return Engine("redis", port, directory, lambda: redis_command(directory, port))


@dataclass
class Engines:
    etcd: Engine
    nats: Engine
    redis: Engine

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd.port}"

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def all(self) -> list[Engine]:
        return [self.etcd, self.nats, self.redis]


def start_engines(directory: Path) -> Engines:
    engines = Engines(
        etcd(directory / "etcd"), nats(directory / "nats"), redis(directory / "redis")
    )
    try:
        for engine in engines.all():
            engine.start()
    except BaseException:
        stop_engines(engines)
        raise
    return engines


def stop_engines(engines: Engines) -> None:
    for engine in engines.all():
        engine.stop()
