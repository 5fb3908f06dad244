"""The JS SDK reconnects on its own: the page's signaling socket is cut (a TCP proxy
between Chromium and the server drops every connection, as a restarting load balancer
or a network change does), and the page opens a new socket, joins again, republishes
its camera and resubscribes to the teacher, whose video it decodes again."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from playwright.async_api import Browser

from aiosfu.client import Client
from tests.conftest import ServerProcess, free_port
from tests.media import PatternTrack

pytestmark = [pytest.mark.browser, pytest.mark.media]

PAGE = """async ([wsUrl]) => {
  const { Client } = await import("/static/aiosfu.js");
  const client = new Client({ iceServers: [], reconnectDelay: 200 });
  const events = [];
  for (const name of ["close", "reconnecting", "republished", "resubscribed", "reconnected"]) {
    client.on(name, (data) => events.push({
      name,
      mid: data.mid ?? data.publication?.mid ?? null,
      rooms: data.rooms ?? null,
    }));
  }
  window.sdk = { client, events };
  await client.connect(wsUrl, "student");
  const joined = await client.join("class");
  const camera = await navigator.mediaDevices.getUserMedia({ audio: false, video: true });
  const pub = await client.publish("class", camera);
  const teacher = joined.pubs.find((p) => p.uid === "teacher");
  await client.subscribe("class", teacher.mid, teacher.sfuid, teacher.minfo);
  return { mine: pub.mid, teacher: teacher.mid };
}"""

DECODED = """async (mid) => {
  const sub = window.sdk.client.subscriptions.get(mid);
  if (!sub) return -1;
  let frames = 0;
  (await sub.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded ?? 0;
  });
  return frames;
}"""


class CuttingProxy:
    """Forwards TCP to the server; `cut` drops every connection open at that moment."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> int:
        cut = len(self.writers)
        for writer in list(self.writers):
            writer.transport.abort()
        return cut

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def test_the_page_rejoins_republishes_and_resubscribes_after_its_socket_drops(
    server: ServerProcess, browser: Browser
) -> None:
    teacher = await Client.connect(server.ws_url, "teacher", ice_ips=["127.0.0.1"])
    await teacher.join("class")
    await teacher.publish("class", [PatternTrack(320, 240)])
    proxy = CuttingProxy(server.port)
    await proxy.start()
    page = await (await browser.new_context()).new_page()
    try:
        await page.goto(f"http://127.0.0.1:{proxy.port}/")
        mids = await page.evaluate(PAGE, [f"ws://127.0.0.1:{proxy.port}/ws"])

        async def decoded() -> int:
            return int(await page.evaluate(DECODED, mids["teacher"]))

        async def decoding_more_than(n: int) -> None:
            for _ in range(200):
                if await decoded() > n:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"the page decoded no more than {n} frames of the teacher")

        await decoding_more_than(10)
        seen = len(teacher.signaling.notifications)
        assert proxy.cut() >= 2  # the page's signaling socket, both directions

        await wait_for_event(page, "reconnected")
        events = await page.evaluate("() => window.sdk.events")
        names = [e["name"] for e in events]
        assert names.index("close") < names.index("reconnecting") < names.index("reconnected")
        republished = next(e for e in events if e["name"] == "republished")
        assert republished["mid"] != mids["mine"]  # a new publication of the same camera
        assert any(e["name"] == "resubscribed" and e["mid"] == mids["teacher"] for e in events)
        assert events[-1]["rooms"] == ["class"]
        await decoding_more_than(10)  # the new subscription's own counter, from zero

        # The rest of the room saw the student leave and publish again.
        added = await teacher.signaling.wait_for(
            "stream-add", lambda d: d["mid"] == republished["mid"], start=seen, timeout=15
        )
        assert added["uid"] == "student"
    finally:
        await page.close()
        await proxy.close()
        await teacher.close()


async def wait_for_event(page, name: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async def happened() -> bool:
        events = await page.evaluate("() => window.sdk.events")
        return any(e["name"] == name for e in events)

    deadline = asyncio.get_running_loop().time() + timeout
    while not await happened():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no {name} event within {timeout} s")
        await asyncio.sleep(0.1)
