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
