"""The seed-002 (protoo-style) signaling envelope and one pydantic model per method.

Field names are exactly those of the protocol text, so a client written from it alone
works unchanged. Models are strict: a string where a number belongs is an error, not a
guess, and every failure becomes a stable `errorCode` with a readable `errorReason`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from aiosfu.contract import CodedError, ErrorCode

Id = Annotated[str, Field(min_length=1, max_length=256)]
# A room id is an identifier, not a title: visible ASCII only, so no control character
# reaches a log or a file name and no lookalike letter passes for another room.
RoomId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[!-~]+$")]


class ProtocolError(CodedError):
    """A frame the envelope refuses; `request_id` is the frame's id when it had a usable one."""

    def __init__(self, code: ErrorCode, reason: str, request_id: int | None = None) -> None:
        super().__init__(code, reason)
        self.request_id = request_id


class Model(BaseModel):
    # Unknown fields are ignored (clients may send more than we read); types are strict.
    model_config = ConfigDict(strict=True, extra="ignore")


class Jsep(Model):
    type: Literal["offer"]
    sdp: str = Field(min_length=1)


class MediaInfo(Model):
    model_config = ConfigDict(strict=True, extra="allow")

    audio: StrictBool = False
    video: StrictBool = False
    audiotype: StrictInt = 0
    videotype: StrictInt = 0


class RoomData(Model):
    rid: RoomId


class JoinData(RoomData):
    bizid: str = Field("", max_length=256)
    # Extensions: the first joiner chooses; later joiners repeat or omit (docs/p2p.md).
    mode: Literal["sfu", "p2p"] | None = None
    capacity: StrictInt | None = Field(None, ge=1, le=100_000)


class LeaveData(RoomData):
    pass


class KeepaliveData(RoomData):
    pass


class PublishData(RoomData):
    jsep: Jsep
    minfo: MediaInfo


class UnpublishData(RoomData):
    mid: Id
    sfuid: str = ""


class SubscribeData(RoomData):
    mid: Id
    jsep: Jsep
    sfuid: str = ""


class UnsubscribeData(RoomData):
    mid: Id
    sid: Id
    sfuid: str = ""


class RecordData(RoomData):
    """Extension `record` (and `stop-record`): a publication to a file (docs/recording.md)."""

    mid: Id
    sfuid: str = ""


class BroadcastData(RoomData):
    data: Any


class AnswerJsep(Model):
    type: Literal["answer"]
    sdp: str = Field(min_length=1)


class IceCandidate(Model):
    """RTCIceCandidateInit as browsers serialize it; an empty `candidate` ends a generation."""

    candidate: str = Field(max_length=2048)
    sdpMid: str | None = Field(None, max_length=256)
    sdpMLineIndex: StrictInt | None = Field(None, ge=0, le=1024)
    usernameFragment: str | None = Field(None, max_length=256)


class RelayData(Model):
    """P2P relay: delivered to peer `to` as a notification of the same method with `from`."""

    rid: RoomId | None = None
    to: Id


class OfferData(RelayData):
    jsep: Jsep


class AnswerData(RelayData):
    jsep: AnswerJsep


class CandidateData(RelayData):
    candidate: IceCandidate | None  # required; null means end of candidates


REQUEST_MODELS: dict[str, type[Model]] = {
    "join": JoinData,
    "leave": LeaveData,
    "keepalive": KeepaliveData,
    "publish": PublishData,
    "unpublish": UnpublishData,
    "subscribe": SubscribeData,
    "unsubscribe": UnsubscribeData,
    "broadcast": BroadcastData,
}


class Request(Model):
    request: Literal[True]
    id: StrictInt
    method: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


def _describe(error: ValidationError, prefix: str) -> str:
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


def parse_frame(text: str, models: dict[str, type[Model]]) -> tuple[Request, Model]:
    """Decode one text frame into the envelope and the method's validated data."""
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"frame is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    request_id = raw.get("id")
    request_id = request_id if type(request_id) is int else None
    try:
        request = Request.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, _describe(exc, ""), request_id) from exc
    model = models.get(request.method)
    if model is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_METHOD, f"unknown method {request.method!r}", request.id
        )
    try:
        data = model.model_validate(request.data)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_PARAMS, _describe(exc, "data"), request.id) from exc
    return request, data


def response_ok(request_id: int, data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"response": True, "id": request_id, "ok": True, "data": data or {}}


def response_error(request_id: int | None, code: ErrorCode, reason: str) -> dict[str, Any]:
    return {
        "response": True,
        "id": request_id,
        "ok": False,
        "errorCode": ErrorCode(code).value,
        "errorReason": reason,
    }


def notification(method: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"notification": True, "method": method, "data": data}
