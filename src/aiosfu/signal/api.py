"""The server API: what an institution's backend does without joining a room.

REST under `/api/v1`, described by the OpenAPI document at `/api/openapi.json`. Every
call carries `Authorization: Bearer <token>` signed with one of the institution's keys,
and sees only that institution's rooms. The grants decide, as LiveKit's do: `roomList`
lists rooms and reads stats, `roomCreate` creates and deletes rooms, `roomAdmin` for a
room manages its participants and streams, `roomRecord` for a room records. The API
needs API keys: an open server has no identities to check, so it answers 403.

The actions are the classroom stage's own (`aiosfu.signal.stage`), so the room hears an
API call exactly as it hears a teacher's request, with `by` naming the caller's uid.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, Field, StrictBool, ValidationError

from aiosfu.room import Room, RoomError
from aiosfu.sfu.interface import SfuError
from aiosfu.signal.access import forbidden
from aiosfu.signal.auth import AuthError, Identity, bearer_token
from aiosfu.signal.grants import Grants
from aiosfu.signal.protocol import Id, Model, RoomId
from aiosfu.signal.service import SignalService, _recording_info
from aiosfu.signal.stage import GrantChanges, Stage

STATUS = {
    "invalid-params": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not-found": 404,
    "not-in-room": 404,
    "unknown-mid": 404,
    "unknown-kind": 404,
    "not-recording": 404,
    "conflict": 409,
    "record-failed": 409,
}

# --- bodies and answers ------------------------------------------------------------


def _no_bool(value: Any) -> Any:
    """JSON Schema's integer includes 230.0 (a backend's JSON library may write that), so
    integers are read laxly, but true is not a number."""
    if isinstance(value, bool):
        raise ValueError("a number is required, not a boolean")
    return value


class CreateRoom(Model):
    rid: RoomId
    mode: Literal["sfu", "p2p"] = "sfu"
    capacity: Annotated[int, BeforeValidator(_no_bool)] = Field(0, ge=0, le=100_000, strict=False)


class MuteBody(Model):
    kind: Literal["audio", "video"]
    muted: StrictBool = True


class RecordBody(Model):
    mid: Id


class RoomInfo(BaseModel):
    rid: str
    mode: str
    capacity: int
    members: int
    publications: list[str]


class RoomList(BaseModel):
    rooms: list[RoomInfo]


class Participant(BaseModel):
    uid: str
    hidden: bool
    grants: dict[str, Any]
    publications: list[str]


class ParticipantList(BaseModel):
    participants: list[Participant]


class GrantsAnswer(BaseModel):
    grants: dict[str, Any]


class RecordingInfo(BaseModel):
    rid: str
    mid: str
    uid: str
    file: str | None
    startedAt: float


class Error(BaseModel):
    errorCode: str
    errorReason: str


class ApiError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


Handler = Callable[[web.Request, Identity], Awaitable[web.StreamResponse]]


class ServerApi:
    def __init__(self, service: SignalService, stage: Stage) -> None:
        self.service = service
        self.stage = stage
        self.owners: dict[str, str] = {}  # rooms created here -> the institution
        service.join_checks.append(self.may_join)

    # --- plumbing ------------------------------------------------------------------

    def route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                identity = self._identity(request)
                return await handler(request, identity)
            except ApiError as exc:
                return _error(exc.code, exc.reason)
            except (AuthError, RoomError, SfuError) as exc:
                return _error(exc.code, exc.reason)

        return run

    def _identity(self, request: web.Request) -> Identity:
        access = self.service.access
        if access.open:
            raise ApiError("forbidden", "the server API needs API keys configured")
        token = bearer_token({}, request.headers)
        if token is None:
            raise ApiError("unauthorized", "Authorization: Bearer <token> is required")
        return access.auth.verify(token)

    @staticmethod
    async def _body(request: web.Request, model: type[Model]) -> Any:
        try:
            raw = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError("invalid-params", f"the body is not JSON: {exc}") from exc
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            raise ApiError("invalid-params", str(exc).replace("\n", "; ")) from exc

    @staticmethod
    def _path(request: web.Request, name: str, model: type[BaseModel]) -> str:
        value = request.match_info[name]
        try:
            model.model_validate({"value": value})
        except ValidationError as exc:
            raise ApiError("invalid-params", f"{name}: {exc.errors()[0]['msg']}") from exc
        return value

    def _room(self, request: web.Request, identity: Identity, grant: str) -> Room:
        """The room of the path, if it is the caller's institution's and the token grants
        `grant` for it."""
        rid = self._path(request, "rid", _RoomPath)
        grants = identity.grants
        if not getattr(grants, grant) or grants.room != rid:
            raise ApiError("forbidden", f"the token does not grant {grant} for room {rid!r}")
        room = self.service.rooms.get(rid)
        if room is None or self._owner(rid, room) != identity.bizid:
            raise ApiError("not-found", f"room {rid!r} has nobody in it")
        return room

    def _owner(self, rid: str, room: Room | None) -> str:
        return room.bizid if room is not None else self.owners.get(rid, "")

    def may_join(self, session: Any, rid: str) -> None:
        owner = self.owners.get(rid)
        if owner and session.identity is not None and session.identity.bizid != owner:
            raise forbidden(f"room {rid!r} belongs to another institution")

    # --- rooms ---------------------------------------------------------------------

    def _require(self, grants: Grants, grant: str) -> None:
        if not getattr(grants, grant):
            raise ApiError("forbidden", f"the token does not grant {grant}")

    async def list_rooms(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        self._require(identity.grants, "roomList")
        rooms = {r.rid: r for r in self.service.rooms if r.bizid == identity.bizid}
        infos = [_room_info(r) for r in rooms.values()]
        for rid, owner in self.owners.items():
            if owner == identity.bizid and rid not in rooms:
                mode, capacity = self.service.rooms.created[rid]
                infos.append(RoomInfo(rid=rid, mode=mode, capacity=capacity, members=0,
                                      publications=[]))  # fmt: skip
        return _json(RoomList(rooms=sorted(infos, key=lambda r: r.rid)))

    async def create_room(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        self._require(identity.grants, "roomCreate")
        body: CreateRoom = await self._body(request, CreateRoom)
        existing = self.service.rooms.get(body.rid)
        if body.rid in self.owners or existing is not None:
            raise ApiError("conflict", f"room {body.rid!r} exists")
        self.owners[body.rid] = identity.bizid
        self.service.rooms.created[body.rid] = (body.mode, body.capacity)
        info = RoomInfo(rid=body.rid, mode=body.mode, capacity=body.capacity, members=0,
                        publications=[])  # fmt: skip
        return _json(info, status=201)

    async def delete_room(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        self._require(identity.grants, "roomCreate")
        rid = self._path(request, "rid", _RoomPath)
        room = self.service.rooms.get(rid)
        if (room is None and rid not in self.owners) or self._owner(rid, room) != identity.bizid:
            raise ApiError("not-found", f"no room {rid!r}")
        if room is not None:
            for uid in list(room.members):
                await self.stage.remove_member(room, uid, identity.uid)
        self.owners.pop(rid, None)
        self.service.rooms.created.pop(rid, None)
        self.stage.removed.pop(rid, None)
        return web.Response(status=204)

    # --- participants and streams ------------------------------------------------------

    async def participants(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomAdmin")
        people = [
            Participant(
                uid=m.uid,
                hidden=m.hidden,
                grants=self.service.access.grants(s, room.rid).claim()
                if (s := self.service.sessions.get(m.uid)) is not None
                else {},
                publications=sorted(p.mid for p in room.publications.values() if p.uid == m.uid),
            )
            for m in room.members.values()
        ]
        return _json(ParticipantList(participants=people))

    def _member(self, request: web.Request, room: Room) -> str:
        uid = self._path(request, "uid", _UidPath)
        if uid not in room.members:
            raise ApiError("not-found", f"{uid!r} is not in room {room.rid!r}")
        return uid

    async def remove(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomAdmin")
        await self.stage.remove_member(room, self._member(request, room), identity.uid)
        return web.Response(status=204)

    async def update_grants(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomAdmin")
        uid = self._member(request, room)
        changes: GrantChanges = await self._body(request, GrantChanges)
        grants = await self.stage.apply_grants(room, uid, changes, identity.uid)
        return _json(GrantsAnswer(grants=grants.claim()))

    async def mute(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomAdmin")
        mid = self._path(request, "mid", _IdPath)
        body: MuteBody = await self._body(request, MuteBody)
        await self.stage.set_muted(room, mid, body.kind, body.muted, identity.uid)
        return web.Response(status=204)

    async def start_recording(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomRecord")
        body: RecordBody = await self._body(request, RecordBody)
        room.publication(body.mid)
        recording = await self.service.sfu.start_recording(room.rid, body.mid)
        return _json(RecordingInfo(**_recording_info(recording)), status=201)

    async def stop_recording(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        room = self._room(request, identity, "roomRecord")
        mid = self._path(request, "mid", _IdPath)
        room.publication(mid)
        recording = await self.service.sfu.stop_recording(room.rid, mid)
        return _json(RecordingInfo(**_recording_info(recording)))

    async def stats(self, request: web.Request, identity: Identity) -> web.StreamResponse:
        self._require(identity.grants, "roomList")
        return web.json_response(
            {
                "pid": os.getpid(),
                "signal": self.service.stats(),
                "sfu": await self.service.sfu.stats(),
            }
        )

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        v1 = "/api/v1/rooms"

        async def document(request: web.Request) -> web.StreamResponse:
            return web.json_response(openapi())

        r.add_get("/api/openapi.json", document)
        r.add_get("/api/v1/stats", self.route(self.stats))
        r.add_get(v1, self.route(self.list_rooms))
        r.add_post(v1, self.route(self.create_room))
        r.add_delete(v1 + "/{rid}", self.route(self.delete_room))
        r.add_get(v1 + "/{rid}/participants", self.route(self.participants))
        r.add_delete(v1 + "/{rid}/participants/{uid}", self.route(self.remove))
        r.add_patch(v1 + "/{rid}/participants/{uid}/grants", self.route(self.update_grants))
        r.add_post(v1 + "/{rid}/publications/{mid}/mute", self.route(self.mute))
        r.add_post(v1 + "/{rid}/recordings", self.route(self.start_recording))
        r.add_delete(v1 + "/{rid}/recordings/{mid}", self.route(self.stop_recording))


class _RoomPath(Model):
    value: RoomId


class _UidPath(Model):
    value: str = Field(pattern=r"^[A-Za-z0-9_.@:#+-]{1,128}$")


class _IdPath(Model):
    value: Id


def _room_info(room: Room) -> RoomInfo:
    return RoomInfo(
        rid=room.rid,
        mode=room.mode,
        capacity=room.capacity,
        members=len(room.members),
        publications=sorted(p.mid for p in room.publications.values() if p.has_media),
    )


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(model.model_dump(mode="json"), status=status)


def _error(code: str, reason: str) -> web.Response:
    status = STATUS.get(code, 409)
    headers = {"WWW-Authenticate": 'Bearer realm="aiosfu"'} if status == 401 else None
    return web.json_response(
        {"errorCode": code, "errorReason": reason}, status=status, headers=headers
    )


# --- the OpenAPI document ----------------------------------------------------------


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


# The same rules as the signaling models (room ids, uids, stream ids); a mid holds a '#',
# which goes percent-encoded (%23) in a path.
_PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "rid": {"type": "string", "pattern": "^[!-~]+$", "minLength": 1, "maxLength": 256},
    "uid": {"type": "string", "pattern": "^[A-Za-z0-9_.@:#+-]{1,128}$"},
    "mid": {"type": "string", "minLength": 1, "maxLength": 256},
    "ingest": {"type": "string", "pattern": "^ing_[0-9a-f]{12}$"},
}


def openapi() -> dict[str, Any]:
    components: dict[str, Any] = {}
    error = {"application/json": {"schema": _schema(Error, components)}}
    refusals = {
        str(code): {"description": name, "content": error}
        for code, name in ((400, "bad input"), (401, "no valid token"),
                           (403, "not granted"), (404, "no such thing"), (409, "conflict"))
    }  # fmt: skip

    def answer(model: type[BaseModel] | None, status: int = 200) -> dict[str, Any]:
        ok: dict[str, Any] = {"description": "done"}
        if model is not None:
            ok["content"] = {"application/json": {"schema": _schema(model, components)}}
        return {str(status): ok, **refusals}

    def body(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "required": True,
            "content": {"application/json": {"schema": _schema(model, components)}},
        }

    def path_params(*names: str) -> list[dict[str, Any]]:
        return [
            {"name": n, "in": "path", "required": True, "schema": _PATH_SCHEMAS[n]} for n in names
        ]

    rooms = "/api/v1/rooms"
    paths: dict[str, Any] = {
        "/api/v1/stats": {"get": {"summary": "Server counters (roomList)",
                                  "responses": answer(None)}},
        rooms: {
            "get": {"summary": "The institution's rooms (roomList)",
                    "responses": answer(RoomList)},
            "post": {"summary": "Create a room (roomCreate)", "requestBody": body(CreateRoom),
                     "responses": answer(RoomInfo, 201)},
        },
        rooms + "/{rid}": {
            "delete": {"summary": "Remove everyone and delete the room (roomCreate)",
                       "parameters": path_params("rid"), "responses": answer(None, 204)},
        },
        rooms + "/{rid}/participants": {
            "get": {"summary": "Participants (roomAdmin)", "parameters": path_params("rid"),
                    "responses": answer(ParticipantList)},
        },
        rooms + "/{rid}/participants/{uid}": {
            "delete": {"summary": "Remove a participant (roomAdmin)",
                       "parameters": path_params("rid", "uid"),
                       "responses": answer(None, 204)},
        },
        rooms + "/{rid}/participants/{uid}/grants": {
            "patch": {"summary": "Change a participant's grants (roomAdmin)",
                      "parameters": path_params("rid", "uid"),
                      "requestBody": body(GrantChanges), "responses": answer(GrantsAnswer)},
        },
        rooms + "/{rid}/publications/{mid}/mute": {
            "post": {"summary": "Mute or unmute a stream's audio or video (roomAdmin)",
                     "parameters": path_params("rid", "mid"), "requestBody": body(MuteBody),
                     "responses": answer(None, 204)},
        },
        rooms + "/{rid}/recordings": {
            "post": {"summary": "Record a stream (roomRecord)", "parameters": path_params("rid"),
                     "requestBody": body(RecordBody), "responses": answer(RecordingInfo, 201)},
        },
        rooms + "/{rid}/recordings/{mid}": {
            "delete": {"summary": "Stop recording a stream (roomRecord)",
                       "parameters": path_params("rid", "mid"),
                       "responses": answer(RecordingInfo)},
        },
    }  # fmt: skip
    from aiosfu.signal.ingest_api import openapi_paths  # it builds on this module

    paths.update(openapi_paths(answer, body, path_params))
    return {
        "openapi": "3.1.0",
        "info": {"title": "aiosfu server API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
        "paths": paths,
    }
