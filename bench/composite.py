"""`python -m bench.composite`: what the composite worker costs (docs/composite.md).

A real `aiosfu serve`, N publishers of pre-encoded VP8 640x360 and Opus (busy pictures,
so the decoders and the encoder do real work), and `aiosfu composite --mp4` as a child
process. Measured from outside over a window after a warm-up: the worker's CPU (% of
one core), the server's CPU beside it, and the frames the worker wrote against its clock.
Runs go in order A B B A over the publisher counts' list repeated, medians with min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.servers import CpuClock, start_aiosfu

ROOM = "bench"


async def _publishers(url: str, count: int, clip: Any) -> list[Any]:
    from aiosfu.client import Client
    from bench.media import PreencodedAudioTrack, PreencodedVideoTrack

    clients = []
    for index in range(count):
        client = await Client.connect(url, f"pub-{index}", ice_ips=["127.0.0.1"])
        await client.join(ROOM)
        publication = await client.publish(
            ROOM, [PreencodedAudioTrack(clip), PreencodedVideoTrack(clip)]
        )
        connected = asyncio.Event()
        publication.pc.on(
            "connectionstatechange",
            lambda pc=publication.pc, done=connected: (
                pc.connectionState == "connected" and done.set()
            ),
        )
        if publication.pc.connectionState != "connected":
            async with asyncio.timeout(15):
                await connected.wait()
        clients.append(client)
    return clients


async def run_once(count: int, seconds: float, warmup: float, fps: int, clip: Any) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_aiosfu(Path(tmp), None)
        clients: list[Any] = []
        try:
            clients = await _publishers(server.ws_url, count, clip)
            log = Path(tmp) / "composite.log"
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiosfu", "composite", "--room", ROOM,
                "--server", server.ws_url, "--mp4", str(Path(tmp) / "out.mp4"),
                "--fps", str(fps), "--ice-ip", "127.0.0.1",
                "--duration", str(warmup + seconds + 2),
                stdout=log.open("wb"), stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                while log.read_text().count("composite-subscribed") < count:
                    if worker.returncode is not None:
                        raise RuntimeError(log.read_text())
                    await asyncio.sleep(0.1)
                await asyncio.sleep(warmup)
                worker_cpu, server_cpu = CpuClock(worker.pid), server.cpu_clock()
                started = time.monotonic()
                await asyncio.sleep(seconds)
                wall = time.monotonic() - started
                result = {
                    "publishers": count,
                    "worker_cpu_pct": 100 * worker_cpu.elapsed() / wall,
                    "server_cpu_pct": 100 * server_cpu.elapsed() / wall,
                }
                await asyncio.wait_for(worker.wait(), 60)
            finally:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
            stopped = next(
                line for line in log.read_text().splitlines() if "composite-stopped" in line
            )
            frames = int(stopped.split("frames=")[1].split()[0])
            result["frames"], result["frames_expected"] = frames, int((warmup + seconds + 2) * fps)
            return result
        finally:
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.close()
            server.stop()


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


async def main_async(args: argparse.Namespace) -> list[dict]:
    from bench.media import prepare_clip

    clip = prepare_clip(width=640, height=360, bitrate=800_000)
    counts = [int(c) for c in args.publishers.split(",")]
    order = counts + counts[::-1]  # A B B A
    results = []
    for _ in range(args.runs // 2 or 1):
        for count in order:
            result = await run_once(count, args.seconds, args.warmup, args.fps, clip)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.composite", description=__doc__)
    parser.add_argument("--publishers", default="1,2,4", help="publisher counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=2, help="runs per count (A B B A)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print("\n| publishers | worker CPU, % of a core | server CPU, % | frames written / clock |")
    print("|---|---|---|---|")
    for count in sorted({r["publishers"] for r in results}):
        rows = [r for r in results if r["publishers"] == count]
        frames = sum(r["frames"] for r in rows), sum(r["frames_expected"] for r in rows)
        print(
            f"| {count} | {_spread([r['worker_cpu_pct'] for r in rows])} "
            f"| {_spread([r['server_cpu_pct'] for r in rows])} | {frames[0]} / {frames[1]} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
