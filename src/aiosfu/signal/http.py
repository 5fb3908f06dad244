"""HTTP routes: the demo page, the JS SDK, `/ws` signaling, ICE servers and stats."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from aiosfu.config import Config
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.signal import protocol
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.signal")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
UID_PATTERN = re.compile(r"^[\w.@:#+-]{1,128}$")

SERVICE_KEY = web.AppKey("service", SignalService)
CONFIG_KEY = web.AppKey("config", Config)


async def websocket(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    config = request.app[CONFIG_KEY]
    uid = request.query.get("peer", "")
    if not UID_PATTERN.match(uid):
        raise web.HTTPBadRequest(
            text="query parameter 'peer' must be 1-128 letters, digits or ._@:#+-"
        )
    # aiohttp itself closes the socket (1009) past this hard limit; up to it, an oversized
    # frame is answered with an error and the connection carries on.
    ws = web.WebSocketResponse(max_msg_size=config.max_frame_bytes * 4)
    await ws.prepare(request)
    transport = request.transport
    session = PeerSession(uid, ws, abort=transport.abort if transport is not None else lambda: None)
    await service.attach(session)
    log.info("connected", uid=uid, remote=request.remote)
    watchdog = asyncio.ensure_future(_watch_keepalive(session, config.keepalive_timeout))
    try:
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
            elif message.type == WSMsgType.BINARY:
                await session.send(
                    protocol.response_error(
                        None, ErrorCode.BAD_REQUEST, "binary frames are not part of the protocol"
                    )
                )
    finally:
        watchdog.cancel()
        await service.detach(session)
        await session.stop()
        log.info("disconnected", uid=uid, code=ws.close_code)
    return ws


def _utf8_size(text: str, limit: int) -> int:
    """The frame's size on the wire; only encoded when characters alone don't decide."""
    if len(text) > limit or len(text) * 4 <= limit:
        return len(text)
    return len(text.encode())


async def _watch_keepalive(session: PeerSession, limit: float) -> None:
    while not session.ws.closed:
        await asyncio.sleep(min(limit / 4, 1.0))
        if time.monotonic() - session.last_seen > limit:
            log.info("keepalive-timeout", uid=session.uid, timeout=limit)
            await session.close(4000, "keepalive timeout")
            return


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html")


async def ice_servers(request: web.Request) -> web.StreamResponse:
    return web.json_response({"iceServers": request.app[CONFIG_KEY].ice_servers})


async def stats(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    body: dict[str, Any] = {
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "signal": service.stats(),
        "sfu": await service.sfu.stats(),
    }
    return web.json_response(body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/api/ice-servers", ice_servers)
    app.router.add_get("/stats", stats)
    app.router.add_static("/static/", WEB_DIR)
