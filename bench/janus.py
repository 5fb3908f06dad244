"""The baseline: Janus VideoRoom, the C server operators pick, driven over its HTTP API.

`start_janus` writes a minimal configuration into a temporary directory: only the HTTP
transport, bound to 127.0.0.1, only the VideoRoom plugin, no other transports, no event
handlers or loggers, no STUN/TURN (so no NAT lookups leave the machine). The Debian
package `janus` provides the binary (`make bench` installs it).

Two configurations: `janus` sets `event_loops = 1` (every handle's media on one loop
thread instead of a thread per handle, Janus's own setting for a server confined to one
core: far fewer context switches and less CPU for the same loss, frames and latency), the
baseline every ratio is taken against; `janus-default` leaves Janus's default, shown for
reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.servers import ServerProcess, free_port, spawn, wait_listening

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
SHIM_SOURCE = Path(__file__).with_name("loopback_shim.c")
ROOM = 1234


def janus_binary() -> str | None:
    return shutil.which("janus")


def _janus_lib_dir() -> Path:
    for candidate in (JANUS_LIB, *Path("/usr/lib").glob("*/janus")):
        if (candidate / "plugins" / "libjanus_videoroom.so").exists():
            return candidate
    raise RuntimeError("Janus plugins not found (install the Debian package 'janus')")


def _write_config(directory: Path, port: int, event_loops: int | None) -> None:
    lib = _janus_lib_dir()
    for kind, name in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        (directory / kind).mkdir()
        (directory / kind / name).symlink_to(lib / kind / name)
    (directory / "empty").mkdir()
    (directory / "janus.jcfg").write_text(
        f"""general: {{
    configs_folder = "{directory}"
    plugins_folder = "{directory}/plugins"
    transports_folder = "{directory}/transports"
    events_folder = "{directory}/empty"
    loggers_folder = "{directory}/empty"
    debug_level = 3
    session_timeout = 0
{f"    event_loops = {event_loops}" if event_loops else ""}
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "lo"
    ignore_mdns = true
}}
plugins: {{}}
transports: {{}}
events: {{ broadcast = false }}
"""
    )
    (directory / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{ admin_http = false }}
"""
    )
    (directory / "janus.plugin.videoroom.jcfg").write_text("general: {}\n")


def build_shim(directory: Path) -> Path:
    """Compile the getifaddrs shim (see loopback_shim.c for why it exists)."""
    output = directory / "loopback_shim.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(output), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return output


def start_janus(log_dir: Path, cpus: set[int] | None) -> ServerProcess:
    """Janus tuned for one core: `event_loops = 1`."""
    return _start(log_dir, cpus, "janus", event_loops=1)


def start_janus_default(log_dir: Path, cpus: set[int] | None) -> ServerProcess:
    """Janus as configured out of the box: one loop thread per handle."""
    return _start(log_dir, cpus, "janus-default", event_loops=None)


def _start(
    log_dir: Path, cpus: set[int] | None, name: str, event_loops: int | None
) -> ServerProcess:
    binary = janus_binary()
    if binary is None:
        raise RuntimeError("janus is not installed (make bench installs the Debian package)")
    directory = Path(tempfile.mkdtemp(prefix="bench-janus-"))
    port = free_port()
    _write_config(directory, port, event_loops)
    env = dict(os.environ)
    env["LD_PRELOAD"] = str(build_shim(directory))
    cmd = [binary, "-F", str(directory), "-C", str(directory / "janus.jcfg"), "-o"]
    server = spawn(name, cmd, port, log_dir, cpus, env)
    server.cleanup.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    return wait_listening(server)


class JanusError(Exception):
    pass


class JanusApi:
    """One Janus session over the plain HTTP API: requests, and a long poll for events."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession()
        self.session_id: int | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)

    async def start(self) -> None:
        response = await self._post(self.base_url, {"janus": "create"})
        self.session_id = response["data"]["id"]
        self._poller = asyncio.ensure_future(self._poll())

    def _transaction(self) -> str:
        return f"t{next(self._ids)}-{secrets.token_hex(3)}"

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        body.setdefault("transaction", self._transaction())
        async with self.http.post(url, json=body) as response:
            data = await response.json(content_type=None)
        if data.get("janus") == "error":
            raise JanusError(str(data.get("error")))
        return data

    async def _poll(self) -> None:
        url = f"{self.base_url}/{self.session_id}?maxev=10"
        while True:
            try:
                async with self.http.get(url) as response:
                    data = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                await asyncio.sleep(0.1)
                continue
            for event in data if isinstance(data, list) else [data]:
                waiter = self._waiters.pop(event.get("transaction", ""), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event)

    async def attach(self) -> int:
        url = f"{self.base_url}/{self.session_id}"
        response = await self._post(url, {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(response["data"]["id"])

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, list...): answered in the response."""
        url = f"{self.base_url}/{self.session_id}/{handle}"
        response = await self._post(url, {"janus": "message", "body": body})
        return response["plugindata"]["data"]

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An asynchronous plugin request: acked at once, answered by an event."""
        url = f"{self.base_url}/{self.session_id}/{handle}"
        transaction = self._transaction()
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[transaction] = waiter
        message: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            message["jsep"] = jsep
        await self._post(url, message)
        async with asyncio.timeout(30):
            event = await waiter
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(str(data["error"]))
        return event

    async def trickle_done(self, handle: int) -> None:
        url = f"{self.base_url}/{self.session_id}/{handle}"
        await self._post(url, {"janus": "trickle", "candidate": {"completed": True}})

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        with contextlib.suppress(Exception):
            await self._post(f"{self.base_url}/{self.session_id}", {"janus": "destroy"})
        await self.http.close()


class JanusParticipant:
    def __init__(self, driver: JanusDriver, uid: str) -> None:
        self.driver = driver
        self.uid = uid
        self.pcs: list[RTCPeerConnection] = []

    async def publish(self, tracks: Sequence[MediaStreamTrack]) -> tuple[str, RTCPeerConnection]:
        api = self.driver.api
        handle = await api.attach()
        joined = await api.message(
            handle, {"request": "join", "ptype": "publisher", "room": ROOM, "display": self.uid}
        )
        publisher_id = joined["plugindata"]["data"]["id"]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        event = await api.message(
            handle,
            {"request": "publish", "audio": True, "video": True},
            {"type": "offer", "sdp": pc.localDescription.sdp},
        )
        await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        await api.trickle_done(handle)
        return str(publisher_id), pc

    async def subscribe(self, handle_id: str) -> RTCPeerConnection:
        api = self.driver.api
        handle = await api.attach()
        event = await api.message(
            handle,
            {
                "request": "join",
                "ptype": "subscriber",
                "room": ROOM,
                "streams": [{"feed": int(handle_id)}],
            },
        )
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        await pc.setLocalDescription(await pc.createAnswer())
        await api.message(
            handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp}
        )
        await api.trickle_done(handle)
        return pc

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


class JanusDriver:
    def __init__(self, server: ServerProcess) -> None:
        self.api = JanusApi(f"{server.http_url}/janus")

    async def start(self) -> None:
        await self.api.start()
        handle = await self.api.attach()
        await self.api.request(
            handle,
            {
                "request": "create",
                "room": ROOM,
                "publishers": 64,
                "bitrate": 0,
                "fir_freq": 0,
                "audiocodec": "opus",
                "videocodec": "vp8",
                "notify_joining": False,
            },
        )

    async def join(self, uid: str) -> JanusParticipant:
        return JanusParticipant(self, uid)

    async def close(self) -> None:
        await self.api.close()
