"""Webhooks to a local receiver: signed, in order per room, and every event delivered
after the receiver was down for 10 s."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from aiosfu.signal.grants import Grants
from tests.conftest import ServerProcess, free_port, start_server, stop_server, wait_for
from tests.media import PatternTrack
from tests.test_access import KEY, ROOM, SECRET, announced, connect, token

pytestmark = pytest.mark.media


class Receiver:
    """A backend's webhook endpoint: verifies each POST and keeps the events."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        claims = jwt.decode(
            request.headers["Authorization"], SECRET, algorithms=["HS256"], issuer=KEY
        )
        assert claims["sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
        self.events.append(json.loads(body))
        return web.Response(status=204)

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def hooked(tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, Receiver]]:
    receiver = Receiver(free_port())
    config = tmp_path / "aiosfu.toml"
    config.write_text(
        f'[institutions.school-a]\nkeys = {{ {KEY} = "{SECRET}" }}\nwebhooks = ["{receiver.url}"]\n'
    )
    server = start_server(tmp_path, "--config", str(config))
    yield server, receiver
    stop_server(server)
    await receiver.stop()


async def a_lesson(server: ServerProcess) -> list[str]:
    teacher = await connect(server, "teacher", "teacher")
    await teacher.join(ROOM)
    publication = await teacher.publish(ROOM, [PatternTrack()])
    await announced(publication)
    student = await connect(server, "student")
    await student.join(ROOM)
    await teacher.record(ROOM, publication.mid)
    await asyncio.sleep(0.5)
    await teacher.stop_record(ROOM, publication.mid)
    await teacher.unpublish(publication)
    await student.leave(ROOM)
    await teacher.leave(ROOM)
    await student.close()
    await teacher.close()
    return [
        "room_started",
        "participant_joined",
        "track_published",
        "participant_joined",
        "recording_finished",
        "track_unpublished",
        "participant_left",
        "participant_left",
        "room_finished",
    ]


async def test_events_arrive_signed_and_in_order(hooked) -> None:  # type: ignore[no-untyped-def]
    server, receiver = hooked
    await receiver.start()
    expected = await a_lesson(server)
    await wait_for(lambda: len(receiver.events) >= len(expected), 10)
    assert receiver.names() == expected
    ids = [e["id"] for e in receiver.events]
    assert ids == sorted(ids)
    by_name = {e["event"]: e for e in receiver.events}
    assert by_name["track_published"]["uid"] == "teacher"
    assert by_name["recording_finished"]["file"].endswith((".webm", ".mkv"))
    assert by_name["room_started"]["bizid"] == "school-a"
    assert all(e["rid"] == ROOM for e in receiver.events)


async def test_a_receiver_down_for_10_s_gets_every_event_afterwards(hooked) -> None:  # type: ignore[no-untyped-def]
    server, receiver = hooked
    expected = await a_lesson(server)  # nothing listens on the receiver's port yet
    await asyncio.sleep(10)
    await receiver.start()
    await wait_for(lambda: len(receiver.events) >= len(expected), 15)
    assert receiver.names() == expected
    admin = token("ops", Grants(roomList=True))
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{server.http_url}/stats", headers={"Authorization": f"Bearer {admin}"}) as r,
    ):
        stats = (await r.json())["signal"]["webhooks"]
    assert stats["delivered"] == len(expected) and stats["failedAttempts"] > 0
    assert stats["dropped"] == 0
