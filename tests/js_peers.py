"""Node.js peers for the interop tests (tests/js/): npm packages from the committed lock
file, installed by `make install` into node_modules/."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.conftest import ROOT

NODE_MODULES = ROOT / "node_modules"
JS_DIR = ROOT / "tests" / "js"


def require_node_modules(*packages: str) -> None:
    missing = [p for p in packages if not (NODE_MODULES / p / "package.json").exists()]
    assert not missing, f"npm packages missing: {missing}; run `make install`"


async def run_node_script(script: str, *args: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Run tests/js/<script> to the end; its stdout is one JSON object per line."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / script),
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError as exc:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{script} did not finish in {timeout}s:\n{out.decode()}\n{err.decode()}"
        ) from exc
    events = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}:\n{out.decode()}\n{err.decode()}")
    return events


def script_path(name: str) -> Path:
    return JS_DIR / name


SDK_PEER = JS_DIR / "sdk_peer.js"
WIDTH, HEIGHT = 640, 480
AUDIBLE = 0.05  # peak of the decoded signal, full scale 1.0: a test tone, not silence
# or, where Web Audio does not run (headless Firefox), the energy the decoder output
# (WebRTC stats' totalAudioEnergy, sum of level^2 * seconds): a second of tone, not silence
AUDIBLE_ENERGY = 0.001


async def start_sdk_peer(page: Any, server: Any, uid: str, rid: str) -> dict[str, Any]:
    """Load tests/js/sdk_peer.js (the JS SDK as a participant) into a page of `server`
    and join `rid`. `page` is a Playwright page or a tests.firefox.FirefoxPage."""
    await page.goto(server.http_url)
    await page.add_script_tag(path=str(SDK_PEER))
    return await page.evaluate(
        "([url, uid, rid]) => window.interop.start(url, uid, rid)", [server.ws_url, uid, rid]
    )


async def wait_decoded(
    page: Any,
    mid: str,
    frames: int,
    *,
    audio: bool = True,
    within: float = 20.0,
    what: str = "",
) -> dict[str, Any]:
    """Wait until the page's subscription to `mid` decoded `frames` video frames at
    640x480 (and audible audio); its stats then, or an AssertionError with the last ones."""
    from tests.conftest import wait_for

    latest: dict[str, Any] = {}

    async def decoded() -> bool:
        nonlocal latest
        stats = await page.evaluate("() => window.interop.stats()")
        latest = next((s for s in stats if s["mid"] == mid), {})
        video = latest.get("video") or {}
        sound = latest.get("audio") or {}
        heard = sound.get("level", 0) > AUDIBLE or sound.get("totalAudioEnergy", 0) > AUDIBLE_ENERGY
        return (
            video.get("framesDecoded", 0) >= frames
            and (video.get("frameWidth"), video.get("frameHeight")) == (WIDTH, HEIGHT)
            and (heard or not audio)
        )

    try:
        await wait_for(decoded, timeout=within, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{what}: not decoded: {latest}") from exc
    return latest
