"""Media sources and sinks for tests: synthetic tracks in, decoded frames counted out."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
from dataclasses import dataclass, field

import numpy as np
from aiortc import MediaStreamTrack, VideoStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, MediaStreamError
from av import AudioFrame, VideoFrame

from aiosfu.client import Subscription
from tests.conftest import wait_for


class PatternTrack(VideoStreamTrack):
    """A moving bar at a fixed size and frame rate: cheap to encode, easy to check."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.count = 0

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = np.zeros((self.height, self.width, 3), np.uint8)
        image[:, (self.count * 4) % self.width] = 255
        self.count += 1
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class NoiseTrack(VideoStreamTrack):
    """Grey with faint noise: fills whatever bitrate aiortc's VP8 encoder is allowed
    (250 kbit/s to 1.5 Mbit/s), unlike full-range noise, which overshoots any target."""

    def __init__(self, width: int = 320, height: int = 240, seed: int = 1) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self._rng = np.random.default_rng(seed)

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        noise = self._rng.integers(-16, 16, (self.height, self.width, 3))
        image = (128 + noise).astype(np.uint8)
        frame = VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz stereo tone in 20 ms frames, paced in real time."""

    kind = "audio"

    def __init__(self, rate: int = 48000) -> None:
        super().__init__()
        self.rate = rate
        self.samples = int(AUDIO_PTIME * rate)
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self.sent / self.rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(self.samples) + self.sent) / self.rate
        mono = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        frame = AudioFrame.from_ndarray(
            np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = self.rate
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, self.rate)
        self.sent += self.samples
        return frame


@dataclass
class FrameCounter:
    """Pulls decoded frames off a remote track in the background."""

    track: MediaStreamTrack
    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    sample_rates: set[int] = field(default_factory=set)
    first_frame_at: float | None = None
    _task: asyncio.Task[None] | None = None

    def start(self) -> FrameCounter:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await self.track.recv()
                if self.first_frame_at is None:
                    self.first_frame_at = asyncio.get_running_loop().time()
                self.frames += 1
                if isinstance(frame, VideoFrame):
                    self.sizes.add((frame.width, frame.height))
                else:
                    self.sample_rates.add(frame.sample_rate)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def wait_for_track(
    subscription: Subscription, kind: str, timeout: float = 10.0
) -> MediaStreamTrack:
    await wait_for(lambda: kind in subscription.tracks, timeout)
    return subscription.tracks[kind]
