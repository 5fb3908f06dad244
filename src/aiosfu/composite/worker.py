"""`aiosfu composite`: a room joined like any client, every publication subscribed,
mixed and tiled on a steady clock, and encoded once to RTMP, HLS or MP4.

The clock is the wall clock: output frame `n` is the room as it is `n / fps` seconds
after the start, audio and video stamped from the same count, so they stay in sync
however the sources' own clocks run and whoever comes and goes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import av

from aiosfu.client import Client, SignalingError
from aiosfu.composite.audio import mix, rms
from aiosfu.composite.canvas import Tile
from aiosfu.composite.layout import layout
from aiosfu.composite.output import EncoderThread, Job, OutputError, Settings, Target
from aiosfu.composite.source import Source
from aiosfu.composite.speaker import ActiveSpeaker
from aiosfu.log import get_logger

log = get_logger("aiosfu.composite")

# Past this many seconds of jobs waiting for the encoder, ticks go without a new picture
# (the last one is repeated) so that the audio and the clock keep going.
ENCODER_SLACK_SECONDS = 2


class CompositeError(Exception):
    pass


class CompositeWorker:
    def __init__(
        self,
        server: str,
        rid: str,
        target: Target,
        *,
        uid: str = "composite",
        token: str | None = None,
        ice_ips: Sequence[str] | None = None,
        settings: Settings | None = None,
        duration: float | None = None,
    ) -> None:
        self.server, self.rid, self.uid = server, rid, uid
        self.target = target
        self.token, self.ice_ips = token, ice_ips
        self.settings = settings or Settings()
        self.duration = duration
        self.sources: dict[str, Source] = {}  # by mid, in the order they were published
        self.speaker = ActiveSpeaker()
        self.client: Client | None = None
        self.ticks = 0
        self._stop = asyncio.Event()
        self._failure: Exception | None = None
        self._pending: set[asyncio.Task[None]] = set()
        # Publications being subscribed: `join` lists a stream that a `stream-add` may
        # announce again a moment later, and each is subscribed once.
        self._subscribing: set[str] = set()
        self._shown: tuple[tuple[str, ...], str | None] = ((), None)

    def stop(self) -> None:
        self._stop.set()

    def _fail(self, exc: Exception) -> None:
        self._failure = exc
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def failed(exc: Exception) -> None:  # in the encoder thread
            loop.call_soon_threadsafe(self._fail, exc)

        encoder = EncoderThread(self.target, self.settings, failed)
        encoder.start()
        try:
            await loop.run_in_executor(None, encoder.opened.wait)
            if encoder.error is not None:
                raise encoder.error
            self.client = await Client.connect(
                self.server, self.uid, token=self.token, ice_ips=self.ice_ips
            )
            self.client.signaling.on("stream-add", self._on_stream_add)
            self.client.signaling.on("stream-remove", self._on_stream_remove)
            self.client.signaling.on("subscribe-failed", self._on_stream_remove)
            joined = await self.client.join(self.rid)
            log.info("composite-joined", rid=self.rid, target=self.target.location,
                     pubs=len(joined["pubs"]))  # fmt: skip
            for pub in joined["pubs"]:
                self._on_stream_add(pub)
            await self._clock(encoder)
        finally:
            await self._close(encoder)
        if self._failure is not None:
            raise self._failure

    async def _clock(self, encoder: EncoderThread) -> None:
        loop = asyncio.get_running_loop()
        fps, count = self.settings.fps, self.settings.samples_per_frame
        start = loop.time()
        log.info("composite-started", fps=fps, size=f"{self.settings.width}x{self.settings.height}")
        while not self._stop.is_set():
            if self.duration is not None and self.ticks >= self.duration * fps:
                break
            delay = start + self.ticks / fps - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                continue
            await asyncio.sleep(0)  # catching up after a stall: let the media in between ticks
            assert self.client is not None
            if self.client.signaling.closed:
                raise CompositeError("the signaling connection closed")
            now = loop.time()
            pictures = {mid: source.picture(now) for mid, source in self.sources.items()}
            parts = {mid: source.audio.pull(count) for mid, source in self.sources.items()}
            speaker = self.speaker.update(
                {mid: rms(part) for mid, part in parts.items()}, now, 1 / fps
            )
            tiles = None
            if encoder.behind < ENCODER_SLACK_SECONDS * fps:
                tiles = self._tiles(pictures, speaker)
            encoder.submit(Job(self.ticks, tiles, mix(list(parts.values()), count)))
            self.ticks += 1

    def _tiles(
        self, pictures: dict[str, av.VideoFrame | None], speaker: str | None
    ) -> dict[str, Tile]:
        shown = [mid for mid, picture in pictures.items() if picture is not None]
        if speaker not in shown:
            speaker = None
        if (tuple(shown), speaker) != self._shown:
            self._shown = (tuple(shown), speaker)
            log.info("composite-layout", tiles=len(shown),
                     speaker=self.sources[speaker].uid if speaker else "-")  # fmt: skip
        rects = layout(shown, speaker, self.settings.width, self.settings.height)
        return {
            mid: Tile(pictures[mid], rect, self.sources[mid].fit) for mid, rect in rects.items()
        }

    def _on_stream_add(self, data: dict[str, Any]) -> None:
        if data.get("rid", self.rid) != self.rid:
            return
        task = asyncio.ensure_future(self._subscribe(data))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _subscribe(self, pub: dict[str, Any]) -> None:
        mid, minfo = str(pub["mid"]), pub.get("minfo") or {}
        kinds = [kind for kind in ("audio", "video") if minfo.get(kind, True)]
        if not kinds or mid in self.sources or mid in self._subscribing or self.client is None:
            return
        self._subscribing.add(mid)
        try:
            subscription = await self.client.subscribe(
                self.rid, mid, str(pub.get("sfuid", "")), kinds
            )
        except (SignalingError, ConnectionError, TimeoutError) as exc:
            log.warning("composite-subscribe-failed", mid=mid, error=str(exc))
            return
        finally:
            self._subscribing.discard(mid)
        self.sources[mid] = Source(mid, str(pub.get("uid", "")), minfo, subscription)
        log.info("composite-subscribed", mid=mid, uid=pub.get("uid", ""), kinds=",".join(kinds))

    def _on_stream_remove(self, data: dict[str, Any]) -> None:
        source = self.sources.pop(str(data.get("mid")), None)
        if source is None:
            return
        log.info("composite-unsubscribed", mid=source.mid, uid=source.uid)
        task = asyncio.ensure_future(self._drop(source))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _drop(self, source: Source) -> None:
        await source.close()
        if self.client is not None:
            with contextlib.suppress(SignalingError, ConnectionError, TimeoutError):
                await self.client.unsubscribe(source.subscription)

    async def _close(self, encoder: EncoderThread) -> None:
        loop = asyncio.get_running_loop()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for source in self.sources.values():
            await source.close()
        # The encoder drains what it was given and writes the trailer (MP4, HLS end list).
        await loop.run_in_executor(None, encoder.finish)
        log.info("composite-stopped", frames=encoder.frames,
                 seconds=round(encoder.frames / self.settings.fps, 2))  # fmt: skip
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(Exception):
                await client.close()


__all__ = ["CompositeError", "CompositeWorker", "OutputError"]
