"""The lean `/ws` path: a signaling upgrade that does not go through aiohttp's web stack.

A lecture's arrival is thousands of upgrades, and aiohttp's request handler, request
object, router and `WebSocketResponse` cost about 0.4-0.5 ms of CPU per connection here
before any signaling runs: the least server built on aiohttp spends 0.70 ms on a
connection, its upgrade and one reply, a bare protocol 0.28 ms (`python -m
bench.connection_cost`, docs/large-rooms.md). So the HTTP guard (http_guard.py) hands a
connection's first request head here, and this takes it only when it understands all of
it: `GET /ws` over HTTP/1.1, a well-formed version-13 upgrade, no body, a plain query, no
repeated header that matters, and the same admission as aiohttp's path (`http.admit`:
origin, connection limit, token, uid) passes. Anything else, including every refusal,
goes to aiohttp as before, which checks it again and answers (and logs) exactly as it
always has. An admitted peer's frames are read by `ws_frames.FrameReader` and its session
runs the same loop as aiohttp's path (`http.serve_session`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections import deque
from collections.abc import Callable

from aiohttp import WSMessage, WSMsgType, web
from multidict import CIMultiDict

from aiosfu.config import Config
from aiosfu.signal.http import SUBPROTOCOLS, KeepaliveWatch, admit, serve_session
from aiosfu.signal.service import SignalService
from aiosfu.signal.ws_frames import (
    BINARY,
    CLOSE,
    INVALID_TEXT,
    PING,
    PONG,
    TEXT,
    FrameError,
    FrameReader,
    close_code,
    close_frame,
    frame,
)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Bytes, like the characters of a URI query, that need no decoding: anything else (a
# percent escape, a '+') is aiohttp's to decode, so both paths read the same uid.
_PLAIN_QUERY = re.compile(r"[A-Za-z0-9_.@:~=&-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_SINGLE = (
    "Host", "Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version", "Origin",
    "Authorization", "Sec-WebSocket-Protocol", "X-Forwarded-Proto",
)  # fmt: skip
READ_LIMIT = 128 * 1024  # queued message bytes past which reading pauses (aiohttp's)
CLOSE_TIMEOUT = 10.0  # seconds to wait for the peer's close frame after ours (aiohttp's)


def parse_head(head: bytes) -> tuple[str, CIMultiDict[str]] | None:
    """(query, headers) of a `GET /ws` request head this path can take, else None."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text[:-4].split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    if method != "GET" or version != "HTTP/1.1":
        return None
    path, _, query = target.partition("?")
    if path != "/ws" or not _PLAIN_QUERY.fullmatch(query):
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or _CONTROL.search(line):
            return None  # obs-fold, a malformed line, a control character: aiohttp's
        headers.add(name, value.strip(" \t"))
    if any(len(headers.getall(name, ())) > 1 for name in _SINGLE):
        return None
    if "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0":
        return None
    return query, headers


