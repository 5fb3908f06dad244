"""One WebSocket connection of one peer: frames in, responses and notifications out.

Requests of a session are handled one at a time, in order, so a peer sees the effects
of its own requests in the order it sent them. Everything sent to the peer (responses and
the notifications other peers' requests produce) is written to its socket at once, in
order, never awaited: a peer that stops reading fills only its own transport's buffer,
which is bounded (`outbox_bytes`): past it the connection is dropped. So a slow peer
never makes another peer's request wait.

Frames are built here rather than by aiohttp's writer: a room event goes to many members,
and its frame is built once (`text_frame`) and the same bytes are written to each of them,
with no task, lock or await per recipient. A server's frames are unmasked and, without
permessage-deflate (which `/ws` does not offer), carry no per-connection state, so the
bytes are the same for every recipient; aiohttp writes its own frames (pings, pongs,
close) whole and synchronously too, so the two never interleave within a frame.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from aiohttp import WSMessage

from aiosfu.log import get_logger
from aiosfu.signal.auth import Identity
from aiosfu.signal.grants import Grants
from aiosfu.signal.limits import TokenBucket
from aiosfu.signal.ws_frames import TEXT, frame

log = get_logger("aiosfu.signal")

# One encoder for every message: json.dumps with options builds a new encoder per call.
encode: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":")).encode


def text_frame(text: str) -> bytes:
    """A server-to-client WebSocket text frame of `text` (RFC 6455 section 5.2)."""
    return frame(TEXT, text.encode())


class SignalSocket(Protocol):
    """What a session needs of its WebSocket: aiohttp's `WebSocketResponse`, or the lean
    path's socket (upgrade.py)."""

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...

    def __aiter__(self) -> AsyncIterator[WSMessage]: ...


class PeerSession:
    def __init__(
        self,
        uid: str,
        ws: SignalSocket,
        abort: Callable[[], None] = lambda: None,
        outbox_bytes: int = 4 * 1024 * 1024,
        identity: Identity | None = None,
        bucket: TokenBucket | None = None,
        transport: asyncio.Transport | None = None,
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
        self._transport = transport  # None: frames go nowhere (a session without socket)
        self._overflowed = False
        # A peer that does not read cannot take a close frame either: drop the connection.
        self._abort = abort

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    async def send(self, message: dict[str, Any]) -> None:
        """Write a frame to the peer; returns at once whatever the peer's socket does."""
        text = encode(message)
        self.send_text(text, text_frame(text))

    def send_text(self, text: str, frame: bytes) -> None:
        """Write an already encoded message: a room event is encoded and framed once for
        all its recipients (`encode`, `text_frame`), and this costs each of them one
        write. What the socket does not take at once waits in the transport's buffer."""
        transport = self._transport
        if transport is None or self._overflowed or self.ws.closed or transport.is_closing():
            return
        unsent = transport.get_write_buffer_size()
        if unsent + len(frame) > self.outbox_bytes:
            self._overflowed = True
            log.warning("peer-too-slow", uid=self.uid, unsent_bytes=unsent)
            self._abort()
            return
        transport.write(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    async def stop(self) -> None:
        """The socket is gone: nothing more is written to it."""
        self._transport = None
