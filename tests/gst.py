"""GStreamer's webrtcbin as a peer (tests/gst_peer.py under Debian's /usr/bin/python3),
with the seed-002 signaling done here through the Python SDK's SignalingClient.

The peer runs as a subprocess because python3-gi is Debian's and the project's virtualenv
does not see system packages; making it see them would let every other Debian Python
package shadow the pinned ones. The subprocess also keeps GLib's main loop out of the
test's asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import ROOT, wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
PEER_SCRIPT = ROOT / "tests" / "gst_peer.py"


@dataclass
class GstPeer:
    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def latest_stats(self) -> dict[str, Any]:
        stats = [e for e in self.events if e["event"] == "stats"]
        return stats[-1] if stats else {}

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "error"]

    async def offer(self, timeout: float = 10.0) -> str:
        await wait_for(
            lambda: self._find("offer") or self.errors() or self.proc.returncode is not None,
            timeout=timeout,
        )
        assert self._find("offer"), f"webrtcbin made no offer:\n{self.log()}"
        return self._find("offer")["sdp"]  # type: ignore[index]

    async def answer(self, sdp: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"answer": sdp}) + "\n").encode())
        await self.proc.stdin.drain()

    def connection_states(self) -> list[str]:
        return [e["connection"] for e in self.events if e["event"] == "state"]

    def log(self) -> str:
        lines = [json.dumps(e) for e in self.events if e["event"] != "stats"][-20:]
        return "\n".join([*lines, f"last stats: {self.latest_stats}", *self.stderr[-30:]])

    def _find(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)


async def _pump(stream: asyncio.StreamReader, sink: list[Any], parse: bool) -> None:
    async for raw in stream:
        line = raw.decode(errors="replace").rstrip()
        if parse and line.startswith("{"):
            sink.append(json.loads(line))
        elif not parse:
            sink.append(line)


@contextlib.asynccontextmanager
async def gst_peer(*args: str) -> AsyncIterator[GstPeer]:
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        str(PEER_SCRIPT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"GST_DEBUG": "1", "PATH": "/usr/bin:/bin"},
    )
    peer = GstPeer(proc)
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [
        asyncio.ensure_future(_pump(proc.stdout, peer.events, parse=True)),
        asyncio.ensure_future(_pump(proc.stderr, peer.stderr, parse=False)),
    ]
    try:
        yield peer
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the peer quits its main loop at end of input
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        for pump in pumps:
            pump.cancel()
