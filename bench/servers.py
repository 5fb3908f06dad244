"""The servers under test, each a child process pinned to its own core, measured from
outside through /proc (CPU time of all its threads, resident memory).

CPU time comes from each thread's schedstat (nanoseconds on a CPU), not from the utime
and stime of /proc/<pid>/stat, which count in 10 ms ticks: a 4 s window of a server at
2% of a core is 8 ticks there, a 12% step from one tick more or less."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid`, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def task_cpu_ns(pid: int) -> dict[int, int]:
    """Nanoseconds each live thread of `pid` has run (first field of its schedstat)."""
    times = {}
    for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            times[int(path.parent.name)] = int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):  # the thread just exited
            continue
    return times


class CpuClock:
    """A server's CPU seconds between two readings: schedstat when every thread seen at
    the start is still there at the end, the coarser /proc/<pid>/stat otherwise (it
    keeps the time of threads that exited)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tasks = task_cpu_ns(pid)
        self.ticks = process_cpu_seconds(pid)

    def elapsed(self) -> float:
        tasks = task_cpu_ns(self.pid)
        if self.tasks and set(self.tasks) <= set(tasks):
            return sum(ns - self.tasks.get(tid, 0) for tid, ns in tasks.items()) / 1e9
        return process_cpu_seconds(self.pid) - self.ticks


def process_cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) seconds of every thread of `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def process_threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def process_context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every live thread of `pid`."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:  # the thread just exited
            continue
        for line in lines:
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def cpu_split(self) -> tuple[float, float]:
        return process_cpu_split(self.pid)

    def cpu_clock(self) -> CpuClock:
        return CpuClock(self.pid)

    def rss_bytes(self) -> int:
        return process_rss_bytes(self.pid)

    def threads(self) -> int:
        return process_threads(self.pid)

    def context_switches(self) -> int:
        return process_context_switches(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for step in self.cleanup:
            step()


def spawn(
    name: str,
    cmd: list[str],
    port: int,
    log_dir: Path,
    cpus: set[int] | None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    log_path = log_dir / f"{name}-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            preexec_fn=pin_to(cpus),
        )
    return ServerProcess(name=name, proc=proc, port=port, log_path=log_path)


def wait_listening(server: ServerProcess, timeout: float = 20.0) -> ServerProcess:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"{server.name} exited early:\n{server.log()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.name} did not start:\n{server.log()[-3000:]}")


def start_aiosfu(log_dir: Path, cpus: set[int] | None) -> ServerProcess:
    port = free_port()
    cmd = [
        sys.executable, "-m", "aiosfu", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--ice-ip", "127.0.0.1", "--log-level", "warning",
    ]  # fmt: skip
    return wait_listening(spawn("aiosfu", cmd, port, log_dir, cpus))


def start_relay(log_dir: Path, cpus: set[int] | None) -> ServerProcess:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.relay_server", "--port", str(port)]
    return wait_listening(spawn("aiortc-relay", cmd, port, log_dir, cpus))
