"""The server API (/api/v1): an institution's backend runs a class without joining it;
the OpenAPI document is checked against the running server with schemathesis."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from aiosfu.signal.grants import Grants
from tests.conftest import ServerProcess
from tests.media import PatternTrack
from tests.test_access import KEY_B, ROOM, SECRET_B, connect, keyed, token

pytestmark = pytest.mark.media

__all__ = ["keyed"]  # the fixture

BACKEND = Grants(room=ROOM, roomList=True, roomCreate=True, roomAdmin=True, roomRecord=True)


class Api:
    def __init__(self, server: ServerProcess, bearer: str) -> None:
        self.base = f"{server.http_url}/api/v1"
        self.headers = {"Authorization": f"Bearer {bearer}"}

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.base + path, json=body, headers=self.headers) as r,
        ):
            data = await r.json() if r.content_type == "application/json" else None
            return r.status, data


async def test_a_backend_runs_a_class(keyed: ServerProcess) -> None:
    api = Api(keyed, token("backend", BACKEND))
    status, room = await api.call("POST", "/rooms", {"rid": ROOM, "capacity": 10})
    assert status == 201 and room["capacity"] == 10
    assert (await api.call("POST", "/rooms", {"rid": ROOM}))[0] == 409
    status, listed = await api.call("GET", "/rooms")
    assert listed == {"rooms": [{**room, "members": 0}]}

    teacher = await connect(keyed, "teacher", "teacher")
    joined = await teacher.join(ROOM)
    assert joined["capacity"] == 10  # the room as the backend made it
    student = await connect(keyed, "student")
    await student.join(ROOM)
    status, people = await api.call("GET", f"/rooms/{ROOM}/participants")
    assert status == 200
    assert {p["uid"]: p["grants"]["canPublish"] for p in people["participants"]} == {
        "teacher": True,
        "student": False,
    }

    status, answer = await api.call(
        "PATCH", f"/rooms/{ROOM}/participants/student/grants", {"canPublish": True}
    )
    assert status == 200 and answer["grants"]["canPublish"] is True
    told = await student.signaling.wait_for("grants-updated")
    assert told["by"] == "backend"
    publication = await student.publish(ROOM, [PatternTrack()])
    mid = quote(publication.mid, safe="")  # mids hold a '#'
    path = f"/rooms/{ROOM}/publications/{mid}/mute"
    assert (await api.call("POST", path, {"kind": "video"}))[0] == 204
    muted = await student.signaling.wait_for("stream-muted")
    assert muted["by"] == "backend" and muted["muted"] is True

    status, recording = await api.call(
        "POST", f"/rooms/{ROOM}/recordings", {"mid": publication.mid}
    )
    assert status == 201 and recording["mid"] == publication.mid
    status, stopped = await api.call("DELETE", f"/rooms/{ROOM}/recordings/{mid}")
    assert status == 200 and stopped["file"] == recording["file"]

    assert (await api.call("DELETE", f"/rooms/{ROOM}/participants/student"))[0] == 204
    await student.signaling.wait_for("peer-removed")
    assert (await api.call("DELETE", f"/rooms/{ROOM}/participants/student"))[0] == 404
    assert (await api.call("DELETE", f"/rooms/{ROOM}"))[0] == 204
    await teacher.signaling.wait_for("peer-removed")
    assert (await api.call("GET", "/rooms"))[1] == {"rooms": []}
    await teacher.close()
    await student.close()


async def test_the_api_sees_only_what_the_token_grants(keyed: ServerProcess) -> None:
    teacher = await connect(keyed, "teacher", "teacher")
    await teacher.join(ROOM)
    other_school = Api(keyed, token("b", BACKEND, key=KEY_B, secret=SECRET_B))
    assert (await other_school.call("GET", "/rooms"))[1] == {"rooms": []}
    assert (await other_school.call("DELETE", f"/rooms/{ROOM}"))[0] == 404
    assert (await other_school.call("GET", f"/rooms/{ROOM}/participants"))[0] == 404
    student = Api(keyed, token("s"))
    for method, path in (("GET", "/rooms"), ("GET", f"/rooms/{ROOM}/participants"),
                         ("DELETE", f"/rooms/{ROOM}"), ("GET", "/stats")):  # fmt: skip
        status, error = await student.call(method, path)
        assert status == 403 and error["errorCode"] == "forbidden", (method, path)
    anonymous = Api(keyed, "")
    anonymous.headers = {}
    status, error = await anonymous.call("GET", "/rooms")
    assert status == 401 and error["errorCode"] == "unauthorized"
    assert (await Api(keyed, "garbage").call("GET", "/rooms"))[0] == 401
    assert (await teacher.request("keepalive", {"rid": ROOM})) == {}
    await teacher.close()


async def test_an_open_server_has_no_api(server: ServerProcess) -> None:
    status, error = await Api(server, "x").call("GET", "/rooms")
    assert status == 403 and "API keys" in error["errorReason"]


def test_openapi_document_holds_against_the_server(keyed: ServerProcess, tmp_path: Path) -> None:
    schemathesis = shutil.which("schemathesis", path=str(Path(__import__("sys").executable).parent))
    assert schemathesis, "schemathesis is a test dependency"
    result = subprocess.run(
        [
            schemathesis, "run", f"{keyed.http_url}/api/openapi.json",
            "-H", f"Authorization: Bearer {token('backend', BACKEND)}",
            "--checks", "all", "--max-examples", "25", "--generation-deterministic",
            "--request-timeout", "10",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # (aiohttp itself logs the malformed HTTP schemathesis also sends, e.g. NUL in a header.)
    assert "event=request-failed" not in keyed.log()
