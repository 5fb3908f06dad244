"""One scenario against one server: start it, connect publishers and subscribers, wait
until media flows, measure a fixed window, tear everything down.

Every figure comes from one window on one clock: the server's CPU time from /proc, the
publishers' packet counters, and the subscribers' probes (see probe.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCPeerConnection

from aiosfu.client import Client
from aiosfu.sfu.ice import use_host_addresses
from bench.janus import JanusDriver, start_janus, start_janus_default
from bench.media import Clip, PacedTrack, PreencodedAudioTrack, PreencodedVideoTrack
from bench.probe import StreamProbe, attach_probes
from bench.servers import (
    ServerProcess,
    process_cpu_seconds,
    start_aiosfu,
    start_relay,
)

ROOM = "bench"
GENERATOR_BOUND_PERCENT = 85.0
READ_BEHIND_PERCENT = 90.0

SERVERS: dict[str, Callable[[Path, set[int] | None], ServerProcess]] = {
    "aiosfu": start_aiosfu,
    "janus": start_janus,  # event_loops = 1: the baseline
    "janus-default": start_janus_default,
    "aiortc-relay": start_relay,
}


@dataclass(frozen=True)
class Scenario:
    name: str
    publishers: int
    subscribers: int  # per publisher
    mesh: bool = False

    @property
    def subscriptions(self) -> int:
        return self.publishers * self.subscribers


def one_to_many(n: int) -> Scenario:
    return Scenario(f"1v{n}", 1, n)


def mesh(n: int) -> Scenario:
    return Scenario(f"{n}v{n}", n, n - 1, mesh=True)


@dataclass
class Result:
    server: str
    scenario: Scenario
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    order: int | None = None  # position in its scenario's sequence of runs (0 first)
    pair: int | None = None  # which A/B pair it belongs to (None: a reference run)
    floor_us: float | None = None  # the sendto floor measured just before its pair


class Participant(Protocol):
    async def publish(
        self, tracks: Sequence[MediaStreamTrack]
    ) -> tuple[str, RTCPeerConnection]: ...

    async def subscribe(self, handle: str) -> RTCPeerConnection: ...

    async def close(self) -> None: ...


class Driver(Protocol):
    async def start(self) -> None: ...

    async def join(self, uid: str) -> Participant: ...

    async def close(self) -> None: ...


class ProtocolParticipant:
    """A participant over our signaling protocol (our server and the relay baseline)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def publish(self, tracks: Sequence[MediaStreamTrack]) -> tuple[str, RTCPeerConnection]:
        publication = await self.client.publish(ROOM, tracks)
        return publication.mid, publication.pc

    async def subscribe(self, handle: str) -> RTCPeerConnection:
        return (await self.client.subscribe(ROOM, handle)).pc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()


class ProtocolDriver:
    def __init__(self, server: ServerProcess) -> None:
        self.url = server.ws_url

    async def start(self) -> None:
        pass

    async def join(self, uid: str) -> ProtocolParticipant:
        client = await Client.connect(self.url, uid, ice_ips=["127.0.0.1"])
        await client.join(ROOM)
        return ProtocolParticipant(client)

    async def close(self) -> None:
        pass


def make_driver(server: ServerProcess) -> Driver:
    # Every peer connection of the generator gathers on loopback only.
    use_host_addresses(["127.0.0.1"])
    if server.name.startswith("janus"):
        return JanusDriver(server)
    return ProtocolDriver(server)


@dataclass
class Publisher:
    participant: Participant
    handle: str
    pc: RTCPeerConnection
    tracks: list[PacedTrack]


@dataclass
class Subscription:
    publisher: Publisher
    started_at: float
    probes: list[StreamProbe]

    @property
    def video(self) -> StreamProbe | None:
        return next((p for p in self.probes if p.kind == "video"), None)


async def packets_sent(publishers: Sequence[Publisher]) -> dict[int, int]:
    """RTP packets each publisher has sent so far (all its tracks), by id(publisher)."""
    counts = {}
    for publisher in publishers:
        total = 0
        for sender in publisher.pc.getSenders():
            report = await sender.getStats()
            total += sum(
                getattr(s, "packetsSent", 0) for s in report.values() if s.type == "outbound-rtp"
            )
        counts[id(publisher)] = total
    return counts


