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
import itertools
import json
import multiprocessing
import os
import resource
import signal
import subprocess
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
# After the last join response: the trailing room-count (5 s cadence for the audience).
SETTLE = 6.0


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


@contextlib.contextmanager
def _py_spy(pid: int, output: Path | None) -> Any:
    """Sample the server's Python stacks (collapsed, for flamegraph.pl or sorting)."""
    if output is None:
        yield
        return
    spy = subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
         "--format", "raw", "--output", str(output), "--rate", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)


def start_server(log_dir: Path, cpus: set[int] | None, announce_up_to: int) -> ServerProcess:
    config = log_dir / f"storm-{announce_up_to}.toml"
    # No keepalives from the generator: a storm and its hold last well under this.
    # A lecture hall's worth of members and sockets, past the classroom-sized defaults.
    # Every generated member comes from 127.0.0.1, a class from many addresses: the
    # per-address cap on connections still sending their headers is a class's too.
    config.write_text(
        f"announce_members_up_to = {announce_up_to}\nkeepalive_timeout = 600\n"
        "max_room_members = 20000\nmax_connections = 20000\nmax_peer_connections = 20000\n"
        "http_max_pending_per_ip = 512\n"
    )
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
    server_user_s: float = 0.0  # of server_cpu_s: in the process (Python, C libraries)
    server_sys_s: float = 0.0  # of server_cpu_s: in the kernel (sockets, epoll)
    server_settle_cpu_s: float = 0.0  # of server_cpu_s: after the last join response
    join_p50_ms: float | None = None
    join_p99_ms: float | None = None
    notifications: int = 0
    failed: int = 0
    generator_cpu_share: float = 0.0  # the busiest worker's CPU over the storm, of a core
    generator_total_cpu_share: float = 0.0  # all workers together, of one core
    arrivals_late_p99_ms: float | None = None  # how late the generator opened sockets
    notes: list[str] = field(default_factory=list)


async def _join_clients(
    url: str, plan: list[tuple[str, float]], t0: float, answered: Any, release: Any
) -> dict[str, Any]:
    """Every member joins at its time and holds its socket until `release`; `answered`
    is set once every member has its join response (or has failed)."""
    latencies: list[float] = []
    late: list[float] = []
    counts = {"notifications": 0, "failed": 0}
    settled = [0]

    def settle_one() -> None:
        settled[0] += 1
        if settled[0] == len(plan):
            answered.set()

    connector = aiohttp.TCPConnector(limit=0)
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    holding = True
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
                settle_one()
                return
            sockets.append(ws)
            if not holding:  # connected after the hold ended: nobody would close it
                await ws.close()
                counts["failed"] += 1
                settle_one()
                return
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
                    settle_one()
                    if frame.get("ok"):
                        latencies.append(time.perf_counter() - sent)
                    else:
                        counts["failed"] += 1
                elif frame.get("notification"):
                    counts["notifications"] += 1
            if not answered:
                counts["failed"] += 1
                settle_one()

        tasks = [asyncio.ensure_future(member(uid, offset)) for uid, offset in plan]
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        holding = False
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        _, late_ones = await asyncio.wait(tasks, timeout=30)
        for task in late_ones:  # still connecting: a server that stopped answering
            task.cancel()
            counts["failed"] += 1
    return {"latencies": latencies, "late": late, **counts}


def _join_worker(
    url: str,
    plan: list[tuple[str, float]],
    t0: float,
    events: tuple[Any, Any],
    cpus: set[int] | None,
    out: Connection,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    _raise_fd_limit()
    started = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_join_clients(url, plan, t0, *events))
    used = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (used.ru_utime - started.ru_utime) + (used.ru_stime - started.ru_stime)
    out.send(result)
    out.close()


