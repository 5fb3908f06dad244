"""Half-open HTTP connections: a deadline for request headers and caps on how many wait.

A client that opens TCP and then sends its request headers a byte at a time (or nothing:
slowloris) holds a file descriptor until aiohttp's keep-alive timeout, 75 s, and nothing
bounds how many such connections exist: 300 of them held their fds for 80-90 s. aiohttp
has no header-read timeout and no connection cap of its own, and `web.run_app` takes no
protocol factory, so this is hand-written: the server is started from a `web.AppRunner`
with `loop.create_server`, and each aiohttp `RequestHandler` is wrapped in a small
protocol that starts a timer when the connection is made and stops it when the request's
headers are complete. A connection
still waiting for its headers when the timer fires is aborted; past `max_pending` such
connections on the server, or `max_pending_per_ip` from one address, a new one is
aborted at once. Established WebSocket peers and requests being served are never counted,
so a refusal touches only the newcomer.

The wrapper sees the end of the headers itself (the blank line after them, the only way
an HTTP/1.1 request's headers end) as the bytes go by, rather than from a middleware: a
middleware is a coroutine and a wrapper per request, and every join of a lecture's
arrival starts with one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web

from aiosfu import eventloop
from aiosfu.eventloop import EventLoop
from aiosfu.log import get_logger

log = get_logger("aiosfu.http")


@dataclass(frozen=True)
class GuardLimits:
    header_timeout: float = 10.0  # seconds from connect to complete request headers
    max_pending: int = 512  # connections without complete headers, on this server
    max_pending_per_ip: int = 64  # the same, from one client address


def _client_ip(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


# Past this many bytes without the end of the request head, the lean path is not tried.
_MAX_HEAD = 16 * 1024


class _GuardedProtocol(asyncio.Protocol):
    """Passes every event to aiohttp's handler; only adds the header deadline. With a
    lean upgrade (upgrade.py), the handler is made only once the first request head has
    been seen and the lean path did not take it."""

    def __init__(self, guard: HttpGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None if guard.upgrade else inner()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._ip = ""
        self._tail = b""  # the last bytes seen while waiting for the end of the headers
        self._head = b""  # the lean path: the request so far, until decided

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # a TCP or TLS stream
        self._ip = _client_ip(transport)
        if self._inner is not None:
            self._inner.connection_made(transport)
        if not self._guard._admit(self):
            self._transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout, self._expire)

    def headers_complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._guard._release(self)

    def _expire(self) -> None:
        self._timer = None
        self._guard._release(self)
        log.debug("http-header-timeout", ip=self._ip)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.headers_complete()
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._decide(data)
            return
        if self._timer is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen:
                self.headers_complete()
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def _decide(self, data: bytes) -> None:
        """The first request's head, whole: the lean path's, or aiohttp's after all."""
        buffer = self._head + data
        end = buffer.find(b"\r\n\r\n")
        if end < 0 and len(buffer) <= _MAX_HEAD:
            self._head = buffer
            return
        self._head = b""
        transport = self._transport
        upgrade = self._guard.upgrade
        if end >= 0 and transport is not None and upgrade is not None:
            self.headers_complete()
            lean = upgrade(buffer[: end + 4], buffer[end + 4 :], transport, self._ip)
            if lean is not None:
                self._inner = lean
                return
        inner = self._inner = self._make_inner()
        if transport is not None:
            inner.connection_made(transport)
        if end < 0:
            self._tail = buffer[-3:]
        inner.data_received(buffer)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


class HttpGuard:
    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        # (request head, bytes after it, transport, client ip) -> the connection's
        # protocol from then on, or None for aiohttp: upgrade.LeanUpgrade, set by _serve.
        self.upgrade: (
            Callable[[bytes, bytes, asyncio.Transport, str], asyncio.Protocol | None] | None
        ) = None
        self._pending = 0
        self._per_ip: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return self._pending

    def wrap(self, inner: Callable[[], asyncio.Protocol]) -> asyncio.Protocol:
        return _GuardedProtocol(self, inner)

    def _admit(self, conn: _GuardedProtocol) -> bool:
        if self._pending >= self.limits.max_pending:
            log.debug("http-refused", ip=conn._ip, reason="server-pending-limit")
            return False
        if self._per_ip[conn._ip] >= self.limits.max_pending_per_ip:
            log.debug("http-refused", ip=conn._ip, reason="ip-pending-limit")
            return False
        self._pending += 1
        self._per_ip[conn._ip] += 1
        return True

    def _release(self, conn: _GuardedProtocol) -> None:
        self._pending -= 1
        self._per_ip[conn._ip] -= 1
        if self._per_ip[conn._ip] <= 0:
            del self._per_ip[conn._ip]


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    guard: HttpGuard,
) -> None:
    # No SO_KEEPALIVE: the kernel's first probe comes after two hours, and signaling has
    # its own keepalive (keepalive_timeout); it was one more system call per connection.
    runner = web.AppRunner(app, handle_signals=True, access_log=None, tcp_keepalive=False)
    await runner.setup()
    server = runner.server
    assert server is not None
    from aiosfu.signal.upgrade import lean_upgrade  # it needs the signaling modules

    guard.upgrade = lean_upgrade(app)
    loop = asyncio.get_running_loop()
    # Over TLS the handler sees the connection only after the handshake, which gets
    # the same deadline (asyncio's own default is 60 s).
    handshake = guard.limits.header_timeout if ssl_context is not None else None
    listener = await loop.create_server(
        lambda: guard.wrap(server),
        host,
        port,
        ssl=ssl_context,
        ssl_handshake_timeout=handshake,
        backlog=128,
    )
    try:
        await asyncio.Future()
    finally:
        listener.close()
        await runner.cleanup()


def run_app(
    app: web.Application,
    host: str,
    port: int,
    limits: GuardLimits,
    ssl_context: ssl.SSLContext | None = None,
    loop: EventLoop = "uvloop",
) -> None:
    """`web.run_app` with the guard in front; SIGINT and SIGTERM shut down as it does."""
    try:
        eventloop.run(_serve(app, host, port, ssl_context, HttpGuard(limits)), loop)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
