"""The seed-002 envelope: every method of SPEC §1 parses, every malformed frame gets its
stable error code, and the three outgoing envelopes have exactly the seed-002 shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiosfu.config import Config
from aiosfu.contract import ErrorCode
from aiosfu.room import Rooms
from aiosfu.signal import protocol
from aiosfu.signal.http import CONFIG_KEY, SERVICE_KEY, add_routes
from aiosfu.signal.protocol import (
    REQUEST_MODELS,
    BroadcastData,
    JoinData,
    KeepaliveData,
    LeaveData,
    ProtocolError,
    PublishData,
    SubscribeData,
    UnpublishData,
    UnsubscribeData,
    notification,
    parse_frame,
    response_error,
    response_ok,
)
from aiosfu.signal.service import SignalService

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
MINFO = {"audio": True, "video": True, "audiotype": 0, "videotype": 0}

# One valid request per method of the SPEC §1 table, with the seed-002 field names only.
VALID: dict[str, dict[str, Any]] = {
    "join": {"rid": "room1"},
    "leave": {"rid": "room1"},
    "keepalive": {"rid": "room1"},
    "publish": {"rid": "room1", "jsep": OFFER, "minfo": MINFO},
    "unpublish": {"rid": "room1", "mid": "alice#1", "sfuid": "sfu-1"},
    "subscribe": {"rid": "room1", "mid": "alice#1", "jsep": OFFER, "sfuid": "sfu-1"},
    "unsubscribe": {"rid": "room1", "mid": "alice#1", "sid": "bob#2", "sfuid": "sfu-1"},
    "broadcast": {"rid": "room1", "data": {"text": "hello", "n": [1, 2]}},
}


def frame(method: str, data: Any, request_id: Any = 7, **extra: Any) -> str:
    return json.dumps({"request": True, "id": request_id, "method": method, "data": data, **extra})


def fails(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_frame(text, REQUEST_MODELS)
    return info.value


def test_every_seed_002_method_is_known() -> None:
    # Extensions may add methods; none of the seed-002 table may go missing.
    assert set(VALID) <= set(REQUEST_MODELS)


@pytest.mark.parametrize("method", sorted(VALID))
def test_every_method_parses_with_seed_002_fields(method: str) -> None:
    request, data = parse_frame(frame(method, VALID[method], 42), REQUEST_MODELS)
    assert request.request is True
    assert request.id == 42
    assert request.method == method
    assert isinstance(data, REQUEST_MODELS[method])
    assert data.rid == "room1"


def test_parsed_values_are_the_ones_sent() -> None:
    _, join = parse_frame(frame("join", {"rid": "r", "bizid": "class-3"}), REQUEST_MODELS)
    assert isinstance(join, JoinData) and join.bizid == "class-3"
    _, leave = parse_frame(frame("leave", {"rid": "r"}), REQUEST_MODELS)
    assert isinstance(leave, LeaveData)
    _, keepalive = parse_frame(frame("keepalive", {"rid": "r"}), REQUEST_MODELS)
    assert isinstance(keepalive, KeepaliveData)

    _, pub = parse_frame(frame("publish", VALID["publish"]), REQUEST_MODELS)
    assert isinstance(pub, PublishData)
    assert pub.jsep.type == "offer" and pub.jsep.sdp == OFFER["sdp"]
    assert pub.minfo.audio is True and pub.minfo.video is True
    assert pub.minfo.audiotype == 0 and pub.minfo.videotype == 0

    _, unpub = parse_frame(frame("unpublish", VALID["unpublish"]), REQUEST_MODELS)
    assert isinstance(unpub, UnpublishData)
    assert (unpub.mid, unpub.sfuid) == ("alice#1", "sfu-1")

    _, sub = parse_frame(frame("subscribe", VALID["subscribe"]), REQUEST_MODELS)
    assert isinstance(sub, SubscribeData)
    assert (sub.mid, sub.sfuid, sub.jsep.sdp) == ("alice#1", "sfu-1", OFFER["sdp"])

    _, unsub = parse_frame(frame("unsubscribe", VALID["unsubscribe"]), REQUEST_MODELS)
    assert isinstance(unsub, UnsubscribeData)
    assert (unsub.mid, unsub.sid, unsub.sfuid) == ("alice#1", "bob#2", "sfu-1")

    _, bcast = parse_frame(frame("broadcast", VALID["broadcast"]), REQUEST_MODELS)
    assert isinstance(bcast, BroadcastData)
    assert bcast.data == {"text": "hello", "n": [1, 2]}


def test_optional_fields_default_and_unknown_fields_are_ignored() -> None:
    # sfuid is optional, minfo keeps extra keys, unknown data fields do not fail.
    _, sub = parse_frame(
        frame("subscribe", {"rid": "r", "mid": "m", "jsep": OFFER, "future": 1}), REQUEST_MODELS
    )
    assert isinstance(sub, SubscribeData) and sub.sfuid == ""
    _, pub = parse_frame(
        frame("publish", {"rid": "r", "jsep": OFFER, "minfo": {"audio": True, "screen": 1}}),
        REQUEST_MODELS,
    )
    assert isinstance(pub, PublishData)
    assert pub.minfo.video is False
    assert pub.minfo.model_dump()["screen"] == 1


def test_data_may_be_omitted_for_a_method_without_required_fields() -> None:
    models = {"ping": protocol.Model}
    request, _ = parse_frame(json.dumps({"request": True, "id": 1, "method": "ping"}), models)
    assert request.data == {}


# --- bad-json ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "not json", '{"request": true, "id": 3,', "{'a': 1}"])
def test_not_json_is_bad_json_without_id(text: str) -> None:
    error = fails(text)
    assert error.code == "bad-json" == ErrorCode.BAD_JSON
    assert error.request_id is None
    assert "JSON" in error.reason


# --- bad-request ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["[]", "1", '"join"', "null", "true"])
def test_a_frame_that_is_not_an_object_is_bad_request(text: str) -> None:
    error = fails(text)
    assert error.code == "bad-request"
    assert error.request_id is None


def test_missing_request_flag_is_bad_request_and_keeps_the_id() -> None:
    error = fails(json.dumps({"id": 5, "method": "join", "data": {"rid": "r"}}))
    assert error.code == "bad-request"
    assert error.request_id == 5
    assert "request" in error.reason


def test_request_flag_false_is_bad_request() -> None:
    error = fails(json.dumps({"request": False, "id": 5, "method": "join", "data": {"rid": "r"}}))
    assert error.code == "bad-request"
    assert error.request_id == 5


@pytest.mark.parametrize(
    "request_id",
    [pytest.param(None, id="null"), "7", True, False, 1.5, [1]],
)
def test_id_must_be_an_integer(request_id: Any) -> None:
    error = fails(frame("join", {"rid": "r"}, request_id))
    assert error.code == "bad-request"
    assert error.request_id is None  # never echo a non-integer id
    assert "id" in error.reason


def test_missing_id_is_bad_request() -> None:
    error = fails(json.dumps({"request": True, "method": "join", "data": {"rid": "r"}}))
    assert error.code == "bad-request"
    assert error.request_id is None
    assert "id" in error.reason


@pytest.mark.parametrize("method", [1, None, ["join"], {"m": "join"}, ""])
def test_method_must_be_a_non_empty_string(method: Any) -> None:
    error = fails(frame(method, {"rid": "r"}, 9))
    assert error.code == "bad-request"
    assert error.request_id == 9
    assert "method" in error.reason


def test_missing_method_is_bad_request() -> None:
    error = fails(json.dumps({"request": True, "id": 9, "data": {}}))
    assert error.code == "bad-request"
    assert error.request_id == 9
    assert "method" in error.reason


@pytest.mark.parametrize("data", [[], "rid", 3])
def test_data_must_be_an_object(data: Any) -> None:
    error = fails(frame("join", data, 4))
    assert error.code == "bad-request"
    assert error.request_id == 4
    assert "data" in error.reason


# --- unknown-method ---------------------------------------------------------------


def test_unknown_method_keeps_the_id() -> None:
    error = fails(frame("dance", {"rid": "r"}, 11))
    assert error.code == "unknown-method"
    assert error.request_id == 11
    assert "dance" in error.reason


# --- invalid-params ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "data", "field"),
    [
        pytest.param("join", {}, "data.rid", id="join-missing-rid"),
        pytest.param("join", {"rid": 123}, "data.rid", id="rid-int"),
        pytest.param("join", {"rid": ""}, "data.rid", id="rid-empty"),
        pytest.param("join", {"rid": None}, "data.rid", id="rid-null"),
        pytest.param("join", {"rid": "x" * 257}, "data.rid", id="rid-too-long"),
        pytest.param("leave", {"rid": ["r"]}, "data.rid", id="leave-rid-list"),
        pytest.param("keepalive", {}, "data.rid", id="keepalive-missing-rid"),
        pytest.param("publish", {"rid": "r", "minfo": MINFO}, "data.jsep", id="publish-no-jsep"),
        pytest.param(
            "publish",
            {"rid": "r", "jsep": {"type": "answer", "sdp": "v=0"}, "minfo": MINFO},
            "data.jsep.type",
            id="jsep-answer",
        ),
        pytest.param(
            "publish",
            {"rid": "r", "jsep": {"type": "offer", "sdp": ""}, "minfo": MINFO},
            "data.jsep.sdp",
            id="jsep-empty-sdp",
        ),
        pytest.param("publish", {"rid": "r", "jsep": OFFER}, "data.minfo", id="publish-no-minfo"),
        pytest.param(
            "publish",
            {"rid": "r", "jsep": OFFER, "minfo": {"audio": "yes"}},
            "data.minfo.audio",
            id="minfo-audio-yes",
        ),
        pytest.param(
            "publish",
            {"rid": "r", "jsep": OFFER, "minfo": {"videotype": "0"}},
            "data.minfo.videotype",
            id="minfo-videotype-str",
        ),
        pytest.param("unpublish", {"rid": "r"}, "data.mid", id="unpublish-no-mid"),
        pytest.param("subscribe", {"rid": "r", "jsep": OFFER}, "data.mid", id="subscribe-no-mid"),
        pytest.param("subscribe", {"rid": "r", "mid": "m"}, "data.jsep", id="subscribe-no-jsep"),
        pytest.param(
            "subscribe",
            {"rid": "r", "mid": "m", "jsep": OFFER, "sfuid": 1},
            "data.sfuid",
            id="subscribe-sfuid-int",
        ),
        pytest.param("unsubscribe", {"rid": "r", "mid": "m"}, "data.sid", id="unsubscribe-no-sid"),
        pytest.param("unsubscribe", {"rid": "r", "sid": "s"}, "data.mid", id="unsubscribe-no-mid"),
        pytest.param("broadcast", {"rid": "r"}, "data.data", id="broadcast-no-data"),
    ],
)
def test_invalid_params_names_the_bad_field(method: str, data: Any, field: str) -> None:
    error = fails(frame(method, data, 21))
    assert error.code == "invalid-params"
    assert error.request_id == 21
    assert field in error.reason


def test_invalid_params_names_every_bad_field() -> None:
    error = fails(frame("unsubscribe", {"rid": 1}, 3))
    assert error.code == "invalid-params"
    for field in ("data.rid", "data.mid", "data.sid"):
        assert field in error.reason


def test_protocol_error_carries_code_and_reason() -> None:
    error = ProtocolError("bad-request", "why", 3)
    assert (error.code, error.reason, error.request_id) == ("bad-request", "why", 3)
    assert str(error) == "bad-request: why"


# --- outgoing envelopes -----------------------------------------------------------


def test_response_ok_shape() -> None:
    assert response_ok(3, {"mid": "m"}) == {
        "response": True,
        "id": 3,
        "ok": True,
        "data": {"mid": "m"},
    }
    assert response_ok(4) == {"response": True, "id": 4, "ok": True, "data": {}}
    assert response_ok(5, {}) == {"response": True, "id": 5, "ok": True, "data": {}}


def test_response_error_shape() -> None:
    assert response_error(3, "not-in-room", "peer u has not joined") == {
        "response": True,
        "id": 3,
        "ok": False,
        "errorCode": "not-in-room",
        "errorReason": "peer u has not joined",
    }
    assert response_error(None, "bad-json", "x")["id"] is None


def test_notification_shape() -> None:
    data = {"rid": "r", "uid": "u", "bizid": ""}
    assert notification("peer-join", data) == {
        "notification": True,
        "method": "peer-join",
        "data": data,
    }


def test_envelopes_serialise_to_plain_json() -> None:
    for message in (response_ok(1, {"a": 1}), response_error(None, "bad-json", "x")):
        assert json.loads(json.dumps(message)) == message
    assert json.dumps(response_error(None, "bad-json", "x")).count('"id": null') == 1


# --- the frame size limit, through the real /ws route (in-process, loopback only) --------


class NoMediaSfu:
    """Just enough of the `Sfu` protocol for signaling that never reaches media."""

    sfuid = "sfu-1"

    def set_listener(self, listener: object) -> None:
        pass

    async def close_peer(self, rid: str, uid: str) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


@pytest.fixture
async def ws_client() -> AsyncIterator[TestClient]:
    config = Config(max_frame_bytes=1024)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[SERVICE_KEY] = SignalService(Rooms(), NoMediaSfu(), config.signal_id)  # type: ignore[arg-type]
    add_routes(app)
    async with TestClient(TestServer(app)) as client:
        yield client


async def _roundtrip(ws: Any, text: str) -> dict[str, Any]:
    await ws.send_str(text)
    return await ws.receive_json(timeout=5)


async def test_frame_above_max_frame_bytes_is_frame_too_large(ws_client: TestClient) -> None:
    ws = await ws_client.ws_connect("/ws?peer=alice")
    ok = await _roundtrip(ws, frame("join", {"rid": "r"}, 1))
    assert ok["ok"] is True
    big = frame("broadcast", {"rid": "r", "data": "x" * 1100}, 2)
    reply = await _roundtrip(ws, big)
    assert reply["errorCode"] == "frame-too-large" and reply["id"] is None
    assert (await _roundtrip(ws, frame("keepalive", {"rid": "r"}, 3)))["ok"] is True
    await ws.close()


async def test_frame_limit_counts_bytes_not_characters(ws_client: TestClient) -> None:
    ws = await ws_client.ws_connect("/ws?peer=alice")
    await _roundtrip(ws, frame("join", {"rid": "r"}, 1))
    text = json.dumps(
        {"request": True, "id": 2, "method": "broadcast", "data": {"rid": "r", "data": "中" * 900}},
        ensure_ascii=False,
    )
    assert len(text) < 1024 < len(text.encode())  # 983 characters, 2783 bytes
    reply = await _roundtrip(ws, text)
    await ws.close()
    assert reply.get("errorCode") == "frame-too-large", reply
