"""Pre-encoded media for publishers: encoded once with PyAV, then sent without encoding.

aiortc's sender packetizes an `av.Packet` with the codec's `pack()` instead of encoding
it, so a track that yields packets costs the generator almost nothing per frame, and the
load it puts on a server is the load of a real VP8 camera (~1 Mbps, 30 fps) and an Opus
microphone, not of a Python encoder.

Video frame timestamps carry a small fixed pseudo-random jitter (a few ms) around the
nominal 1/30 s step: every server keeps RTP timestamps at a constant offset from the
publisher's (ours and Janus rewrite them, the MediaRelay baseline re-encodes with the
decoded frame's timestamp), so that jitter pattern lets a subscriber find which frame it
got and measure latency per frame on one clock, whatever the server did to the header.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import random
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc import MediaStreamTrack

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
FPS = 30
FRAME_STEP = VIDEO_CLOCK // FPS  # 3000 ticks of the 90 kHz clock
AUDIO_STEP = 960  # 20 ms of 48 kHz
JITTER_TICKS = 270  # +-3 ms: enough to tell frames apart, too little to matter


@dataclass(frozen=True)
class EncodedFrame:
    data: bytes
    keyframe: bool


@dataclass(frozen=True)
class Clip:
    """A looped source of encoded frames."""

    video: list[EncodedFrame]
    audio: list[bytes]
    width: int
    height: int
    bitrate: int

    @property
    def keyframe_indexes(self) -> list[int]:
        return [i for i, f in enumerate(self.video) if f.keyframe]


def _video_pictures(width: int, height: int, count: int) -> list[np.ndarray]:
    """Moving coarse noise: enough detail that the encoder spends its whole bit budget."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    pictures = []
    for i in range(count):
        shifted = np.roll(base, (i % (height // 8), (2 * i) % (width // 8)), axis=(0, 1))
        image = np.kron(shifted[: height // 8, : width // 8], np.ones((8, 8, 1), np.uint8))
        image[:, (i * 6) % width] = 255
        pictures.append(np.ascontiguousarray(image))
    return pictures


def prepare_clip(
    seconds: float = 4.0,
    width: int = 640,
    height: int = 360,
    bitrate: int = 1_000_000,
    keyframe_interval: int = 2 * FPS,
) -> Clip:
    """Encode `seconds` of VP8 and Opus once (a second or two of CPU, before any run)."""
    count = max(keyframe_interval, int(seconds * FPS))
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, FPS)
    encoder.framerate = fractions.Fraction(FPS, 1)
    encoder.bit_rate = bitrate
    encoder.gop_size = keyframe_interval
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    video: list[EncodedFrame] = []
    for i, picture in enumerate(_video_pictures(width, height, count)):
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if i % keyframe_interval == 0:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in encoder.encode(frame):
            video.append(EncodedFrame(bytes(packet), bool(packet.is_keyframe)))
    for packet in encoder.encode(None):
        video.append(EncodedFrame(bytes(packet), bool(packet.is_keyframe)))

    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate = AUDIO_RATE
    opus.layout = "stereo"
    opus.format = "s16"
    opus.bit_rate = 32_000
    opus.time_base = fractions.Fraction(1, AUDIO_RATE)
    audio: list[bytes] = []
    samples = int(seconds * AUDIO_RATE) // AUDIO_STEP * AUDIO_STEP
    t = np.arange(samples) / AUDIO_RATE
    tone = (np.sin(2 * math.pi * 440 * t) * 6000).astype(np.int16)
    for start in range(0, samples, AUDIO_STEP):
        chunk = np.repeat(tone[start : start + AUDIO_STEP], 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        audio.extend(bytes(p) for p in opus.encode(frame))
    audio.extend(bytes(p) for p in opus.encode(None))
    return Clip(video=video, audio=audio, width=width, height=height, bitrate=bitrate)


def video_pts(index: int) -> int:
    """The 90 kHz timestamp of the `index`-th frame sent: nominal step plus fixed jitter."""
    return index * FRAME_STEP + random.Random(index).randint(-JITTER_TICKS, JITTER_TICKS)


class PacedTrack(MediaStreamTrack):
    """Yields the clip's encoded packets in real time, looping; never encodes."""

    def __init__(self, kind: str, frames: list[bytes], step: float) -> None:
        super().__init__()
        self.kind = kind
        self._frames = frames
        self._step = step
        self._start: float | None = None
        self.sent = 0
        self._running = asyncio.Event()
        self._running.set()
        # send time (time.perf_counter) by frame pts, for latency; trimmed as it grows
        self.sent_at: dict[int, float] = {}

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self.sent * self._step - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        if not self._running.is_set():
            await self._running.wait()
            # resume on time, without a burst to catch up
            self._start = loop.time() - self.sent * self._step

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @paused.setter
    def paused(self, value: bool) -> None:
        if value:
            self._running.clear()
        else:
            self._running.set()

    def _remember(self, pts: int) -> None:
        self.sent_at[pts] = time.perf_counter()
        if len(self.sent_at) > 4096:
            for key in list(self.sent_at)[:2048]:
                del self.sent_at[key]


class PreencodedVideoTrack(PacedTrack):
    """VP8 at 30 fps; a keyframe request makes it jump to the clip's next keyframe."""

    def __init__(self, clip: Clip) -> None:
        super().__init__("video", [f.data for f in clip.video], 1 / FPS)
        self._keyframe = [f.keyframe for f in clip.video]
        self._keyframes = clip.keyframe_indexes or [0]
        self._position = 0
        self._want_keyframe = False
        self.keyframes_sent = 0

    def request_keyframe(self) -> None:
        self._want_keyframe = True

    async def recv(self) -> av.Packet:
        await self._pace()
        if self._want_keyframe:
            self._want_keyframe = False
            if not self._keyframe[self._position]:
                later = [k for k in self._keyframes if k > self._position]
                self._position = later[0] if later else self._keyframes[0]
        data = self._frames[self._position]
        if self._keyframe[self._position]:
            self.keyframes_sent += 1
        self._position = (self._position + 1) % len(self._frames)
        pts = video_pts(self.sent)
        self.sent += 1
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._remember(pts & 0xFFFFFFFF)
        return packet


class PreencodedAudioTrack(PacedTrack):
    """Opus, 20 ms per packet."""

    def __init__(self, clip: Clip) -> None:
        super().__init__("audio", clip.audio, AUDIO_STEP / AUDIO_RATE)

    async def recv(self) -> av.Packet:
        await self._pace()
        data = self._frames[self.sent % len(self._frames)]
        packet = av.Packet(data)
        packet.pts = self.sent * AUDIO_STEP
        packet.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.sent += 1
        return packet
