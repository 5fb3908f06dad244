"""One WebSocket connection of one peer: frames in, responses and notifications out.

Requests of a session are handled one at a time, in order, so a peer sees the effects
of its own requests in the order it sent them. Everything sent to the peer (responses and
the notifications other peers' requests produce) goes through a bounded outbox drained
by one writer task: a peer that stops reading its socket fills only its own outbox, has
its connection dropped when that overflows, and never makes another peer's request wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web

from aiosfu.log import get_logger
from aiosfu.signal.auth import Identity
from aiosfu.signal.grants import Grants
from aiosfu.signal.limits import TokenBucket

log = get_logger("aiosfu.signal")


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


class PeerSession:
    def __init__(
        self,
        uid: str,
        ws: web.WebSocketResponse,
        abort: Callable[[], None] = lambda: None,
        outbox_bytes: int = 4 * 1024 * 1024,
        identity: Identity | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.uid = uid
        self.ws = ws
        self.rooms: set[str] = set()
        # The verified token (None in open mode) and the grants in force in each room
        # joined: the token's at first, then as a room admin changes them.
        self.identity = identity
        self.grants: dict[str, Grants] = {}
        self.bucket = bucket
        self.last_seen = time.monotonic()
        self.closed = asyncio.Event()  # set once cleanup after disconnect is complete
        self.outbox_bytes = outbox_bytes
        self._outbox: deque[str] = deque()
        self._pending = 0
        self._ready = asyncio.Event()
        self._overflowed = False
        # A peer that does not read cannot take a close frame either: drop the connection.
        self._abort = abort
        self._writer = asyncio.ensure_future(self._write())

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    async def send(self, message: dict[str, Any]) -> None:
        """Queue a frame for the peer; returns at once whatever the peer's socket does."""
        self.send_text(encode(message))

    def send_text(self, text: str) -> None:
        """Queue an already encoded frame: a room event is encoded once for all its
        recipients (`encode`), and this costs each of them one append."""
        if self.ws.closed or self._overflowed:
            return
        if self._pending + len(text) > self.outbox_bytes:
            self._overflowed = True
            log.warning("peer-too-slow", uid=self.uid, unsent_bytes=self._pending)
            self._abort()
            return
        self._outbox.append(text)
        self._pending += len(text)
        self._ready.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                text = self._outbox.popleft()
                try:
                    await self.ws.send_str(text)
                except (ConnectionError, RuntimeError) as exc:
                    log.info("send-failed", uid=self.uid, error=str(exc))
                finally:
                    self._pending -= len(text)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def stop(self) -> None:
        """The socket is gone: drop what was never sent and end the writer."""
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
