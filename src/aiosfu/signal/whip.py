"""WHIP (RFC 9725) and WHEP over HTTP: one POST publishes or subscribes, DELETE ends it.

A WHIP or WHEP resource is a peer without a WebSocket: it joins the room and publishes
(or subscribes) through the same seed-002 handlers a WebSocket peer's frames go to, so
access control, limits, SDP checks and metrics apply exactly as on /ws, and the room
sees an ordinary member. Nothing is told to the resource afterwards (HTTP has no way to
say it): room events sent to it are dropped, and when its media ends on its own
(transport failed, publication removed) the resource ends too.

Trickle ICE over PATCH is not offered (405): the server's answer carries all of its
candidates, and clients put theirs in the offer (RFC 9725 §4.3.1 lets a server refuse).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.signal.auth import Identity
from aiosfu.signal.http import UID_PATTERN, UID_RULE, authenticate
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.whip")

SDP_TYPE = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024

# errorCode -> HTTP status; anything else the handlers refuse with is a bad request.
_STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.UNKNOWN_MID: 404,
    ErrorCode.ROOM_FULL: 409,
    ErrorCode.P2P_ROOM: 409,
    ErrorCode.LIMIT_EXCEEDED: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
}


class HttpPeer(PeerSession):
    """The session of one WHIP/WHEP resource: room events to it go nowhere."""

    def __init__(self, uid: str, resources: Resources, rid: str, **kw: Any) -> None:
        super().__init__(uid, web.WebSocketResponse(), **kw)
        self.resources = resources
        self.rid = rid
        self.watch: tuple[str, str] = ("", "")  # (event, mid) that ends this resource

    def send_text(self, text: str, frame: bytes = b"") -> None:
        event, mid = self.watch
        if event and mid in text and (event in text or "stream-remove" in text):
            message = json.loads(text)
            if message.get("method") in (event, "stream-remove") and (
                message.get("data", {}).get("mid") == mid
            ):
                self.resources.end_soon(self, "media ended")

    async def close(self, code: int, reason: str) -> None:
        """Replaced by a new connection of the same uid, or the server is stopping."""
        self.resources.end_soon(self, reason)


@dataclass
class Resource:
    kind: str  # "whip" or "whep"
    peer: HttpPeer


class Resources:
    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.by_id: dict[str, Resource] = {}
        self._ending: set[asyncio.Task[None]] = set()

    async def end(self, peer: HttpPeer, reason: str) -> None:
        for rid, resource in list(self.by_id.items()):
            if resource.peer is peer:
                del self.by_id[rid]
        if not peer.closed.is_set():
            await self.service.detach(peer)  # leaves the room: unpublishes, unsubscribes
            await peer.stop()
            log.info("resource-ended", uid=peer.uid, rid=peer.rid, reason=reason)

    def end_soon(self, peer: HttpPeer, reason: str) -> None:
        task = asyncio.ensure_future(self.end(peer, reason))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)


RESOURCES_KEY = web.AppKey("whip_resources", Resources)


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code, self.reason = code, reason


async def _request(peer: HttpPeer, method: str, data: dict[str, Any]) -> dict[str, Any]:
    frame = json.dumps({"request": True, "id": 1, "method": method, "data": data})
    response = await peer.resources.service.handle(peer, frame)
    if not response.get("ok"):
        raise _Refused(response.get("errorCode", "internal-error"), response.get("errorReason", ""))
    result: dict[str, Any] = response.get("data", {})
    return result


def _refusal(code: str, reason: str) -> web.Response:
    status = next((s for c, s in _STATUS.items() if c.value == code), 400)
    return web.json_response({"errorCode": code, "errorReason": reason}, status=status)


async def _offer(request: web.Request) -> str:
    if request.content_type != SDP_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"the body must be an SDP offer ({SDP_TYPE})")
    if (request.content_length or 0) > MAX_OFFER_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_OFFER_BYTES, request.content_length or 0)
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_OFFER_BYTES, len(body))
    return body.decode("utf-8", errors="replace")


def _uid(request: web.Request, kind: str) -> tuple[str, Identity | None]:
    identity = authenticate(request, None)
    if identity is not None:
        return identity.uid, identity
    uid = request.query.get("peer") or f"{kind}-{secrets.token_hex(4)}"
    if not UID_PATTERN.fullmatch(uid):
        raise web.HTTPBadRequest(text=f"query parameter 'peer' must be {UID_RULE}")
    return uid, None


async def _create(request: web.Request, kind: str, mid: str = "") -> web.StreamResponse:
    resources = request.app[RESOURCES_KEY]
    rid = request.match_info["room"]
    uid, identity = _uid(request, kind)
    offer = await _offer(request)
    peer = HttpPeer(uid, resources, rid, identity=identity)
    await resources.service.attach(peer)
    try:
        await _request(peer, "join", {"rid": rid})
        jsep = {"type": "offer", "sdp": offer}
        if kind == "whip":
            minfo = {"audio": "m=audio" in offer, "video": "m=video" in offer}
            published = await _request(peer, "publish", {"rid": rid, "jsep": jsep, "minfo": minfo})
            mid, answer = published["mid"], published["jsep"]["sdp"]
            peer.watch = ("publish-failed", mid)
        else:
            subscribed = await _request(peer, "subscribe", {"rid": rid, "mid": mid, "jsep": jsep})
            answer = subscribed["jsep"]["sdp"]
            peer.watch = ("subscribe-failed", mid)
    except _Refused as exc:
        await resources.end(peer, exc.code)
        return _refusal(exc.code, exc.reason)
    except BaseException:
        await resources.end(peer, "failed")
        raise
    resource_id = secrets.token_urlsafe(16)
    resources.by_id[resource_id] = Resource(kind, peer)
    location = f"/{kind}/{quote(rid, safe='')}/resource/{resource_id}"
    log.info(f"{kind}-created", uid=uid, rid=rid, mid=mid)
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP_TYPE,
        headers={"Location": location, "X-Aiosfu-Mid": mid},
    )


async def whip_post(request: web.Request) -> web.StreamResponse:
    return await _create(request, "whip")


async def whep_post(request: web.Request) -> web.StreamResponse:
    return await _create(request, "whep", request.match_info["mid"])


def _resource(request: web.Request) -> Resource:
    resources = request.app[RESOURCES_KEY]
    resource = resources.by_id.get(request.match_info["resource"])
    if resource is None or resource.kind != request.match_info["kind"]:
        raise web.HTTPNotFound(text="no such WHIP/WHEP resource (ended already?)")
    if resource.peer.rid != request.match_info["room"]:
        raise web.HTTPNotFound(text="no such WHIP/WHEP resource in this room")
    identity = authenticate(request, None)
    if identity is not None and identity.uid != resource.peer.uid:
        raise web.HTTPForbidden(text="this resource belongs to another uid")
    return resource


async def resource_delete(request: web.Request) -> web.StreamResponse:
    resource = _resource(request)
    await request.app[RESOURCES_KEY].end(resource.peer, "deleted")
    return web.Response(status=200)


async def resource_patch(request: web.Request) -> web.StreamResponse:
    _resource(request)
    raise web.HTTPMethodNotAllowed(
        "PATCH",
        ["DELETE"],
        text="trickle ICE is not supported: put the candidates in the offer",
    )


def add_whip_routes(app: web.Application, service: SignalService) -> None:
    resources = Resources(service)
    app[RESOURCES_KEY] = resources
    app.router.add_post("/whip/{room}", whip_post)
    app.router.add_post("/whep/{room}/{mid}", whep_post)
    app.router.add_delete("/{kind:whip|whep}/{room}/resource/{resource}", resource_delete)
    app.router.add_patch("/{kind:whip|whep}/{room}/resource/{resource}", resource_patch)

    async def end_all(app: web.Application) -> None:
        for resource in list(resources.by_id.values()):
            await resources.end(resource.peer, "server shutting down")

    app.on_shutdown.append(end_all)