def run_join_storm(
    members: int,
    over: float,
    announce_up_to: int,
    workers: int,
    log_dir: Path,
    profile: Path | None = None,
) -> JoinStorm:
    server_cpus, generator_cpus = _cpus()
    server = start_server(log_dir, server_cpus, announce_up_to)
    storm = JoinStorm(members, over, announce_up_to, workers)
    try:
        t0 = time.time() + 1.5  # every worker is up before the first arrival
        plans: list[list[tuple[str, float]]] = [[] for _ in range(workers)]
        for i in range(members):
            plans[i % workers].append((f"s{i:05d}", over * i / members))
        context = multiprocessing.get_context("fork")
        release = context.Event()
        pipes, processes, answered = [], [], []
        for plan in plans:
            receive, send = context.Pipe(duplex=False)
            done = context.Event()
            process = context.Process(
                target=_join_worker,
                args=(server.ws_url, plan, t0, (done, release), generator_cpus, send),
            )
            process.start()
            pipes.append(receive)
            processes.append(process)
            answered.append(done)
        time.sleep(max(0.0, t0 - 0.2 - time.time()))
        with _py_spy(server.pid, profile):
            split_before = server.cpu_split()
            # The window ends once every join is answered (however far behind a loaded
            # server fell) and the trailing head counts have gone out, not at a fixed time.
            for done in answered:
                done.wait(timeout=max(1.0, t0 + over + 120 - time.time()))
            settle_from = server.cpu_seconds()
            time.sleep(SETTLE)
            split_after = server.cpu_split()
        hold_until = time.time()
        release.set()
        results = [pipe.recv() for pipe in pipes]
        for process in processes:
            process.join(timeout=30)
    finally:
        server.stop()
    latencies = [x for r in results for x in r["latencies"]]
    late = [x for r in results for x in r["late"]]
    window = hold_until - t0
    storm.server_user_s = split_after[0] - split_before[0]
    storm.server_sys_s = split_after[1] - split_before[1]
    storm.server_cpu_s = storm.server_user_s + storm.server_sys_s
    storm.server_settle_cpu_s = sum(split_after) - settle_from
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


# --- subscribe storm ---------------------------------------------------------------------


@dataclass
class SubscribeStorm:
    subscribers: int
    over: float
    workers: int
    video: str = ""
    watching_before: int = 0
    connected: int = 0
    answer_p50_ms: float | None = None  # subscribe request → SDP answer
    answer_p99_ms: float | None = None
    first_packet_p50_ms: float | None = None  # → first RTP packet (ICE + DTLS done)
    first_packet_p99_ms: float | None = None
    first_keyframe_p50_ms: float | None = None
    first_keyframe_p99_ms: float | None = None
    first_keyframe_max_ms: float | None = None
    server_cpu_storm_s: float = 0.0
    server_cpu_per_packet_us: float = 0.0  # steady forwarding, right after the storm
    server_cpu_per_subscriber_ms: float = 0.0
    keyframe_requests: int = 0  # what reached the publisher during the storm
    signaling_rtt_p99_ms: float | None = None  # a keepalive every 100 ms during the storm
    signaling_rtt_max_ms: float | None = None
    watchers_longest_gap_ms: float | None = None  # between video frames, during the storm
    publisher_longest_gap_ms: float | None = None  # between frames the publisher sent
    watchers_loss_pct: float | None = None
    generator_total_cpu_share: float = 0.0
    notes: list[str] = field(default_factory=list)


