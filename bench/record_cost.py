"""What a recorder costs the server: CPU per forwarded packet with and without one.

A measurement, not a test (pytest collects nothing here; speed targets belong in
benchmarks). Run it in a loopback-only namespace:

    unshare --net sh -c 'ip link set lo up && exec .venv/bin/python -m bench.record_cost 8 20'

One publisher sends pre-encoded VP8 (640x360, ~1 Mbit/s, 30 fps) and Opus (bench/media.py,
so the generator encodes nothing); N subscribers count packets without decoding
(bench/probe.py). Server CPU comes from /proc/<pid>/task/<tid>/stat (main thread and
the others, i.e. the recording's writer thread), packets forwarded from GET /stats.
Windows alternate: not recording, recording the publication to WebM, twice.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[tid] = (int(fields[11]) + int(fields[12])) / TICK
    return seconds


def _packets(stats: dict) -> tuple[int, int]:
    sfu = stats["sfu"]
    received = sum(p["packetsIn"] for pub in sfu["publications"].values() for p in pub["producers"])
    forwarded = sum(c["packetsOut"] for s in sfu["subscriptions"].values() for c in s["consumers"])
    return received, forwarded


async def _window(server, seconds: float, label: str) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    main = str(server.pid)
    before, cpu_before = _packets(await server.stats()), _thread_cpu(server.pid)
    await asyncio.sleep(seconds)
    after, cpu_after = _packets(await server.stats()), _thread_cpu(server.pid)
    received, forwarded = after[0] - before[0], after[1] - before[1]
    main_cpu = cpu_after[main] - cpu_before[main]
    other_cpu = sum(v - cpu_before.get(t, 0.0) for t, v in cpu_after.items() if t != main)
    print(
        f"{label:18s} in {received:5d} out {forwarded:6d} packets | "
        f"{1e6 * (main_cpu + other_cpu) / forwarded:6.1f} us per packet forwarded "
        f"(event loop {1e6 * main_cpu / forwarded:6.1f}) | "
        f"writer thread {1e6 * other_cpu / received:5.1f} us per packet recorded",
        flush=True,
    )
    return (main_cpu + other_cpu) / forwarded, main_cpu / forwarded, other_cpu / received


async def measure(subscribers: int, seconds: float) -> None:
    from aiosfu.client import Client
    from bench.media import PreencodedAudioTrack, PreencodedVideoTrack, prepare_clip
    from bench.probe import attach_probes
    from tests.conftest import start_server, stop_server

    tmp = Path(tempfile.mkdtemp())
    clip = prepare_clip(seconds=4.0)
    server = start_server(tmp, "--record-dir", str(tmp / "rec"))
    clients = []
    try:
        teacher = await Client.connect(server.ws_url, "teacher")
        clients.append(teacher)
        await teacher.join("lesson")
        tracks = [PreencodedAudioTrack(clip), PreencodedVideoTrack(clip)]
        publication = await teacher.publish("lesson", tracks)
        for n in range(subscribers):
            client = await Client.connect(server.ws_url, f"student{n}")
            clients.append(client)
            await client.join("lesson")
            subscription = await client.subscribe("lesson", publication.mid)
            attach_probes(subscription.pc, tracks, time.perf_counter())
        await asyncio.sleep(5)
        off, on = [], []
        request = {"rid": "lesson", "mid": publication.mid}
        for _ in range(2):
            off.append(await _window(server, seconds, "not recording"))
            await teacher.request("record", request)
            await asyncio.sleep(3)
            on.append(await _window(server, seconds, "recording"))
            await teacher.request("stop-record", request)
            await asyncio.sleep(2)

        def mean(rows: list[tuple[float, float, float]], i: int) -> float:
            return 1e6 * sum(r[i] for r in rows) / len(rows)

        print(
            f"{subscribers} subscribers: {mean(off, 0):.1f} -> {mean(on, 0):.1f} us per packet "
            f"forwarded (event loop {mean(off, 1):.1f} -> {mean(on, 1):.1f}); "
            f"writer thread {mean(on, 2):.1f} us per packet recorded"
        )
    finally:
        for client in clients:
            await client.close()
        stop_server(server)


if __name__ == "__main__":
    asyncio.run(
        measure(
            int(sys.argv[1]) if len(sys.argv) > 1 else 8,
            float(sys.argv[2]) if len(sys.argv) > 2 else 20.0,
        )
    )
