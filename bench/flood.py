"""`python -m bench.flood`: does one abusive socket slow everyone else down?

Against a fresh `aiosfu serve`: `idle` WebSockets connect and say nothing, one socket
sends requests as fast as it can (reading the answers, so it is not dropped as a slow
reader), and a well-behaved member sends a `keepalive` every 10 ms. Figures: the
member's request latency (p50, p99, max), how many of the flood's requests were
answered `rate-limited`, and the server's CPU. tests/test_limits_flood.py runs a small
one and asserts only that every request of the member was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def flood(ws_url: str, idle: int = 500, seconds: float = 5.0) -> dict[str, Any]:
    # No connection pool limit: aiohttp's default of 100 would hold the rest back.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        sockets = [await http.ws_connect(f"{ws_url}?peer=idle{i}") for i in range(idle)]
        member = await http.ws_connect(f"{ws_url}?peer=member")
        await member.send_json({"request": True, "id": 0, "method": "join", "data": {"rid": "c"}})
        assert (await member.receive_json())["ok"]
        attacker = await http.ws_connect(f"{ws_url}?peer=attacker", max_msg_size=0)
        stop = time.monotonic() + seconds
        codes: dict[str, int] = {}

        async def send_flood() -> int:
            sent = 0
            while time.monotonic() < stop:
                frame = {"request": True, "id": sent, "method": "keepalive", "data": {"rid": "x"}}
                try:
                    await attacker.send_str(json.dumps(frame))
                except (ConnectionError, RuntimeError):  # the server dropped it
                    break
                sent += 1
                if sent % 50 == 0:
                    await asyncio.sleep(0)
            return sent

        async def read_flood() -> None:
            async for message in attacker:
                code = json.loads(message.data).get("errorCode", "ok")
                codes[code] = codes.get(code, 0) + 1

        async def behave() -> list[float]:
            latencies = []
            request_id = 1
            while time.monotonic() < stop:
                started = time.monotonic()
                frame = {"request": True, "id": request_id, "method": "keepalive",
                         "data": {"rid": "c"}}  # fmt: skip
                await member.send_str(json.dumps(frame))
                reply = await asyncio.wait_for(member.receive_json(), 10)
                assert reply["ok"] and reply["id"] == request_id, reply
                latencies.append((time.monotonic() - started) * 1000)
                request_id += 1
                await asyncio.sleep(0.01)
            return latencies

        reader = asyncio.ensure_future(read_flood())
        sent, latencies = await asyncio.gather(send_flood(), behave())
        await asyncio.sleep(0.5)
        reader.cancel()
        for ws in (*sockets, member):
            await ws.close()
    return {
        "idle_sockets": idle,
        "seconds": seconds,
        "flood_sent": sent,
        "flood_answers": codes,
        "member_requests": len(latencies),
        "member_p50_ms": round(_percentile(latencies, 0.5), 2),
        "member_p99_ms": round(_percentile(latencies, 0.99), 2),
        "member_max_ms": round(max(latencies), 2),
    }


def main() -> None:
    from bench.servers import start_aiosfu

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as logs:
        server = start_aiosfu(Path(logs), None)
        try:
            cpu = server.cpu_seconds()
            result = asyncio.run(flood(server.ws_url, args.idle, args.seconds))
            result["server_cpu_s"] = round(server.cpu_seconds() - cpu, 2)
        finally:
            server.stop()
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