class _VideoProbe:
    """First packet and keyframe, frame gaps and loss, before any jitter buffer."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.first_keyframe_at: float | None = None
        self.answered_at: float | None = None
        self.packets: list[float] = []  # arrival times (time.time), for the windows
        self.frame_times: list[float] = []
        self.seqs: list[int] = []

    async def handle(self, packet: Any, arrival_time_ms: int = 0) -> None:
        from aiosfu.sfu.codecs import vp8_is_keyframe

        now = time.time()
        self.packets.append(now)
        self.seqs.append(packet.sequence_number)
        if self.first_keyframe_at is None and vp8_is_keyframe(packet.payload):
            self.first_keyframe_at = now
        if packet.marker:
            self.frame_times.append(now)


def _seq_loss(seqs: list[int]) -> tuple[int, int]:
    """(expected, received) from a list of 16-bit sequence numbers in arrival order."""
    if not seqs:
        return 0, 0
    highest = first = seqs[0]
    for seq in seqs[1:]:
        delta = (seq - (highest & 0xFFFF)) & 0xFFFF
        if delta < 0x8000:
            highest += delta
    return highest - first + 1, len(set(seqs))


async def _subscribers(
    url: str, mid: str, plan: list[tuple[str, float]], t0: float, storm_end: float, end: float
) -> dict[str, Any]:
    from aiosfu.client import Client

    results: list[dict[str, Any]] = []
    clients: list[Any] = []

    async def one(uid: str, offset: float) -> None:
        wait = t0 + offset - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        client = await Client.connect(url, uid, ice_ips=["127.0.0.1"], keepalive_interval=5)
        clients.append(client)
        await client.join(ROOM)
        started = time.time()
        subscription = await client.subscribe(ROOM, mid, kinds=("video",))
        probe = _VideoProbe(started)
        probe.answered_at = time.time()
        for transceiver in subscription.pc.getTransceivers():
            transceiver.receiver._handle_rtp_packet = probe.handle  # bench-only aiortc touch
        await asyncio.sleep(max(0.0, end - time.time()))
        in_storm = [p for p in probe.packets if p < storm_end]
        gaps = [
            b - a
            for a, b in zip(probe.frame_times, probe.frame_times[1:], strict=False)
            if t0 <= b <= storm_end
        ]
        storm_seqs = [s for s, at in zip(probe.seqs, probe.packets, strict=True) if at < storm_end]
        expected, received = _seq_loss(storm_seqs)
        results.append(
            {
                "offset": offset,
                "first_keyframe": None
                if probe.first_keyframe_at is None
                else probe.first_keyframe_at - started,
                "answer": probe.answered_at - started if probe.answered_at else None,
                "first_packet": probe.packets[0] - started if probe.packets else None,
                "packets_storm": len(in_storm),
                "packets_after": len(probe.packets) - len(in_storm),
                "longest_gap": max(gaps) if gaps else None,
                "expected": expected,
                "received": received,
            }
        )

    tasks = [asyncio.ensure_future(one(uid, offset)) for uid, offset in plan]
    done = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [repr(x) for x in done if isinstance(x, BaseException)]
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
    return {"subscribers": results, "errors": errors}


def _subscribe_worker(
    url: str,
    mid: str,
    plan: list[tuple[str, float]],
    times: tuple[float, float, float],
    cpus: set[int] | None,
    out: Connection,
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    _raise_fd_limit()
    started = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_subscribers(url, mid, plan, *times))
    used = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (used.ru_utime - started.ru_utime) + (used.ru_stime - started.ru_stime)
    out.send(result)
    out.close()


async def _publish(url: str, clip: Any, sent: list[float]) -> tuple[Any, Any, list[int]]:
    """The teacher; `sent` gets the time each video frame left its track, so that the
    watchers' gaps can be told from the publisher's own (it shares the generator's core)."""
    from aiosfu.client import Client
    from bench.media import PreencodedAudioTrack, PreencodedVideoTrack

    requests: list[int] = []
    client = await Client.connect(url, "teacher", ice_ips=["127.0.0.1"], keepalive_interval=5)
    await client.join(ROOM)
    audio, video = PreencodedAudioTrack(clip), PreencodedVideoTrack(clip)
    next_frame = video.recv

    async def timed_recv() -> Any:
        frame = await next_frame()
        sent.append(time.time())
        return frame

    video.recv = timed_recv  # type: ignore[method-assign]
    publication = await client.publish(ROOM, [audio, video])
    for sender in publication.pc.getSenders():
        if sender.track is video:
            # A PLI/FIR makes aiortc call this; the clip jumps to its next keyframe.
            def keyframe(video: Any = video) -> None:
                requests.append(1)
                video.request_keyframe()

            sender._send_keyframe = keyframe  # bench-only aiortc touch
    connected = asyncio.Event()

    def on_state() -> None:
        if publication.pc.connectionState == "connected":
            connected.set()

    publication.pc.on("connectionstatechange", on_state)
    on_state()
    async with asyncio.timeout(15):
        await connected.wait()
    return client, publication, requests


def run_subscribe_storm(
    subscribers: int,
    over: float,
    workers: int,
    watching: int,
    log_dir: Path,
    profile: Path | None = None,
) -> SubscribeStorm:
    """The publisher runs in a thread of this process's event loop; subscribers in workers."""
    from bench.media import prepare_clip

    server_cpus, generator_cpus = _cpus()
    if generator_cpus:
        os.sched_setaffinity(0, generator_cpus)
    clip = prepare_clip(seconds=4, width=320, height=180, bitrate=250_000)
    storm = SubscribeStorm(subscribers, over, workers, video="VP8 320x180 250 kbps 30 fps")
    storm.watching_before = watching
    server = start_server(log_dir, server_cpus, 100)

    async def drive() -> None:
        frames_sent: list[float] = []
        client, publication, requests = await _publish(server.ws_url, clip, frames_sent)
        context = multiprocessing.get_context("spawn")
        t_watch = time.time() + 4.0  # workers take a few seconds to start (spawn)
        t0 = t_watch + 3.0  # the watchers are flowing before the storm
        storm_end = t0 + over + 3.0  # the last arrival has had time to start
        steady = 5.0
        end = storm_end + steady
        plans: list[list[tuple[str, float]]] = [[] for _ in range(workers)]
        # The watchers get a process of their own: a worker busy setting up newcomers
        # (its own SDP, ICE, DTLS and collections) would delay the frames it reads, and
        # the gap measured would be the generator's.
        plans.append([(f"w{i:03d}", t_watch - t0 + 0.1 * i) for i in range(watching)])
        for i in range(subscribers):
            plans[i % workers].append((f"s{i:04d}", over * i / subscribers))
        pipes, processes = [], []
        for plan in plans:
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_subscribe_worker,
                args=(server.ws_url, publication.mid, plan, (t0, storm_end, end), generator_cpus,
                      send),
            )  # fmt: skip
            process.start()
            pipes.append(receive)
            processes.append(process)
        await asyncio.sleep(max(0.0, t0 - time.time()))
        cpu0, requests0 = server.cpu_seconds(), len(requests)
        rtts: list[float] = []
        while time.time() < storm_end:
            sent = time.perf_counter()
            await client.request("keepalive", {"rid": ROOM})
            rtts.append(time.perf_counter() - sent)
            await asyncio.sleep(0.1)
        cpu1, requests1 = server.cpu_seconds(), len(requests)
        storm.signaling_rtt_p99_ms = _ms(_percentile(rtts, 0.99))
        storm.signaling_rtt_max_ms = _ms(max(rtts) if rtts else None)
        await asyncio.sleep(max(0.0, end - 0.2 - time.time()))
        cpu2 = server.cpu_seconds()
        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        for process in processes:
            process.join(timeout=30)
        await client.close()
        subs = [r for result in results for r in result["subscribers"]]
        errors = [e for result in results for e in result["errors"]]
        newcomers = [r for r in subs if r["offset"] >= 0]
        watchers = [r for r in subs if r["offset"] < 0]
        keyframes = [r["first_keyframe"] for r in newcomers if r["first_keyframe"] is not None]
        storm.connected = len(keyframes)
        answers = [r["answer"] for r in newcomers if r["answer"] is not None]
        firsts = [r["first_packet"] for r in newcomers if r["first_packet"] is not None]
        storm.answer_p50_ms = _ms(_percentile(answers, 0.5))
        storm.answer_p99_ms = _ms(_percentile(answers, 0.99))
        storm.first_packet_p50_ms = _ms(_percentile(firsts, 0.5))
        storm.first_packet_p99_ms = _ms(_percentile(firsts, 0.99))
        storm.first_keyframe_p50_ms = _ms(_percentile(keyframes, 0.5))
        storm.first_keyframe_p99_ms = _ms(_percentile(keyframes, 0.99))
        storm.first_keyframe_max_ms = _ms(max(keyframes) if keyframes else None)
        storm.keyframe_requests = requests1 - requests0
        packets_storm = sum(r["packets_storm"] for r in subs)
        packets_after = sum(r["packets_after"] for r in subs)
        storm.server_cpu_storm_s = cpu1 - cpu0
        per_packet = (cpu2 - cpu1) / packets_after if packets_after else 0.0
        storm.server_cpu_per_packet_us = per_packet * 1e6
        setup = storm.server_cpu_storm_s - per_packet * packets_storm
        storm.server_cpu_per_subscriber_ms = setup / subscribers * 1000
        gaps = [r["longest_gap"] for r in watchers if r["longest_gap"] is not None]
        storm.watchers_longest_gap_ms = _ms(max(gaps) if gaps else None)
        sends = [b - a for a, b in itertools.pairwise(frames_sent) if t0 <= b <= storm_end]
        storm.publisher_longest_gap_ms = _ms(max(sends) if sends else None)
        expected = sum(r["expected"] for r in watchers)
        received = sum(r["received"] for r in watchers)
        if expected:
            storm.watchers_loss_pct = round(100 * (expected - received) / expected, 2)
        window = end - t_watch
        storm.generator_total_cpu_share = sum(r["cpu_s"] for r in results) / window
        if storm.generator_total_cpu_share > GENERATOR_BOUND:
            storm.notes.append("generator-bound")
        if errors:
            storm.notes.append(f"{len(errors)} subscribers failed: {errors[0][:120]}")
        if storm.connected < subscribers:
            storm.notes.append(f"{subscribers - storm.connected} never got a keyframe")

    try:
        with _py_spy(server.pid, profile):
            asyncio.run(drive())
    finally:
        server.stop()
    return storm


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


