"""Webhooks: the institution's backend hears what happened in its rooms.

Events (`room_started`, `room_finished`, `participant_joined`, `participant_left`,
`track_published`, `track_unpublished`, `recording_finished`) are POSTed as JSON to the
institution's configured URLs, in order per room and URL: one queue per (URL, room),
drained by one task that retries a failed delivery with exponential backoff before it
sends the next, so a receiver that was down gets everything afterwards, in order.

Each POST is signed the way LiveKit signs its webhooks: `Authorization` carries a JWT
(HS256, the institution's first API key) whose `sha256` claim is the base64 SHA-256 of
the body, so a receiver verifies both who sent it and that the body is intact.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import jwt

from aiosfu.log import get_logger
from aiosfu.signal.auth import ALGORITHM

log = get_logger("aiosfu.webhooks")

QUEUE_LIMIT = 10_000  # events waiting per (URL, room); past it the oldest are dropped


def sign(body: bytes, key: str, secret: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": key, "nbf": issued, "exp": issued + 300, "sha256": digest}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


class Webhooks:
    def __init__(
        self,
        institutions: Mapping[str, tuple[Sequence[str], str, str]],
        *,
        timeout: float = 5.0,
        first_retry: float = 0.5,
        max_retry: float = 5.0,
        give_up_after: float = 600.0,
    ) -> None:
        """`institutions`: bizid -> (URLs, API key, secret) to sign with."""
        self.institutions = {b: v for b, v in institutions.items() if v[0]}
        self.timeout = timeout
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.give_up_after = give_up_after
        self.owners: dict[str, str] = {}  # rid -> bizid, kept past room_finished
        self.queues: dict[tuple[str, str], deque[tuple[float, bytes]]] = {}
        self.workers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.ids = itertools.count(1)
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0
        self._http: aiohttp.ClientSession | None = None

    def on_event(self, event: str, rid: str, details: dict[str, Any]) -> None:
        if event == "room_started":
            self.owners[rid] = details.get("bizid", "")
        bizid = self.owners.get(rid, "")
        target = self.institutions.get(bizid)
        if target is None:
            return
        body = json.dumps(
            {"id": next(self.ids), "event": event, "rid": rid, "createdAt": time.time(),
             **details},
            separators=(",", ":"),
        ).encode()  # fmt: skip
        for url in target[0]:
            queue = self.queues.setdefault((url, rid), deque())
            if len(queue) >= QUEUE_LIMIT:
                queue.popleft()
                self.dropped += 1
            queue.append((time.monotonic(), body))
            worker = self.workers.get((url, rid))
            if worker is None or worker.done():
                self.workers[(url, rid)] = asyncio.ensure_future(self._drain(url, rid, bizid))

    async def _drain(self, url: str, rid: str, bizid: str) -> None:
        queue = self.queues[(url, rid)]
        _, key, secret = self.institutions[bizid]
        while queue:
            queued_at, body = queue[0]
            delay = self.first_retry
            while not await self._post(url, body, key, secret):
                self.failed_attempts += 1
                if time.monotonic() - queued_at > self.give_up_after:
                    log.warning("webhook-dropped", url=url, rid=rid)
                    self.dropped += 1
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry)
            queue.popleft()
        del self.queues[(url, rid)]

    async def _post(self, url: str, body: bytes, key: str, secret: str) -> bool:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {"Content-Type": "application/json", "Authorization": sign(body, key, secret)}
        try:
            async with self._http.post(url, data=body, headers=headers) as response:
                if 200 <= response.status < 300:
                    self.delivered += 1
                    return True
                log.info("webhook-refused", url=url, status=response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("webhook-failed", url=url, error=type(exc).__name__)
        return False

    async def close(self) -> None:
        for worker in self.workers.values():
            worker.cancel()
        if self._http is not None:
            await self._http.close()

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failedAttempts": self.failed_attempts,
            "dropped": self.dropped,
            "queued": sum(len(q) for q in self.queues.values()),
        }
