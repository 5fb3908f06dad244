"""HTTP routes: the demo page, the JS SDK, `/ws` signaling, ICE servers and stats."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from aiosfu.config import Config
from aiosfu.contract import ErrorCode
from aiosfu.health import add_health_routes
from aiosfu.log import get_logger
from aiosfu.signal import protocol, turn
from aiosfu.signal.access import AccessControl
from aiosfu.signal.auth import AuthError, Identity, bearer_token
from aiosfu.signal.limits import TokenBucket
from aiosfu.signal.origin import origin_allowed_for
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession, SignalSocket

log = get_logger("aiosfu.signal")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# ASCII only: a uid is shown to people, and full-width or Cyrillic lookalikes of another
# uid must not pass for it. Used with fullmatch (a `$` would let a trailing newline in).
UID_PATTERN = re.compile(r"[A-Za-z0-9_.@:#+-]{1,128}")
UID_RULE = "1-128 ASCII letters, digits or _.@:#+-"

# protoo's own clients (protoo-client, go-protoo) ask for this subprotocol and give up
# when the server does not answer it; clients that ask for none are served the same.
SUBPROTOCOLS = ("protoo",)

SERVICE_KEY = web.AppKey("service", SignalService)
CONFIG_KEY = web.AppKey("config", Config)


class KeepaliveWatch:
    """Removes peers silent past the keepalive timeout: one sweep over every session per
    period, started with the first connection. A timer task per connection did the same
    with one wake-up per member per second, 5,000 a second in a lecture hall: with their
    timers, about a tenth of the server's CPU during a 5,000-member join storm."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def start(self, service: SignalService, limit: float) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._sweep(service, limit))

    async def stop(self, app: web.Application | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweep(self, service: SignalService, limit: float) -> None:
        while True:
            await asyncio.sleep(min(limit / 4, 1.0))
            deadline = time.monotonic() - limit
            for session in [s for s in service.sessions.values() if s.last_seen < deadline]:
                if not session.ws.closed:
                    log.info("keepalive-timeout", uid=session.uid, timeout=limit)
                    closing = asyncio.ensure_future(session.close(4000, "keepalive timeout"))
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
                    session.touch()  # closing: not timed out twice


KEEPALIVE_KEY = web.AppKey("keepalive", KeepaliveWatch)


async def websocket(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    config = request.app[CONFIG_KEY]
    uid, identity = admit(
        service,
        config,
        request.headers,
        request.query,
        secure=request.secure,
        host=request.host,
        remote=request.remote or "",
    )
    # aiohttp itself closes the socket (1009) past this hard limit; up to it, an oversized
    # frame is answered with an error and the connection carries on. No permessage-deflate
    # (browsers offer it): it would compress a room event once per recipient, where
    # encoding it once is the point (docs/large-rooms.md), and signaling frames are small.
    ws = web.WebSocketResponse(
        max_msg_size=config.max_frame_bytes * 4, protocols=SUBPROTOCOLS, compress=False
    )
    await ws.prepare(request)
    transport = request.transport
    assert transport is not None
    await serve_session(
        service, config, request.app[KEEPALIVE_KEY], ws, transport, uid, identity, request.remote
    )
    return ws


def admit(
    service: SignalService,
    config: Config,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    secure: bool,
    host: str,
    remote: str,
    quiet: bool = False,
) -> tuple[str, Identity | None]:
    """Everything that can refuse an upgrade, before any state changes: the peer's uid and
    verified token, or the HTTP error to answer with. `quiet`: log no refusal (the lean
    path, which leaves refusals to this same check on aiohttp's path)."""
    access = service.access
    if not origin_allowed_for(headers, config.allowed_origins, secure, host):
        if not quiet:
            log.info("origin-refused", origin=headers.get("Origin", ""), remote=remote)
        raise web.HTTPForbidden(text="pages of this origin may not open a signaling connection")
    if access.connections >= access.limits.connections:
        raise web.HTTPServiceUnavailable(text="the server is at its connection limit")
    uid = query.get("peer", "")
    identity = _verify(access, headers, query, uid or None, remote, quiet)
    if identity is not None:
        uid = identity.uid
    if not UID_PATTERN.fullmatch(uid):
        raise web.HTTPBadRequest(text=f"query parameter 'peer' must be {UID_RULE}")
    return uid, identity


def authenticate(request: web.Request, uid: str | None) -> Identity | None:
    """The request's verified token, None in open mode; HTTP 401 when it has none that
    holds."""
    access = request.app[SERVICE_KEY].access
    return _verify(access, request.headers, request.query, uid, request.remote or "", False)


def _verify(
    access: AccessControl,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    uid: str | None,
    remote: str,
    quiet: bool,
) -> Identity | None:
    if access.open:
        return None
    token = bearer_token(query, headers)
    if token is None:
        raise _unauthorized("a token is required (?token= or Authorization: Bearer)")
    try:
        return access.auth.verify(token, uid)
    except AuthError as exc:
        if not quiet:
            log.info("token-refused", reason=exc.reason, remote=remote)
        raise _unauthorized(exc.reason) from exc


def _unauthorized(reason: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(text=reason, headers={"WWW-Authenticate": 'Bearer realm="aiosfu"'})


async def serve_session(
    service: SignalService,
    config: Config,
    keepalive: KeepaliveWatch,
    ws: SignalSocket,
    transport: asyncio.Transport,
    uid: str,
    identity: Identity | None,
    remote: str | None,
) -> None:
    """One admitted peer's connection, upgraded by aiohttp or by the lean path, to its end."""
    access = service.access
    access.connections += 1
    session = PeerSession(
        uid,
        ws,
        abort=transport.abort,
        identity=identity,
        bucket=TokenBucket(config.rate_limit, config.rate_burst),
        transport=transport,
    )
    try:
        await service.attach(session)
        log.info("connected", uid=uid, remote=remote)
        keepalive.start(service, config.keepalive_timeout)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                size = _utf8_size(message.data, config.max_frame_bytes)
                if size > config.max_frame_bytes:
                    response = protocol.response_error(
                        None,
                        ErrorCode.FRAME_TOO_LARGE,
                        f"frame of {size} bytes exceeds {config.max_frame_bytes}",
                    )
                else:
                    response = await service.handle(session, message.data)
                await session.send(response)
                # A socket's buffered frames come out without yielding: let the other
                # sockets in between, and read a peer past its rate no faster than its
                # rate, so a flood fills its own TCP window instead of our event loop.
                if response.get("errorCode") == ErrorCode.RATE_LIMITED:
                    await asyncio.sleep(1.0 / config.rate_limit)
                else:
                    await asyncio.sleep(0)
            elif message.type == WSMsgType.BINARY:
                await session.send(
                    protocol.response_error(
                        None, ErrorCode.BAD_REQUEST, "binary frames are not part of the protocol"
                    )
                )
    finally:
        access.connections -= 1
        await service.detach(session)
        await session.stop()
        log.info("disconnected", uid=uid, code=ws.close_code)


def _utf8_size(text: str, limit: int) -> int:
    """The frame's size on the wire; only encoded when characters alone don't decide."""
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode())


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def ice_servers(request: web.Request) -> web.StreamResponse:
    """With tokens, TURN credentials are only for their holders (and name them)."""
    config = request.app[CONFIG_KEY]
    identity = authenticate(request, None)
    uid = identity.uid if identity is not None else request.query.get("peer", "")
    if not UID_PATTERN.fullmatch(uid):
        uid = "anonymous"
    servers = turn.ice_servers(
        config.ice_servers, config.turn_urls, config.turn_secret, uid, config.turn_ttl
    )
    return web.json_response({"iceServers": servers})


async def stats(request: web.Request) -> web.StreamResponse:
    """Every room, member and stream of the server: an operator's view, so with tokens
    only a token granting `roomList` reads it."""
    service = request.app[SERVICE_KEY]
    authorize_admin(request)
    body: dict[str, Any] = {
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "signal": service.stats(),
        "sfu": await service.sfu.stats(),
    }
    return web.json_response(body)


async def dashboard(request: web.Request) -> web.StreamResponse:
    """The live page (web/dashboard.*); it reads /stats with the token it was given."""
    authorize_admin(request)
    return web.FileResponse(WEB_DIR / "dashboard.html")


def authorize_admin(request: web.Request) -> None:
    """The operator's pages (/stats, /metrics, /dashboard): with tokens, only a token
    granting `roomList` reads them; HTTP 401 without one, 403 with one that does not."""
    identity = authenticate(request, None)
    if identity is not None and not identity.grants.roomList:
        raise web.HTTPForbidden(text=f"{request.path} needs a token granting roomList")


def add_routes(app: web.Application) -> None:
    watch = app[KEEPALIVE_KEY] = KeepaliveWatch()
    app.on_cleanup.append(watch.stop)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/ice-servers", ice_servers)
    app.router.add_get("/stats", stats)
    app.router.add_get("/dashboard", dashboard)
    app.router.add_static("/static/", WEB_DIR)
    add_health_routes(app)
