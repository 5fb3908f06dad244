"""`pip install aiosfu[client]`: the Python SDK alone. Its requirements are the SDK's
(aiortc, aioice, aiohttp), the server's (pydantic, PyJWT, ...) are only in
`aiosfu[server]`, and `aiosfu.client` joins a room and exchanges media with every
server-only package made unimportable."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

from tests.conftest import ROOT, start_server, stop_server

SERVER_ONLY = ["pydantic", "jwt", "grpc", "aetcd", "nats", "redis", "prometheus_client"]


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


def test_the_client_extra_pulls_nothing_of_the_server() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {name_of(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert base == {"aiortc", "aioice", "aiohttp"}
    assert extras["client"] == []
    assert {"pydantic", "pyjwt"} <= {name_of(r) for r in extras["server"]}
    # What pip sees: the installed metadata says the same (make install rebuilt it).
    installed = metadata.requires("aiosfu") or []
    unconditional = {name_of(r) for r in installed if "extra ==" not in r}
    assert unconditional == base
    for requirement in installed:
        if name_of(requirement) in {"pydantic", "pyjwt"}:
            assert 'extra == "server"' in requirement


CLIENT_ONLY = """
import asyncio, importlib.abc, json, sys

BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is not installed (aiosfu[client] only)")
        return None

sys.meta_path.insert(0, Block())

from aiosfu.client import Client
from tests.media import FrameCounter, PatternTrack, wait_for_track

async def main():
    teacher = await Client.connect({url!r}, "teacher", ice_ips=["127.0.0.1"])
    await teacher.join("class")
    pub = await teacher.publish("class", [PatternTrack(160, 120)])
    student = await Client.connect({url!r}, "student", ice_ips=["127.0.0.1"])
    await student.join("class")
    sub = await student.subscribe("class", pub.mid)
    video = FrameCounter(await wait_for_track(sub, "video")).start()
    for _ in range(200):
        if video.frames >= 10:
            break
        await asyncio.sleep(0.05)
    await video.stop()
    await student.close()
    await teacher.close()
    print(json.dumps({{"frames": video.frames, "sizes": sorted(video.sizes)}}))

asyncio.run(main())
"""


def test_the_sdk_runs_without_the_server_dependencies(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        script = CLIENT_ONLY.format(blocked=SERVER_ONLY, url=server.ws_url)
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
    finally:
        stop_server(server)
    # Any import of a server-only package on the way would have failed the script.
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["frames"] >= 10
    assert outcome["sizes"] == [[160, 120]]
