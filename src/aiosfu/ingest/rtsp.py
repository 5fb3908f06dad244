"""An RTSP camera published into a room, as one more participant (docs/rtsp.md).

FFmpeg's RTSP client (through PyAV) pulls the camera; this module then publishes over the
seed-002 protocol with the Python SDK, like any other publisher:

- H264 video goes through untouched: each demuxed access unit is handed to aiortc as an
  `av.Packet`, which its H264 packetizer splits into RTP (RFC 6184) without encoding.
  Only timestamps are rewritten, so they keep rising across reconnects. Keyframes get the
  stream's SPS/PPS in front when the camera sent them only in its SDP.
- Audio (AAC, as cameras send) is decoded and given to aiortc as PCM, which encodes Opus:
  this is the one transcode, because WebRTC browsers do not decode AAC.

When the camera drops or cannot be reached, the pull is retried with exponential backoff
while the publication stays up: viewers keep their subscription and the picture resumes
at the camera's next keyframe.

The demuxer blocks, so it runs in a thread and feeds the tracks' queues through the
event loop; nothing else here blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import av.error
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from aiosfu.log import get_logger

log = get_logger("aiosfu.ingest.rtsp")

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
RECONNECT_GAP = VIDEO_CLOCK // 25  # one frame at 25 fps between the old and new stream
QUEUE_PACKETS = 120  # ~2 s of video: a sender that falls further behind restarts at a keyframe


class IngestError(Exception):
    """The camera sends something this ingest cannot publish without re-encoding."""


class QueueTrack(MediaStreamTrack):
    """A track fed from outside: `put` from the loop, `recv` by aiortc's sender."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_PACKETS)
        self.need_keyframe = False

    def put(self, item: Any, keyframe: bool = True) -> None:
        if self.readyState != "live":
            return
        if self.kind == "video":
            if self.need_keyframe and not keyframe:
                return
            self.need_keyframe = False
        if self.queue.full():
            # Dropping single packets would corrupt every frame up to the next keyframe.
            while not self.queue.empty():
                self.queue.get_nowait()
            if self.kind == "video" and not keyframe:
                self.need_keyframe = True
                return
        self.queue.put_nowait(item)

    async def recv(self) -> Any:
        item = await self.queue.get()
        if item is None:
            raise MediaStreamError
        return item

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


@dataclass
class Backoff:
    initial: float = 0.5
    maximum: float = 10.0
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


@dataclass
class StreamInfo:
    video: bool
    audio: bool
    width: int = 0
    height: int = 0


def _has_parameter_sets(data: bytes) -> bool:
    """True when an Annex-B access unit carries an SPS (NAL type 7)."""
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        if i + 3 < len(data) and data[i + 3] & 0x1F == 7:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


class RtspPull:
    """One camera, pulled again and again: the streams go to `video` and `audio`."""

    def __init__(
        self,
        url: str,
        *,
        transport: str = "tcp",
        timeout: float = 5.0,
        backoff: Backoff | None = None,
        audio: bool = True,
    ) -> None:
        self.url = url
        self.transport = transport
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.with_audio = audio
        self.video = QueueTrack("video")
        self.audio = QueueTrack("audio")
        self.connects = 0
        self._stopping = threading.Event()
        self._next_video_pts = 0
        self._next_audio_pts = 0
        self._last_video_pts = 0

    def open(self) -> tuple[Any, StreamInfo]:
        """Open the camera (blocking): its container and what it carries."""
        container = av.open(
            self.url,
            options={"rtsp_transport": self.transport},
            timeout=(self.timeout, self.timeout),
        )
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is not None and video.codec_context.name != "h264":
            container.close()
            raise IngestError(
                f"the camera sends {video.codec_context.name} video; only H264 is passed "
                "through (no re-encoding)"
            )
        info = StreamInfo(
            video=video is not None,
            audio=audio is not None and self.with_audio,
            width=video.codec_context.width if video is not None else 0,
            height=video.codec_context.height if video is not None else 0,
        )
        return container, info

    def stop(self) -> None:
        self._stopping.set()
        self.video.stop()
        self.audio.stop()

    def pump(self, container: Any, deliver: Callable[[Callable[[], None]], None]) -> int:
        """Demux until the camera drops (blocking); returns how many packets it gave."""
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video, audio if self.with_audio else None) if s is not None]
        extradata = bytes(video.codec_context.extradata or b"") if video is not None else b""
        first_pts: int | None = None
        last_pts = 0
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
        count = 0
        try:
            for packet in container.demux(*streams):
                if self._stopping.is_set():
                    break
                if packet.size == 0:
                    continue
                count += 1
                if packet.stream is video:
                    pts = packet.pts if packet.pts is not None else last_pts
                    if first_pts is None:
                        first_pts = pts
                    last_pts = pts
                    ticks = int((pts - first_pts) * packet.time_base * VIDEO_CLOCK)
                    data = bytes(packet)
                    if packet.is_keyframe and extradata and not _has_parameter_sets(data):
                        data = extradata + data
                    out = av.Packet(data)
                    out.pts = self._next_video_pts + ticks
                    out.time_base = VIDEO_TIME_BASE
                    key = bool(packet.is_keyframe)
                    deliver(functools.partial(self.video.put, out, key))
                    self._last_video_pts = out.pts
                else:
                    for frame in packet.decode():
                        for pcm in resampler.resample(frame):
                            pcm.pts = self._next_audio_pts
                            pcm.time_base = fractions.Fraction(1, 48000)
                            self._next_audio_pts += pcm.samples
                            deliver(functools.partial(self.audio.put, pcm))
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("rtsp-read-failed", url=self.url, error=str(exc))
        finally:
            container.close()
            if first_pts is not None:
                self._next_video_pts = self._last_video_pts + RECONNECT_GAP
        return count

    async def run(self, on_first_open: Callable[[StreamInfo], Any] | None = None) -> None:
        """Pull until stopped, reconnecting with backoff; `on_first_open` publishes."""
        loop = asyncio.get_running_loop()

        def deliver(action: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(action)

        published = False
        while not self._stopping.is_set():
            try:
                container, info = await asyncio.to_thread(self.open)
            except IngestError:
                raise
            except (av.error.FFmpegError, OSError) as exc:
                delay = self.backoff.next()
                log.warning("rtsp-connect-failed", url=self.url, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                continue
            self.connects += 1
            log.info(
                "rtsp-connected",
                url=self.url,
                connects=self.connects,
                video=f"{info.width}x{info.height}" if info.video else "-",
                audio=info.audio,
            )
            if not published and on_first_open is not None:
                try:
                    await on_first_open(info)
                except BaseException:
                    await asyncio.to_thread(container.close)
                    raise
                published = True
            count = await asyncio.to_thread(self.pump, container, deliver)
            if self._stopping.is_set():
                break
            if count:
                self.backoff.reset()
            delay = self.backoff.next()
            log.warning("rtsp-dropped", url=self.url, packets=count, retry_in=delay)
            await asyncio.sleep(delay)
