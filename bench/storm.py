"""`python -m bench.storm`: what a lecture's arrival costs the server.

Two storms, each against a fresh `aiosfu serve` pinned to one core, with the load
generator's clients spread over several processes on the other core, so that the figure
measures the server and not one Python process juggling thousands of sockets:

- **join storm**: N members open a WebSocket and send a seed-002 `join` to one room, their
  arrivals spread evenly over T seconds. Figures: server CPU per join (all of it: the
  HTTP upgrade, the join, every notification it causes), join p50/p99 (request sent →
  response read), notifications delivered. Run with audience mode on (the default
  threshold) and off (`announce_members_up_to = 0`: seed 002's announce-everyone).
- **subscribe storm**: one publisher (pre-encoded VP8 + Opus, no encoder) and S aiortc
  subscribers arriving over T seconds. Figures: time from the `subscribe` request to the
  first keyframe (p50/p99), server CPU per new subscriber (the storm's CPU minus what
  forwarding the packets delivered meanwhile costs at the steady per-packet rate measured
  right after), and whether the subscribers already watching stuttered (their longest gap
  between video frames, and their loss).

The generator reports its own CPU: a run where its processes used most of their core is
marked generator-bound, because then the server may have been waiting for it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import ServerProcess, free_port, spawn, wait_listening

ROOM = "lecture"
# A worker whose CPU over the storm is past this share of its core held the server back.
GENERATOR_BOUND = 0.85


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _cpus() -> tuple[set[int] | None, set[int] | None]:
    """Server on the first core, generator on the others (when there are others)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(log_dir: Path, cpus: set[int] | None, announce_up_to: int) -> ServerProcess:
    config = log_dir / f"storm-{announce_up_to}.toml"
    # No keepalives from the generator: a storm and its hold last well under this.
    config.write_text(f"announce_members_up_to = {announce_up_to}\nkeepalive_timeout = 600\n")
    port = free_port()
    cmd = [
        sys.executable, "-m", "aiosfu", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--ice-ip", "127.0.0.1", "--log-level", "warning", "--config", str(config),
    ]  # fmt: skip
    return wait_listening(spawn("aiosfu", cmd, port, log_dir, cpus))


# --- join storm --------------------------------------------------------------------------


@dataclass
class JoinStorm:
    members: int
    over: float
    announce_up_to: int
    workers: int
    server_cpu_s: float = 0.0
    server_cpu_per_join_ms: float = 0.0
    join_p50_ms: float | None = None
    join_p99_ms: float | None = None
    notifications: int = 0
    failed: int = 0
    generator_cpu_share: float = 0.0  # the busiest worker's CPU over the storm, of a core
    generator_total_cpu_share: float = 0.0  # all workers together, of one core
    arrivals_late_p99_ms: float | None = None  # how late the generator opened sockets
    notes: list[str] = field(default_factory=list)


async def _join_clients(
    url: str, plan: list[tuple[str, float]], t0: float, hold_until: float
) -> dict[str, Any]:
    latencies: list[float] = []
    late: list[float] = []
    counts = {"notifications": 0, "failed": 0}
    connector = aiohttp.TCPConnector(limit=0)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    async with aiohttp.ClientSession(connector=connector) as http:

        async def member(uid: str, offset: float) -> None:
            wait = t0 + offset - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            late.append(max(0.0, time.time() - (t0 + offset)))
            try:
                ws = await http.ws_connect(url, params={"peer": uid}, max_msg_size=0)
            except aiohttp.ClientError:
                counts["failed"] += 1
                return
            sockets.append(ws)
            sent = time.perf_counter()
            await ws.send_str(
                json.dumps({"request": True, "id": 1, "method": "join", "data": {"rid": ROOM}})
            )
            answered = False
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                if frame.get("response") and frame.get("id") == 1:
                    answered = True
                    if frame.get("ok"):
                        latencies.append(time.perf_counter() - sent)
                    else:
                        counts["failed"] += 1
                elif frame.get("notification"):
                    counts["notifications"] += 1
            if not answered:
                counts["failed"] += 1

        tasks = [asyncio.ensure_future(member(uid, offset)) for uid, offset in plan]
        await asyncio.sleep(max(0.0, hold_until - time.time()))
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"latencies": latencies, "late": late, **counts}


