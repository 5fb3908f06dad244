"""One publication of the room as the mix sees it: its latest picture and its sound.

aiortc decodes each subscribed track (VP8/H264 through PyAV, Opus) in its own decoder
thread; here the decoded frames are taken off the tracks as they come. Sound waits in
the publication's audio buffer before it is mixed, so pictures wait as long: each tick
shows the latest frame that arrived at least the audio buffer's depth ago, which keeps
the publisher's lips with its voice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from aiosfu.client import Subscription
from aiosfu.composite.audio import RATE, AudioBuffer

# Frames kept waiting for their turn: more than the audio buffer's bound at any rate.
MAX_WAITING_FRAMES = 32


class Source:
    def __init__(self, mid: str, uid: str, minfo: dict[str, Any], subscription: Subscription):
        self.mid, self.uid = mid, uid
        self.subscription = subscription
        self.fit = minfo.get("videotype") == 1  # a screen share is shown whole
        self.video: av.VideoFrame | None = None  # the picture shown, repeated if it stalls
        self.audio = AudioBuffer()
        self.video_frames = 0
        self._waiting: deque[tuple[float, av.VideoFrame]] = deque(maxlen=MAX_WAITING_FRAMES)
        self._tasks = [
            asyncio.ensure_future(self._read(track)) for track in subscription.tracks.values()
        ]

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self._waiting.append((asyncio.get_running_loop().time(), frame))
                    self.video_frames += 1
                elif isinstance(frame, av.AudioFrame):
                    self.audio.push(frame)

    def picture(self, now: float) -> av.VideoFrame | None:
        """The picture for the tick at `now`, delayed as much as the sound is."""
        due = now - self.audio.size / RATE
        while self._waiting and self._waiting[0][0] <= due:
            self.video = self._waiting.popleft()[1]
        return self.video

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
