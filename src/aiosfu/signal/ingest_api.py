"""RTSP cameras through the server API: start, list and stop ingests (docs/rtsp.md).

`POST /api/v1/rooms/{rid}/ingests` starts one, `GET` on the same path lists the room's,
`DELETE /api/v1/ingests/{ingest}` stops one and unpublishes it. The caller needs
`roomAdmin` for the room, as for the room's other streams; the room may be empty (the
camera is often the first one in), but not another institution's. Each ingest runs as its
own `aiosfu ingest` process (`aiosfu.ingest.workers` says why) and joins the room with a
token minted here, signed with the caller's API key, that may publish and nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool

from aiosfu.ingest.workers import IngestLimitError, IngestSpec, IngestWorker, IngestWorkers, redact
from aiosfu.signal.api import ApiError, ServerApi, _json, _RoomPath
from aiosfu.signal.auth import Identity
from aiosfu.signal.grants import Grants
from aiosfu.signal.protocol import Model

TOKEN_TTL = 3600.0  # each (re)start of the process gets a fresh token
UID_PATTERN = r"^[A-Za-z0-9_.@:#+-]{1,128}$"
INGEST_ID_PATTERN = r"^ing_[0-9a-f]{12}$"


class StartIngest(Model):
    url: str = Field(pattern=r"^rtsps?://\S+$", max_length=2048)
    uid: str | None = Field(None, pattern=UID_PATTERN)
    audio: StrictBool = True
    rtspTransport: Literal["tcp", "udp"] = "tcp"


class IngestInfo(BaseModel):
    id: str
    rid: str
    uid: str
    url: str  # without the camera's password
    state: Literal["connecting", "live", "retrying", "failed"]
    lastError: str
    restarts: int
    startedAt: float


class IngestList(BaseModel):
    ingests: list[IngestInfo]


class _IngestPath(Model):
    value: str = Field(pattern=INGEST_ID_PATTERN)


def _info(worker: IngestWorker) -> IngestInfo:
    spec = worker.spec
    return IngestInfo(
        id=worker.id, rid=spec.rid, uid=spec.uid, url=redact(spec.url), state=worker.state,
        lastError=worker.last_error, restarts=worker.restarts, startedAt=worker.started_at,
    )  # fmt: skip


class IngestApi:
    def __init__(self, api: ServerApi, workers: IngestWorkers) -> None:
        self.api = api
        self.workers = workers

    def _admin_of(self, rid: str, identity: Identity) -> None:
        """`roomAdmin` for `rid`, and `rid` not another institution's room."""
        grants = identity.grants
        if not grants.roomAdmin or grants.room != rid:
            raise ApiError("forbidden", f"the token does not grant roomAdmin for room {rid!r}")
        room = self.api.service.rooms.get(rid)
        owner = self.api._owner(rid, room)
        if owner and owner != identity.bizid:
            raise ApiError("not-found", f"no room {rid!r}")

    def _room_ingests(self, rid: str, identity: Identity) -> list[IngestWorker]:
        return [
            w
            for w in self.workers.workers.values()
            if w.spec.rid == rid and w.spec.bizid == identity.bizid
        ]

    async def start(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        rid = self.api._path(request, "rid", _RoomPath)
        self._admin_of(rid, identity)
        body: StartIngest = await self.api._body(request, StartIngest)
        taken = {w.spec.uid for w in self._room_ingests(rid, identity)}
        room = self.api.service.rooms.get(rid)
        if room is not None:
            taken |= set(room.members)
        uid = body.uid or next(f"camera-{n}" for n in range(1, len(taken) + 2)
                               if f"camera-{n}" not in taken)  # fmt: skip
        if uid in taken:
            raise ApiError("conflict", f"{uid!r} is already in room {rid!r}")
        spec = IngestSpec(url=body.url, rid=rid, uid=uid, bizid=identity.bizid,
                          audio=body.audio, transport=body.rtspTransport)  # fmt: skip
        grants = Grants(room=rid, roomJoin=True, canPublish=True, canSubscribe=False,
                        canPublishData=False)  # fmt: skip
        auth = self.api.service.access.auth

        def token() -> str:
            return auth.mint(identity.key, uid, grants, ttl=TOKEN_TTL)

        try:
            worker = self.workers.start(spec, token)
        except IngestLimitError as exc:
            raise ApiError("limit-exceeded", str(exc)) from exc
        return _json(_info(worker), status=201)

    async def list(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        rid = self.api._path(request, "rid", _RoomPath)
        self._admin_of(rid, identity)
        ingests = sorted(self._room_ingests(rid, identity), key=lambda w: w.started_at)
        return _json(IngestList(ingests=[_info(w) for w in ingests]))

    async def stop(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        ingest_id = self.api._path(request, "ingest", _IngestPath)
        worker = self.workers.workers.get(ingest_id)
        if worker is None or worker.spec.bizid != identity.bizid:
            raise ApiError("not-found", f"no ingest {ingest_id!r}")
        self._admin_of(worker.spec.rid, identity)
        await self.workers.stop(ingest_id)
        return web.Response(status=204)

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/api/v1/rooms/{rid}/ingests", self.api.route(self.start))
        r.add_get("/api/v1/rooms/{rid}/ingests", self.api.route(self.list))
        r.add_delete("/api/v1/ingests/{ingest}", self.api.route(self.stop))


def openapi_paths(answer: Any, body: Any, path_params: Any) -> dict[str, Any]:
    """This API's part of the OpenAPI document (built with the document's own helpers)."""
    return {
        "/api/v1/rooms/{rid}/ingests": {
            "post": {"summary": "Pull an RTSP camera into the room (roomAdmin)",
                     "parameters": path_params("rid"), "requestBody": body(StartIngest),
                     "responses": answer(IngestInfo, 201)},
            "get": {"summary": "The room's RTSP cameras and their state (roomAdmin)",
                    "parameters": path_params("rid"), "responses": answer(IngestList)},
        },
        "/api/v1/ingests/{ingest}": {
            "delete": {"summary": "Stop pulling a camera and unpublish it (roomAdmin)",
                       "parameters": path_params("ingest"), "responses": answer(None, 204)},
        },
    }  # fmt: skip
