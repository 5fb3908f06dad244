"""`aiosfu cluster up` (`make cluster`): a whole cluster on this machine for a newcomer.

etcd, NATS and Redis in a temporary directory, two SFU nodes and two signal nodes, all on
127.0.0.1; it prints where to connect and stops everything on Ctrl-C. The engine command
lines are the ones the cluster tests use.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = ("etcd", "nats-server", "redis-server")


def etcd_command(directory: Path, port: int, peer_port: int) -> list[str]:
    url, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
    return [
        "etcd", "--name=aiosfu", f"--data-dir={directory / 'etcd-data'}",
        f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=aiosfu={peer}", "--log-level=warn",
    ]  # fmt: skip


def nats_command(port: int) -> list[str]:
    return ["nats-server", "-a", "127.0.0.1", "-p", str(port)]


def redis_command(directory: Path, port: int) -> list[str]:
    return [
        "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
        "--appendonly", "no", "--dir", str(directory),
    ]  # fmt: skip


def wait_for_port(
    name: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port}")


def up(base_port: int = 8080, signals: int = 2, sfus: int = 2) -> None:
    missing = [name for name in ENGINES if shutil.which(name) is None]
    if missing:
        raise ValueError(f"not installed: {', '.join(missing)} (make install brings them)")
    directory = Path(tempfile.mkdtemp(prefix="aiosfu-cluster-"))
    ports = {"etcd": 2379, "etcd-peer": 2380, "nats": 4222, "redis": 6379}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(name: str, command: list[str], port: int) -> None:
        log = (directory / f"{name}.log").open("ab")
        proc = subprocess.Popen(command, cwd=directory, stdout=log, stderr=subprocess.STDOUT)
        procs.append((name, proc))
        wait_for_port(name, port, proc)
        print(f"  {name:<9} 127.0.0.1:{port}  (log {directory / name}.log)", flush=True)

    node = [sys.executable, "-m", "aiosfu"]
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    try:
        print(f"aiosfu cluster in {directory}:", flush=True)
        start("etcd", etcd_command(directory, ports["etcd"], ports["etcd-peer"]), ports["etcd"])
        start("nats", nats_command(ports["nats"]), ports["nats"])
        start("redis", redis_command(directory, ports["redis"]), ports["redis"])
        for i in range(1, sfus + 1):
            grpc = 50050 + i
            command = [*node, "sfu", "--id", f"sfu-{i}", "--etcd", etcd_url,
                       "--grpc-port", str(grpc)]  # fmt: skip
            start(f"sfu-{i}", command, grpc)
        for i in range(1, signals + 1):
            port = base_port + i - 1
            command = [
                *node, "signal", "--id", f"signal-{i}", "--port", str(port), "--etcd", etcd_url,
                "--nats", f"nats://127.0.0.1:{ports['nats']}",
                "--redis", f"redis://127.0.0.1:{ports['redis']}/0",
            ]  # fmt: skip
            start(f"signal-{i}", command, port)
        print("open a tab on each signal node and join the same room:", flush=True)
        for i in range(signals):
            print(f"  http://127.0.0.1:{base_port + i}/", flush=True)
        print("Ctrl-C stops them all.", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop as on Ctrl-C
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for name, proc in reversed(procs):  # nodes first, then the engines
            if proc.poll() is None:
                engine = name in ("etcd", "nats", "redis")
                proc.send_signal(signal.SIGTERM if engine else signal.SIGINT)
        for _, proc in reversed(procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        print("stopped", flush=True)
