"""`python -m bench.connection_cost`: what one signaling connection costs the server.

A join storm's cost per member (bench/storm.py) is the join plus everything before it:
the TCP accept, the HTTP request, the WebSocket upgrade. This measures those steps apart,
and against two references, so a figure says which part of a join is ours:

- `aiosfu`: `aiosfu serve`, audience mode on (the default threshold);
- `aiohttp`: the least an aiohttp server does for the same exchange (one route, the
  upgrade, one reply per frame), on uvloop: the floor of any aiohttp-based server;
- `raw`: a bare asyncio protocol that upgrades by hand and answers one frame, on uvloop:
  what the accept, the system calls and the event loop cost with no HTTP library at all.

Each step is run `--runs` times per server, the servers interleaved (A B C C B A ...)
since this machine's speed drifts: `http` (GET /healthz on a new connection), `ws` (the
upgrade only) and `join` (the upgrade and a seed-002 `join`, answered). The clients open
`--connections` connections at 200 a second from a process on the other core, keep them
open, and the figure is the server's CPU (user + system) over that, per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.servers import free_port, process_cpu_split

RATE = 200  # new connections a second
SERVERS = ("aiosfu", "aiohttp", "raw")
STEPS = ("http", "ws", "join")
JOIN = json.dumps({"request": True, "id": 1, "method": "join", "data": {"rid": "lecture"}})

MINIMAL_AIOHTTP = """
import asyncio, json, sys
import uvloop
from aiohttp import web
REPLY = json.dumps({"response": True, "id": 1, "ok": True, "data": {"pubs": [], "users": []}})
async def ws(request):
    socket = web.WebSocketResponse(compress=False)
    await socket.prepare(request)
    async for _ in socket:
        await socket.send_str(REPLY)
    return socket
async def health(request):
    return web.json_response({"ok": True})
async def main():
    app = web.Application()
    app.add_routes([web.get("/ws", ws), web.get("/healthz", health)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Future()
uvloop.run(main())
"""

RAW_PROTOCOL = """
import asyncio, base64, hashlib, json, sys
import uvloop
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
REPLY = json.dumps({"response": True, "id": 1, "ok": True, "data": {"pubs": [], "users": []}})
FRAME = bytes([0x81, len(REPLY)]) + REPLY.encode()
HEALTHY = b'HTTP/1.1 200 OK\\r\\nContent-Length: 12\\r\\n\\r\\n{"ok": true}'
class Upgrade(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.upgraded = transport, b"", False
    def data_received(self, data):
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\\r\\n\\r\\n")
            if end < 0:
                return
            lines, self.buffer = self.buffer[:end].split(b"\\r\\n"), self.buffer[end + 4:]
            if lines[0].startswith(b"GET /healthz"):
                self.transport.write(HEALTHY)
                return
            headers = dict(line.split(b": ", 1) for line in lines[1:])
            accept = base64.b64encode(hashlib.sha1(headers[b"Sec-WebSocket-Key"] + GUID).digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\n"
                b"Connection: Upgrade\\r\\nSec-WebSocket-Accept: " + accept + b"\\r\\n\\r\\n")
            self.upgraded = True
        buffer = self.buffer
        if len(buffer) >= 6 and len(buffer) >= 6 + (buffer[1] & 0x7F):
            n, mask = buffer[1] & 0x7F, buffer[2:6]
            json.loads(bytes(b ^ mask[i % 4] for i, b in enumerate(buffer[6:6 + n])))
            self.buffer = buffer[6 + n:]
            self.transport.write(FRAME)
async def main():
    await asyncio.get_running_loop().create_server(Upgrade, "127.0.0.1", int(sys.argv[1]))
    await asyncio.Future()
uvloop.run(main())
"""


def _masked(text: str) -> bytes:
    """A client-to-server text frame (RFC 6455 requires the mask)."""
    payload, mask = text.encode(), os.urandom(4)
    header = bytes([0x81, 0x80 | len(payload)])
    if len(payload) >= 126:
        header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _connect_all(port: int, step: str, count: int) -> list[asyncio.StreamWriter]:
    held: list[asyncio.StreamWriter] = []

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        held.append(writer)
        if step == "http":
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            return
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws?peer=s{i:05d} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await reader.readuntil(b"\r\n\r\n")
        if step == "join":
            writer.write(_masked(JOIN))
            await reader.readexactly(2)

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / RATE - loop.time()))
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)  # a step left unanswered
    return held


def _start(server: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    if server == "aiosfu":
        config = workdir / "aiosfu.toml"
        config.write_text(
            "keepalive_timeout = 600\nmax_room_members = 20000\nmax_connections = 20000\n"
            "max_peer_connections = 20000\nhttp_max_pending_per_ip = 512\n"
        )
        cmd = [
            sys.executable, "-m", "aiosfu", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--ice-ip", "127.0.0.1", "--log-level", "warning", "--config", str(config),
        ]  # fmt: skip
    else:
        script = workdir / f"reference_{server}.py"  # not aiohttp.py: it would shadow aiohttp
        script.write_text(MINIMAL_AIOHTTP if server == "aiohttp" else RAW_PROTOCOL)
        cmd = [sys.executable, str(script), str(port)]
    cores = sorted(os.sched_getaffinity(0))
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {cores[0]}),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{server} did not start listening")


def measure(server: str, step: str, count: int, workdir: Path) -> float:
    """Server CPU milliseconds per connection for one step."""
    port = free_port()
    process = _start(server, port, workdir)
    try:
        time.sleep(1.0)  # past startup
        user0, system0 = process_cpu_split(process.pid)
        held = asyncio.run(_connect_all(port, step, count))
        time.sleep(1.0)  # the replies' and the last notifications' aftermath
        user1, system1 = process_cpu_split(process.pid)
        del held
    finally:
        process.terminate()
        process.wait(timeout=30)
    return ((user1 - user0) + (system1 - system0)) / count * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.connection_cost", description=__doc__)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, set(cores[1:]))
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers, steps = args.servers.split(","), args.steps.split(",")
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="aiosfu-conn-") as tmp:
        for run in range(args.runs):
            order = servers if run % 2 == 0 else servers[::-1]
            for step in steps:
                for server in order:
                    ms = measure(server, step, args.connections, Path(tmp))
                    figures.setdefault((server, step), []).append(ms)
                    print(json.dumps({"server": server, "step": step, "ms": round(ms, 3)}))
    print("\n| server | " + " | ".join(f"{s} ms/connection" for s in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for server in servers:
        cells = []
        for step in steps:
            values = figures[(server, step)]
            cells.append(f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})")
        print(f"| {server} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
