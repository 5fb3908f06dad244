"""Cameras started through the server API, each pulled by its own `aiosfu ingest` process.

A child process rather than a task of the server: demuxing and, above all, the AAC→Opus
transcode cost CPU that would otherwise be taken from the event loop forwarding everyone's
media, and the server process never decodes. The child is the same command an operator
runs by hand (docs/rtsp.md), so there is one ingest, tested one way; it joins the room over
the server's own WebSocket with a token minted for it, like any publisher.

The child logs JSON lines (`--log-format json`); its events give the state the API shows:
`connecting` until the camera is published, `live` while it sends, `retrying` while it
is pulled again (with the error), `failed` when the camera cannot be published at all (not
H264). A child that exits on its own otherwise (the server side of the connection failed)
is started again with backoff, as a supervisor would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from aiosfu.ingest.rtsp import Backoff
from aiosfu.ingest_cli import TOKEN_ENV, URL_ENV  # not on the command line, which `ps` shows
from aiosfu.log import get_logger

log = get_logger("aiosfu.ingest.workers")

State = Literal["connecting", "live", "retrying", "failed"]
STOP_GRACE = 5.0  # seconds a child has to unpublish on SIGTERM before it is killed


def redact(url: str) -> str:
    """The camera URL without its password, as the API shows and logs it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class IngestSpec:
    url: str
    rid: str
    uid: str
    bizid: str
    audio: bool = True
    transport: str = "tcp"


@dataclass
class IngestWorker:
    """One camera: its child process, restarted until stopped; what it last reported."""

    id: str
    spec: IngestSpec
    command: list[str]
    token: Callable[[], str | None]
    state: State = "connecting"
    last_error: str = ""
    started_at: float = field(default_factory=time.time)
    restarts: int = 0
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, maximum=30.0))
    _stopping: bool = False

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            env = {**os.environ, URL_ENV: self.spec.url}
            token = self.token()
            if token:
                env[TOKEN_ENV] = token
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, env=env, stdin=asyncio.subprocess.PIPE,  # closes if we die
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            log.info("ingest-started", id=self.id, rid=self.spec.rid, uid=self.spec.uid,
                     url=redact(self.spec.url), pid=self.proc.pid)  # fmt: skip
            assert self.proc.stderr is not None
            last_line = ""
            async for raw in self.proc.stderr:
                line = raw.decode(errors="replace").strip()
                if line:
                    last_line = line
                    self._read(line)
            code = await self.proc.wait()
            if self._stopping or self.state == "failed":
                return
            self.state = "retrying"
            self.last_error = self._exit_reason(last_line, code)
            self.restarts += 1
            delay = self.backoff.next()
            log.warning("ingest-exited", id=self.id, code=code, error=self.last_error,
                        retry_in=delay)  # fmt: skip
            await asyncio.sleep(delay)

    @staticmethod
    def _exit_reason(last_line: str, code: int) -> str:
        if last_line.startswith("aiosfu ingest: "):
            return last_line.removeprefix("aiosfu ingest: ")
        return f"the ingest process exited with status {code}"

    def _read(self, line: str) -> None:
        """Follow the child's events (JSON log lines; anything else is kept as the error)."""
        try:
            entry = json.loads(line)
            event, fields = entry["event"], entry.get("fields", {})
        except (ValueError, KeyError, TypeError):
            return
        if event == "ingest-published":
            self.state, self.last_error = "live", ""
            self.backoff.reset()
        elif event == "rtsp-connected" and self.state == "retrying":
            self.state = "live"
        elif event in ("rtsp-connect-failed", "rtsp-read-failed"):
            self.state, self.last_error = "retrying", str(fields.get("error", event))
        elif event == "rtsp-dropped" and self.state != "retrying":  # no read error before
            self.state, self.last_error = "retrying", "the camera stopped sending"
        elif event == "ingest-refused":
            self.state, self.last_error = "failed", str(fields.get("reason", event))

    async def stop(self) -> None:
        """SIGTERM: the child unpublishes and leaves; killed if it takes too long."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        log.info("ingest-stopped", id=self.id, rid=self.spec.rid, uid=self.spec.uid)


class IngestLimitError(Exception):
    pass


class IngestWorkers:
    """Every camera this server pulls, by id."""

    def __init__(
        self,
        ws_url: str,
        *,
        ice_ips: Sequence[str] = (),
        limit: int = 16,
        python: str = sys.executable,
    ) -> None:
        self.ws_url = ws_url
        self.ice_ips = list(ice_ips)
        self.limit = limit
        self.python = python
        self.workers: dict[str, IngestWorker] = {}

    def command(self, spec: IngestSpec) -> list[str]:
        argv = [
            self.python, "-m", "aiosfu", "ingest", "--room", spec.rid,
            "--uid", spec.uid, "--server", self.ws_url, "--rtsp-transport", spec.transport,
            "--log-format", "json", "--while-stdin-open",
        ]  # fmt: skip
        if not spec.audio:
            argv.append("--no-audio")
        for address in self.ice_ips:
            argv += ["--ice-ip", address]
        return argv

    def start(self, spec: IngestSpec, token: Callable[[], str | None]) -> IngestWorker:
        if len(self.workers) >= self.limit:
            raise IngestLimitError(f"this server pulls {self.limit} cameras at most (max_ingests)")
        worker = IngestWorker(
            id=f"ing_{secrets.token_hex(6)}", spec=spec, command=self.command(spec), token=token
        )
        self.workers[worker.id] = worker
        worker.start()
        return worker

    async def stop(self, ingest_id: str) -> None:
        worker = self.workers.pop(ingest_id)
        await worker.stop()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in list(self.workers)))