def subscribe_table(storms: Sequence[SubscribeStorm]) -> str:
    lines = [
        "| subscribers | over s | video | got a keyframe | 1st keyframe p50 ms | p99 ms "
        "| max ms | server CPU per new subscriber ms | forwarding µs/pkt | keyframe requests "
        "| watchers' longest frame gap ms | publisher's longest send gap ms | watchers' loss % "
        "| signaling RTT max ms | generator % core | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in storms:
        lines.append(
            f"| {s.subscribers} | {s.over:g} | {s.video} | {s.connected} "
            f"| {s.first_keyframe_p50_ms} | {s.first_keyframe_p99_ms} | {s.first_keyframe_max_ms} "
            f"| {s.server_cpu_per_subscriber_ms:.1f} | {s.server_cpu_per_packet_us:.1f} "
            f"| {s.keyframe_requests} | {s.watchers_longest_gap_ms} "
            f"| {s.publisher_longest_gap_ms} | {s.watchers_loss_pct} "
            f"| {s.signaling_rtt_max_ms} "
            f"| {s.generator_total_cpu_share * 100:.0f} | {', '.join(s.notes)} |"
        )
    return "\n".join(lines)


BEGIN, END = "<!-- storm:begin -->", "<!-- storm:end -->"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def write_benchmarks(
    joins: Sequence[JoinStorm],
    subscribes: Sequence[SubscribeStorm],
    command: str,
    load: tuple[float, float, float],
) -> None:
    """Replace the generated storm block of BENCHMARKS.md (appended the first time)."""
    body = "\n".join(
        [
            BEGIN,
            f"Command: `{command}` (inside a loopback-only namespace; `make bench` runs it)  ",
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{os.cpu_count()} cores; server on one core, generator processes on the other; "
            f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (the machine is shared: a load past the "
            "core count means the server waited for a core, and latencies show it)",
            "",
            "Join storms:",
            "",
            join_table(joins),
            "",
            "Subscribe storm:",
            "",
            subscribe_table(subscribes),
            END,
        ]
    )
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + body + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Large rooms (`bench/storm.py`)\n\n" + body + "\n"
    BENCHMARKS.write_text(text)


def _profile_path(prefix: Path | None, name: str) -> Path | None:
    return None if prefix is None else prefix.with_name(f"{prefix.name}-{name}.txt")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__)
    parser.add_argument(
        "--joins",
        default="1000:10,1000:10:0,5000:30",
        help="join storms as MEMBERS:SECONDS[:ANNOUNCE_UP_TO] (default threshold 100)",
    )
    parser.add_argument(
        "--subscribes",
        default="300:30",
        help="subscribe storms as SUBSCRIBERS:SECONDS ('' for none)",
    )
    parser.add_argument("--workers", type=int, default=4, help="generator processes")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="PREFIX",
        help="py-spy the server over each storm: PREFIX-join-N.txt, PREFIX-subscribe-N.txt",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--write", action="store_true", help="update the storm section of BENCHMARKS.md"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()
    _raise_fd_limit()
    storms: list[JoinStorm] = []
    with tempfile.TemporaryDirectory(prefix="aiosfu-storm-") as tmp:
        for spec in filter(None, args.joins.split(",")):
            parts = spec.split(":")
            members, over = int(parts[0]), float(parts[1])
            announce = int(parts[2]) if len(parts) > 2 else 100
            spy = _profile_path(args.profile, f"join-{members}")
            storm = run_join_storm(members, over, announce, args.workers, Path(tmp), spy)
            print(json.dumps(asdict(storm)), flush=True)
            storms.append(storm)
        subscribes: list[SubscribeStorm] = []
        for spec in filter(None, args.subscribes.split(",")):
            count, over = spec.split(":")
            sub = run_subscribe_storm(
                int(count),
                float(over),
                args.workers,
                5,
                Path(tmp),
                _profile_path(args.profile, f"subscribe-{count}"),
            )
            print(json.dumps(asdict(sub)), flush=True)
            subscribes.append(sub)
    print(join_table(storms))
    print()
    print(subscribe_table(subscribes))
    if args.write:
        command = " ".join(["python -m bench.storm", *(argv or [])])
        write_benchmarks(storms, subscribes, command, load)
    if args.json:
        payload = {
            "joins": [asdict(s) for s in storms],
            "subscribes": [asdict(s) for s in subscribes],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