def udp_counters() -> dict[str, int]:
    """This network namespace's UDP counters (/proc/net/snmp). The benchmark runs in a
    namespace of its own, so they count the generator's and the server's datagrams only."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    names, values = (line[1:] for line in lines if line and line[0] == "Udp:")
    return dict(zip(names, map(int, values), strict=True))


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def _publish(participant: Participant, clip: Clip) -> Publisher:
    audio, video = PreencodedAudioTrack(clip), PreencodedVideoTrack(clip)
    handle, pc = await participant.publish([audio, video])
    for sender in pc.getSenders():
        if sender.track is video:
            # A PLI/FIR from the server makes aiortc call this; the clip has no encoder
            # to force, so the track jumps to its next keyframe instead.
            sender._send_keyframe = video.request_keyframe  # type: ignore[method-assign]
    # Some servers (Janus) offer a feed to subscribers only once its media is up.
    async with asyncio.timeout(15):
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise ConnectionError(f"publisher connection {pc.connectionState}")
            await asyncio.sleep(0.02)
    return Publisher(participant, handle, pc, [audio, video])


async def _subscribe(
    participant: Participant, publisher: Publisher, limit: asyncio.Semaphore
) -> Subscription:
    async with limit:
        started_at = time.perf_counter()
        pc = await participant.subscribe(publisher.handle)
        return Subscription(publisher, started_at, attach_probes(pc, publisher.tracks, started_at))


async def _wait_flowing(subscriptions: Sequence[Subscription], timeout: float) -> int:
    """Wait until every subscription has had a keyframe; the count still waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = sum(
            1 for s in subscriptions if s.video is None or s.video.first_keyframe_at is None
        )
        if not waiting:
            return 0
        await asyncio.sleep(0.05)
    return sum(1 for s in subscriptions if s.video is None or s.video.first_keyframe_at is None)


