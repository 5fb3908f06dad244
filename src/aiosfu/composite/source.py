"""One publication of the room as the mix sees it: its latest picture and its sound.

aiortc decodes each subscribed track (VP8/H264 through PyAV, Opus) in its own decoder
thread; here the decoded frames are only taken off the tracks as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from aiosfu.client import Subscription
from aiosfu.composite.audio import AudioBuffer


class Source:
    def __init__(self, mid: str, uid: str, minfo: dict[str, Any], subscription: Subscription):
        self.mid, self.uid = mid, uid
        self.subscription = subscription
        self.fit = minfo.get("videotype") == 1  # a screen share is shown whole
        self.video: av.VideoFrame | None = None  # the latest picture, repeated if it stalls
        self.audio = AudioBuffer()
        self.video_frames = 0
        self._tasks = [
            asyncio.ensure_future(self._read(track)) for track in subscription.tracks.values()
        ]

    async def _read(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.video = frame
                    self.video_frames += 1
                elif isinstance(frame, av.AudioFrame):
                    self.audio.push(frame)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
