"""Debian's Firefox ESR for end-to-end tests, driven by puppeteer-core over WebDriver BiDi
(tests/js/firefox.js; Playwright drives only its own patched Firefox builds).

`FirefoxPage` answers the few calls the interop tests make of a Playwright page
(`goto`, `add_script_tag`, `evaluate`), so one test body drives either browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import ROOT
from tests.js_peers import JS_DIR, require_node_modules

FIREFOX = "/usr/bin/firefox-esr"


def require_default_route() -> None:
    """Firefox gathers no ICE candidates at all on a machine without a default route."""
    routes = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True)
    assert routes.stdout.strip(), (
        "Firefox needs a default route to gather candidates: run the tests with `make test`,"
        " or add `ip route add default dev lo src 127.0.0.1` in the test namespace"
    )


@dataclass
class FirefoxBrowser:
    proc: asyncio.subprocess.Process
    version: str = ""
    console: dict[int, list[str]] = field(default_factory=dict)
    _ids: int = 0
    _pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _ready: asyncio.Future[dict[str, Any]] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            if "console" in message:
                self.console.setdefault(message["page"], []).append(message["console"])
            elif "ready" in message or "fatal" in message:
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(message)
            elif (future := self._pending.pop(message["id"], None)) is not None:
                if "error" in message:
                    future.set_exception(AssertionError(f"Firefox: {message['error']}"))
                else:
                    future.set_result(message["result"])
        for future in self._pending.values():
            future.set_exception(ConnectionError("the Firefox driver exited"))

    async def call(self, op: str, timeout: float = 30.0, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self._ids += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._ids] = future
        self.proc.stdin.write((json.dumps({"id": self._ids, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def new_page(self) -> FirefoxPage:
        return FirefoxPage(self, await self.call("newPage"))


@dataclass
class FirefoxPage:
    browser: FirefoxBrowser
    index: int

    async def goto(self, url: str) -> None:
        await self.browser.call("goto", page=self.index, url=url)

    async def add_script_tag(self, path: str) -> None:
        await self.browser.call("addScript", page=self.index, path=path)

    async def evaluate(self, fn: str, arg: Any = None) -> Any:
        return await self.browser.call("evaluate", page=self.index, fn=fn, arg=arg)

    @property
    def console(self) -> list[str]:
        return self.browser.console.get(self.index, [])


@contextlib.asynccontextmanager
async def launch_firefox() -> AsyncIterator[FirefoxBrowser]:
    require_node_modules("puppeteer-core")
    require_default_route()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(JS_DIR / "firefox.js"),
        cwd=ROOT,
        env={"FIREFOX": FIREFOX, "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    browser = FirefoxBrowser(proc)
    browser._ready = asyncio.get_running_loop().create_future()
    browser._reader = asyncio.ensure_future(browser._read())
    try:
        ready = await asyncio.wait_for(browser._ready, 60)
        assert "fatal" not in ready, f"Firefox did not start: {ready['fatal']}"
        browser.version = ready["version"]
        yield browser
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the driver closes Firefox at end of input
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        browser._reader.cancel()
