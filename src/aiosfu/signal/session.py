"""One WebSocket connection of one peer: frames in, responses and notifications out.

Requests of a session are handled one at a time, in order, so a peer sees the effects
of its own requests in the order it sent them. Sends are serialized by a lock because
notifications for this peer are produced by other peers' tasks.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from aiosfu.log import get_logger

log = get_logger("aiosfu.signal")


class PeerSession:
    def __init__(self, uid: str, ws: web.WebSocketResponse) -> None:
        self.uid = uid
        self.ws = ws
        self.rooms: set[str] = set()
        self.last_seen = time.monotonic()
        self.closed = asyncio.Event()  # set once cleanup after disconnect is complete
        self._send_lock = asyncio.Lock()

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    async def send(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        text = json.dumps(message, separators=(",", ":"))
        async with self._send_lock:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError) as exc:
                log.info("send-failed", uid=self.uid, error=str(exc))

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())