def _join_worker(
    url: str,
    plan: list[tuple[str, float]],
    t0: float,
    hold_until: float,
    cpus: set[int] | None,
    out: Connection,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    _raise_fd_limit()
    started = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_join_clients(url, plan, t0, hold_until))
    used = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (used.ru_utime - started.ru_utime) + (used.ru_stime - started.ru_stime)
    out.send(result)
    out.close()


def run_join_storm(
    members: int, over: float, announce_up_to: int, workers: int, log_dir: Path
) -> JoinStorm:
    server_cpus, generator_cpus = _cpus()
    server = start_server(log_dir, server_cpus, announce_up_to)
    storm = JoinStorm(members, over, announce_up_to, workers)
    try:
        t0 = time.time() + 1.5  # every worker is up before the first arrival
        settle = 2.0  # the last notifications and the trailing room-count arrive
        hold_until = t0 + over + settle + members / 2000
        plans: list[list[tuple[str, float]]] = [[] for _ in range(workers)]
        for i in range(members):
            plans[i % workers].append((f"s{i:05d}", over * i / members))
        context = multiprocessing.get_context("fork")
        pipes, processes = [], []
        for plan in plans:
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_join_worker,
                args=(server.ws_url, plan, t0, hold_until, generator_cpus, send),
            )
            process.start()
            pipes.append(receive)
            processes.append(process)
        time.sleep(max(0.0, t0 - 0.2 - time.time()))
        cpu_before = server.cpu_seconds()
        time.sleep(max(0.0, hold_until - 0.1 - time.time()))
        cpu_after = server.cpu_seconds()
        results = [pipe.recv() for pipe in pipes]
        for process in processes:
            process.join(timeout=30)
    finally:
        server.stop()
    latencies = [x for r in results for x in r["latencies"]]
    late = [x for r in results for x in r["late"]]
    window = hold_until - t0
    storm.server_cpu_s = cpu_after - cpu_before
    storm.server_cpu_per_join_ms = storm.server_cpu_s / members * 1000
    storm.join_p50_ms = _ms(_percentile(latencies, 0.5))
    storm.join_p99_ms = _ms(_percentile(latencies, 0.99))
    storm.arrivals_late_p99_ms = _ms(_percentile(late, 0.99))
    storm.notifications = sum(r["notifications"] for r in results)
    storm.failed = sum(r["failed"] for r in results)
    storm.generator_cpu_share = max(r["cpu_s"] for r in results) / window
    storm.generator_total_cpu_share = sum(r["cpu_s"] for r in results) / window
    if storm.generator_total_cpu_share > GENERATOR_BOUND:
        storm.notes.append("generator-bound")
    if storm.failed:
        storm.notes.append(f"{storm.failed} joins failed")
    return storm


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- rendering ---------------------------------------------------------------------------


def join_table(storms: Sequence[JoinStorm]) -> str:
    lines = [
        "| members | over s | audience mode | server CPU s | CPU per join ms | join p50 ms "
        "| join p99 ms | notifications | generator % core | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in storms:
        mode = f"past {s.announce_up_to}" if s.announce_up_to else "off (seed 002)"
        lines.append(
            f"| {s.members} | {s.over:g} | {mode} | {s.server_cpu_s:.2f} "
            f"| {s.server_cpu_per_join_ms:.3f} | {s.join_p50_ms} | {s.join_p99_ms} "
            f"| {s.notifications} | {s.generator_total_cpu_share * 100:.0f} "
            f"| {', '.join(s.notes)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__)
    parser.add_argument(
        "--joins",
        default="1000:10,1000:10:0,5000:30",
        help="join storms as MEMBERS:SECONDS[:ANNOUNCE_UP_TO] (default threshold 100)",
    )
    parser.add_argument("--workers", type=int, default=4, help="generator processes")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    _raise_fd_limit()
    storms: list[JoinStorm] = []
    with tempfile.TemporaryDirectory(prefix="aiosfu-storm-") as tmp:
        for spec in filter(None, args.joins.split(",")):
            parts = spec.split(":")
            members, over = int(parts[0]), float(parts[1])
            announce = int(parts[2]) if len(parts) > 2 else 100
            storm = run_join_storm(members, over, announce, args.workers, Path(tmp))
            print(json.dumps(asdict(storm)), flush=True)
            storms.append(storm)
    print(join_table(storms))
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in storms], indent=2) + "\n")


if __name__ == "__main__":
    main()
