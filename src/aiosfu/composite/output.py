"""Encoding the mix once and writing it out: RTMP (FLV), HLS, or an MP4 file.

FFmpeg does all of it through PyAV: libx264 (veryfast, zerolatency: a live stream wants
low delay more than the last percent of compression), FFmpeg's AAC encoder, and its FLV,
HLS and MP4 muxers and RTMP client. Encoding runs in a thread of its own, so the event
loop that receives and decodes the room's media is never held up by it; PyAV releases
the GIL while FFmpeg encodes.
"""

from __future__ import annotations

import fractions
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import av.container

from aiosfu.composite.audio import CHANNELS, RATE, Samples
from aiosfu.composite.canvas import Canvas, Tile
from aiosfu.log import get_logger

log = get_logger("aiosfu.composite")

Kind = Literal["rtmp", "hls", "mp4"]
HLS_PLAYLIST = "index.m3u8"
HLS_SEGMENT_SECONDS = 2


class OutputError(Exception):
    """The output cannot be opened or written (RTMP server gone, disk full...)."""


@dataclass(frozen=True)
class Target:
    kind: Kind
    location: str  # rtmp:// URL, HLS directory, or MP4 file

    def open(self) -> av.container.OutputContainer:
        if self.kind == "rtmp":
            return av.open(self.location, "w", format="flv")
        if self.kind == "hls":
            directory = Path(self.location)
            directory.mkdir(parents=True, exist_ok=True)
            return av.open(
                str(directory / HLS_PLAYLIST), "w", format="hls",
                options={
                    "hls_time": str(HLS_SEGMENT_SECONDS),
                    "hls_list_size": "0",  # every segment stays listed: a replay afterwards
                    "hls_segment_filename": str(directory / "segment-%05d.ts"),
                },
            )  # fmt: skip
        Path(self.location).parent.mkdir(parents=True, exist_ok=True)
        # Fragmented: a worker that is killed still leaves a playable file.
        return av.open(
            self.location, "w", format="mp4",
            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"},
        )  # fmt: skip


@dataclass(frozen=True)
class Settings:
    fps: int = 30
    width: int = 1280
    height: int = 720
    video_bitrate: int = 2_500_000
    audio_bitrate: int = 128_000
    keyframe_seconds: int = HLS_SEGMENT_SECONDS  # HLS cuts segments at keyframes

    @property
    def samples_per_frame(self) -> int:
        return RATE // self.fps


@dataclass(frozen=True)
class Job:
    tick: int
    tiles: Mapping[str, Tile] | None  # None: no picture this tick (the encoder is behind)
    audio: Samples


class Encoder:
    """The output container and its two encoders; used from the encoder thread only."""

    def __init__(self, target: Target, settings: Settings) -> None:
        self.settings = settings
        self.target = target
        self.canvas = Canvas(settings.width, settings.height)
        try:
            self.container = target.open()
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot open {target.location}: {exc}") from exc
        video = self.container.add_stream(
            "libx264", rate=settings.fps,
            options={"preset": "veryfast", "tune": "zerolatency", "sc_threshold": "0"},
        )  # fmt: skip
        video.width, video.height, video.pix_fmt = settings.width, settings.height, "yuv420p"
        video.bit_rate = settings.video_bitrate
        video.codec_context.gop_size = settings.fps * settings.keyframe_seconds
        audio = self.container.add_stream("aac", rate=RATE, layout="stereo")
        audio.bit_rate = settings.audio_bitrate
        self.video, self.audio = video, audio
        self.video_time_base = fractions.Fraction(1, settings.fps)
        self.audio_time_base = fractions.Fraction(1, RATE)
        self.frames = 0  # video frames encoded
        self.image: Any = None  # the last composed canvas, repeated when a tick has none
        try:
            # Connects (RTMP) and writes the header now, so that an output that cannot
            # be written fails before the worker joins the room.
            self.container.start_encoding()
        except (av.FFmpegError, OSError) as exc:
            self.container.close()
            raise OutputError(f"cannot open {target.location}: {exc}") from exc

    def write(self, job: Job) -> None:
        if job.tiles is not None or self.image is None:
            self.image = self.canvas.compose(job.tiles or {})
        frame = av.VideoFrame.from_ndarray(self.image, format="rgb24")
        frame.pts, frame.time_base = job.tick, self.video_time_base
        self._mux(self.video.encode(frame))
        self.frames += 1
        sound = av.AudioFrame.from_ndarray(
            job.audio.reshape(1, -1), format="s16", layout="stereo" if CHANNELS == 2 else "mono"
        )
        sound.sample_rate = RATE
        sound.pts = job.tick * self.settings.samples_per_frame
        sound.time_base = self.audio_time_base
        self._mux(self.audio.encode(sound))

    def _mux(self, packets: list[Any]) -> None:
        try:
            self.container.mux(packets)
        except (av.FFmpegError, OSError) as exc:
            raise OutputError(f"cannot write to {self.target.location}: {exc}") from exc

    def close(self) -> None:
        try:
            self._mux(self.video.encode(None))
            self._mux(self.audio.encode(None))
        finally:
            self.container.close()


class EncoderThread:
    """Jobs in, one per output frame, in order; the thread stops at `finish`."""

    def __init__(
        self, target: Target, settings: Settings, on_error: Callable[[Exception], None]
    ) -> None:
        self.target, self.settings = target, settings
        self.on_error = on_error
        self.opened = threading.Event()
        self.error: Exception | None = None
        self.frames = 0
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="composite-encoder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def behind(self) -> int:
        """Jobs waiting: past a couple of seconds' worth, the picture is skipped."""
        return self._jobs.qsize()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def finish(self, timeout: float = 30.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        encoder: Encoder | None = None
        try:
            encoder = Encoder(self.target, self.settings)
            self.opened.set()
            while (job := self._jobs.get()) is not None:
                encoder.write(job)
                self.frames = encoder.frames
        except Exception as exc:
            self.error = exc
            self.opened.set()
            self.on_error(exc)
        finally:
            if encoder is not None:
                try:
                    encoder.close()
                except Exception as exc:
                    log.warning("composite-close-failed", error=str(exc))