async def _start_py_spy(
    server: ServerProcess, out: Path | None, duration: float
) -> asyncio.subprocess.Process | None:
    """py-spy sampling the server's Python stacks over the measured window (raw format:
    one line per distinct stack with its sample count; see bench/profile.py)."""
    if out is None:
        return None
    py_spy = Path(sys.executable).with_name("py-spy")
    return await asyncio.create_subprocess_exec(
        str(py_spy), "record", "--pid", str(server.pid), "--duration", str(int(duration)),
        "--rate", "1000", "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _idle_cpu_percent(
    server: ServerProcess, publishers: Sequence[Publisher], seconds: float = 2.0
) -> float:
    """The server's CPU with every connection up but no media: what connections cost
    (timers, RTCP, keepalives) before a single packet is forwarded."""
    tracks = [t for p in publishers for t in p.tracks]
    for track in tracks:
        track.paused = True
    await asyncio.sleep(0.3)
    clock, started = server.cpu_clock(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = clock.elapsed(), time.perf_counter() - started
    for track in tracks:
        track.paused = False
    await asyncio.sleep(0.5)
    return 100 * cpu / wall


async def measure(
    server: ServerProcess,
    scenario: Scenario,
    clip: Clip,
    duration: float,
    warmup: float = 1.0,
    ready_timeout: float = 20.0,
    profile: Path | None = None,
) -> Result:
    result = Result(server.name, scenario)
    driver = make_driver(server)
    participants: list[Participant] = []
    try:
        await driver.start()
        publishers: list[Publisher] = []
        plan: list[tuple[Participant, Publisher]] = []
        if scenario.mesh:
            for i in range(scenario.publishers):
                participants.append(await driver.join(f"m{i}"))
            publishers = list(await asyncio.gather(*(_publish(p, clip) for p in participants)))
            plan = [
                (participants[i], publishers[j])
                for i in range(scenario.publishers)
                for j in range(scenario.publishers)
                if i != j
            ]
        else:
            for p in range(scenario.publishers):
                owner = await driver.join(f"p{p}")
                participants.append(owner)
                publishers.append(await _publish(owner, clip))
            for publisher in publishers:
                for s in range(scenario.subscribers):
                    viewer = await driver.join(f"s{len(participants)}-{s}")
                    participants.append(viewer)
                    plan.append((viewer, publisher))
        limit = asyncio.Semaphore(8)
        subscriptions = list(await asyncio.gather(*(_subscribe(p, pub, limit) for p, pub in plan)))
        waiting = await _wait_flowing(subscriptions, ready_timeout)
        if waiting:
            result.notes.append(f"{waiting} of {len(subscriptions)} never got a keyframe")
        await asyncio.sleep(warmup)
        idle_percent = await _idle_cpu_percent(server, publishers, min(1.5, duration))

        probes = [probe for s in subscriptions for probe in s.probes]
        frames_before = {id(p): p.tracks[1].sent for p in publishers}
        sent_before = await packets_sent(publishers)
        udp_before = udp_counters()
        switches_before = server.context_switches()
        _, system_before = server.cpu_split()
        cpu_clock = server.cpu_clock()
        own_before = process_cpu_seconds(os.getpid())
        wall_before = time.perf_counter()
        for probe in probes:
            probe.start_window()
        sampler = await _start_py_spy(server, profile, duration)
        await asyncio.sleep(duration)
        if sampler is not None:
            await sampler.wait()
        for probe in probes:
            probe.stop_window()
        wall = time.perf_counter() - wall_before
        cpu = cpu_clock.elapsed()
        _, system_after = server.cpu_split()
        switches = server.context_switches() - switches_before
        system = system_after - system_before  # in ticks: the kernel's share, roughly
        own = process_cpu_seconds(os.getpid()) - own_before
        udp_after = udp_counters()
        sent_after = await packets_sent(publishers)
        sent = {key: sent_after[key] - sent_before[key] for key in sent_after}
        # The server's datagrams out: every UDP datagram sent in the namespace less the
        # publishers' RTP (the generator's RTCP and STUN, about 1% at most, stay in).
        udp = {key: udp_after[key] - udp_before[key] for key in udp_after}
        server_out = max(0, udp["OutDatagrams"] - sum(sent.values()))
        frames = {id(p): p.tracks[1].sent - frames_before[id(p)] for p in publishers}
        rss = server.rss_bytes()
        result.figures = summarize(
            subscriptions, probes, frames, sent, server_out, cpu, own, wall, rss
        )
        result.figures["udp_drops_per_s"] = udp["RcvbufErrors"] / wall
        result.figures["cpu_system_percent"] = 100 * system / wall
        result.figures["idle_cpu_percent"] = idle_percent
        result.figures["context_switches_per_s"] = switches / wall
        result.figures["threads"] = server.threads()
        if result.figures["generator_cpu_percent"] >= GENERATOR_BOUND_PERCENT:
            result.notes.append("generator-bound: its own CPU was near one core")
        read = result.figures["received_in_window_percent"]
        if read is not None and read < READ_BEHIND_PERCENT:
            result.notes.append(
                f"read behind: {read:.0f}% of the window's packets read in it (late, not "
                "lost; its latency and frames % show a backlog)"
            )
    except Exception as exc:  # a baseline that falls over is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        for participant in participants:
            await participant.close()
        with contextlib.suppress(Exception):
            await driver.close()
    return result


def summarize(
    subscriptions: Sequence[Subscription],
    probes: Sequence[StreamProbe],
    frames_sent: dict[int, int],
    sent_by: dict[int, int],
    server_out: int,
    cpu: float,
    own: float,
    wall: float,
    rss: int,
) -> dict[str, Any]:
    received = sum(p.packets for p in probes)
    expected = sum(p.expected for p in probes)
    sent = sum(sent_by.values())
    loss = max(0, expected - received) / expected if expected else 0.0
    # Per forwarded packet is over the datagrams the server sent in the window, not over
    # what the subscribers read in it: a generator starved of CPU by other work reads
    # late (without loss), a starved server forwards late; either way the window's CPU
    # goes with the window's datagrams.
    fanout = len(subscriptions) / len(sent_by) if sent_by else 0
    inbound_forwarded = server_out / fanout if fanout else 0
    video = [s.video for s in subscriptions if s.video is not None]
    latencies = [x for p in video for x in p.latencies]
    first_packet = [
        (p.first_packet_at - p.started_at) * 1000 for p in video if p.first_packet_at is not None
    ]
    first_keyframe = [
        (p.first_keyframe_at - p.started_at) * 1000
        for p in video
        if p.first_keyframe_at is not None
    ]
    frames_expected = sum(frames_sent[id(s.publisher)] for s in subscriptions)
    cpu_us = cpu * 1e6
    return {
        "cpu_us_per_packet_in": cpu_us / inbound_forwarded if inbound_forwarded else None,
        "cpu_us_per_packet_out": cpu_us / server_out if server_out else None,
        "cpu_percent": 100 * cpu / wall,
        "pps_in": sent / wall,
        "server_pps_out": server_out / wall,
        "pps_out": received / wall,
        "received_in_window_percent": 100 * received / server_out if server_out else None,
        "loss_percent": 100 * loss if expected else None,
        "frames_delivered_percent": (
            100 * sum(p.frames for p in video) / frames_expected if frames_expected else None
        ),
        "latency_p50_ms": _ms(_percentile(latencies, 0.5)),
        "latency_p99_ms": _ms(_percentile(latencies, 0.99)),
        "first_packet_ms": statistics.median(first_packet) if first_packet else None,
        "first_keyframe_ms": statistics.median(first_keyframe) if first_keyframe else None,
        "first_keyframe_max_ms": max(first_keyframe) if first_keyframe else None,
        "rss_mb": rss / 2**20,
        "generator_cpu_percent": 100 * own / wall,
        "subscriptions": len(subscriptions),
        "subscriptions_flowing": sum(1 for p in video if p.packets),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def run_one(
    server_name: str,
    scenario: Scenario,
    clip: Clip,
    duration: float,
    log_dir: Path,
    server_cpus: set[int] | None,
    profile_dir: Path | None = None,
) -> Result:
    try:
        server = await asyncio.to_thread(SERVERS[server_name], log_dir, server_cpus)
    except Exception as exc:
        return Result(server_name, scenario, error=f"did not start: {exc}")
    profile = None
    if profile_dir is not None and not server.name.startswith("janus"):
        profile = profile_dir / f"{server.name}-{scenario.name}.txt"
    try:
        return await measure(server, scenario, clip, duration, profile=profile)
    finally:
        await asyncio.to_thread(server.stop)