def _query(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for pair in query.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            values.setdefault(key, value)
    return values


def _accept_key(headers: CIMultiDict[str]) -> str | None:
    """The Sec-WebSocket-Accept of a well-formed version-13 upgrade, else None."""
    if headers.get("Upgrade", "").lower() != "websocket" or "Host" not in headers:
        return None
    tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
    if "upgrade" not in tokens or headers.get("Sec-WebSocket-Version") != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class LeanSocket(asyncio.Protocol):
    """An upgraded connection: frames in, messages to its session; what a session needs of
    a WebSocket (`session.SignalSocket`), the way aiohttp's `WebSocketResponse` does it:
    pings answered, a peer's close answered and the connection ended, a protocol error
    closed with its code."""

    def __init__(self, transport: asyncio.Transport, max_message: int) -> None:
        self._transport = transport
        self._reader = FrameReader(max_message)
        self._messages: deque[tuple[WSMessage, int]] = deque()
        self._queued = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False  # a close frame sent or received: no more data frames out
        self._close_code: int | None = None
        self._ended = False  # nothing more will be read
        self._peer_closed: asyncio.Future[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_code(self) -> int | None:
        return self._close_code

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        try:
            messages = self._reader.feed(data)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        for message in messages:
            opcode = message.opcode
            if opcode == TEXT:
                try:
                    text = message.data.decode()
                except UnicodeDecodeError:
                    self._fail(INVALID_TEXT, "text frame is not UTF-8")
                    return
                self._push(WSMessage(WSMsgType.TEXT, text, None), len(message.data))
            elif opcode == BINARY:
                self._push(WSMessage(WSMsgType.BINARY, message.data, None), len(message.data))
            elif opcode == PING:
                if not self._closed:
                    self._transport.write(frame(PONG, message.data))
            elif opcode == CLOSE:
                self._peer_close(close_code(message.data))
                return

    def _push(self, message: WSMessage, size: int) -> None:
        self._messages.append((message, size))
        self._queued += size
        self._wake()
        if self._queued > READ_LIMIT and not self._paused:
            self._paused = True
            self._transport.pause_reading()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _peer_close(self, code: int) -> None:
        if not self._closed:  # the peer closes first: answer, as aiohttp does, with 1000
            self._closed = True
            self._close_code = code
            self._transport.write(close_frame(1000))
        if self._peer_closed is not None and not self._peer_closed.done():
            self._peer_closed.set_result(None)
        self._transport.close()
        self._end()

    def _fail(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_code = code
            self._transport.write(close_frame(code, reason.encode()))
        self._transport.close()
        self._end()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_code is None:
            self._close_code = 1006
        self._closed = True
        if self._peer_closed is not None and not self._peer_closed.done():
            self._peer_closed.set_result(None)
        self._end()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost ends the session

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        """Send a close frame, wait (bounded) for the peer's, end the connection."""
        if self._closed:
            return False
        self._closed = True
        self._close_code = code
        transport = self._transport
        if transport.is_closing():
            return True
        transport.write(close_frame(code, message))
        self._peer_closed = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._peer_closed), CLOSE_TIMEOUT)
        except TimeoutError:
            pass
        transport.close()
        return True

    def __aiter__(self) -> LeanSocket:
        return self

    async def __anext__(self) -> WSMessage:
        while not self._messages:
            if self._ended:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        message, size = self._messages.popleft()
        self._queued -= size
        if self._paused and self._queued <= READ_LIMIT // 2:
            self._paused = False
            self._transport.resume_reading()
        return message


class LeanUpgrade:
    """`(request head, bytes after it, transport)` -> the connection's protocol from now
    on, or None for aiohttp to serve the request."""

    def __init__(self, service: SignalService, config: Config, keepalive: KeepaliveWatch) -> None:
        self.service = service
        self.config = config
        self.keepalive = keepalive
        self._sessions: set[asyncio.Task[None]] = set()

    def __call__(
        self, head: bytes, rest: bytes, transport: asyncio.Transport, remote: str
    ) -> asyncio.Protocol | None:
        parsed = parse_head(head)
        if parsed is None:
            return None
        query_text, headers = parsed
        accept = _accept_key(headers)
        if accept is None:
            return None
        query = _query(query_text)
        try:
            uid, identity = admit(
                self.service,
                self.config,
                headers,
                query,
                secure=transport.get_extra_info("sslcontext") is not None,
                host=headers["Host"],
                remote=remote,
                quiet=True,
            )
        except web.HTTPException:
            return None  # refused: aiohttp's path refuses it again, and says why
        offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
        chosen = next((p for p in offered if p in SUBPROTOCOLS), None)
        transport.write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                + (f"Sec-WebSocket-Protocol: {chosen}\r\n" if chosen else "")
                + "\r\n"
            ).encode()
        )
        socket = LeanSocket(transport, self.config.max_frame_bytes * 4)
        session = serve_session(
            self.service, self.config, self.keepalive, socket, transport, uid, identity, remote
        )
        task = asyncio.ensure_future(session)
        self._sessions.add(task)
        task.add_done_callback(self._sessions.discard)
        if rest:
            socket.data_received(rest)
        return socket


UpgradeHook = Callable[[bytes, bytes, asyncio.Transport, str], asyncio.Protocol | None]


def lean_upgrade(app: web.Application) -> UpgradeHook | None:
    """The app's lean upgrade, if it serves signaling (`http.add_routes`)."""
    from aiosfu.signal.http import CONFIG_KEY, KEEPALIVE_KEY, SERVICE_KEY

    if SERVICE_KEY not in app or KEEPALIVE_KEY not in app or CONFIG_KEY not in app:
        return None
    if not app[CONFIG_KEY].lean_upgrade:
        return None
    return LeanUpgrade(app[SERVICE_KEY], app[CONFIG_KEY], app[KEEPALIVE_KEY])
