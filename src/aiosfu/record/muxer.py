"""Writing encoded frames into Ogg, WebM or Matroska files, never re-encoding them.

The muxing library is PyAV, i.e. FFmpeg's libavformat: its Ogg, WebM and Matroska
muxers are the ones every player is tested against (Cues, durations, Opus pre-skip,
H264 `avcC` conversion from Annex B), it is already installed with aiortc, and it
writes packets it is handed as they are. Hand-written EBML or Ogg page writers would
have to re-learn all of that.

Streams are created with `add_stream_from_template`, PyAV's remuxing path: the codec
context exists only to carry parameters (picture size, OpusHead, SPS/PPS) into the
header and is never opened, so no encoder or decoder is ever instantiated.

Chosen so a killed server leaves a playable file: the header is written as soon as the
file is opened, Matroska clusters are closed at least every second and Ogg pages every
half second, and every packet written is flushed to the operating system at once
(`flush_packets`). The trailer (Cues, Duration) is written on a clean close.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av
from av.audio.codeccontext import AudioCodecContext
from av.container import OutputContainer
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext

from aiosfu.record.bitstream import OPUS_CLOCK, opus_head

VIDEO_CLOCK = 90000

# A video stream silent this long (seconds of file time) gets an empty packet, so the
# other streams are written meanwhile (see Muxer.pulse).
IDLE_VIDEO = 2.0

# mime type -> (template encoder name; only its parameters are used)
CODEC_TEMPLATES = {"audio/opus": "libopus", "video/vp8": "libvpx", "video/h264": "libx264"}

# cluster_time_limit (ms) and page_duration (us) bound what a killed server loses; so
# does max_interleave_delta (us): FFmpeg holds one track's packets until the others
# catch up, 10 s by default, too long when a camera stops and the microphone does not.
# Not Matroska's live mode, so a clean close still writes Cues and Duration.
_ALWAYS = {"flush_packets": "1", "max_interleave_delta": "1000000"}
CONTAINER_OPTIONS = {
    "matroska": {"cluster_time_limit": "1000", **_ALWAYS},
    "webm": {"cluster_time_limit": "1000", **_ALWAYS},
    "ogg": {"page_duration": "500000", **_ALWAYS},
}


class UnsupportedCodec(ValueError):
    pass


@dataclass(frozen=True)
class FileFormat:
    name: str  # FFmpeg muxer
    extension: str


def file_format(mime_types: list[str]) -> FileFormat:
    """Opus alone is Ogg; VP8 (with Opus) is WebM; H264 (with Opus) is Matroska."""
    kinds = {m.lower() for m in mime_types}
    unsupported = sorted(kinds - set(CODEC_TEMPLATES))
    if unsupported:
        raise UnsupportedCodec(f"cannot record {', '.join(unsupported)}")
    if "video/h264" in kinds:
        return FileFormat("matroska", ".mkv")
    if "video/vp8" in kinds:
        return FileFormat("webm", ".webm")
    return FileFormat("ogg", ".ogg")


@dataclass
class _Output:
    stream: Stream
    kind: str
    time_base: Fraction
    last_pts: int | None = None
    end: float = 0.0  # seconds: where the last packet written ends
    pulsed: float = 0.0  # seconds: the last empty packet (see Muxer.pulse)


class Muxer:
    """One output file. Timestamps are seconds from the file's start."""

    def __init__(self, path: str, file_format: FileFormat) -> None:
        self.container: OutputContainer = av.open(
            path,
            "w",
            format=file_format.name,
            container_options=CONTAINER_OPTIONS[file_format.name],
        )
        self._templates: OutputContainer | None = av.open(
            io.BytesIO(), "w", format=file_format.name
        )
        self.outputs: list[_Output] = []
        self.packets = 0
        self.dropped = 0

    def _add(self, mime_type: str) -> Stream:
        assert self._templates is not None, "streams are added before start()"
        template = self._templates.add_stream(CODEC_TEMPLATES[mime_type.lower()])
        return self.container.add_stream_from_template(template)

    def add_opus(self, channels: int) -> int:
        stream = self._add("audio/opus")
        context = stream.codec_context
        assert isinstance(context, AudioCodecContext)
        context.sample_rate = OPUS_CLOCK
        context.layout = "stereo" if channels == 2 else "mono"
        context.extradata = opus_head(channels)
        stream.time_base = Fraction(1, OPUS_CLOCK)
        return self._output(stream, "audio")

    def add_video(
        self, mime_type: str, width: int, height: int, extradata: bytes | None = None
    ) -> int:
        stream = self._add(mime_type)
        context = stream.codec_context
        assert isinstance(context, VideoCodecContext)
        context.width = width
        context.height = height
        context.framerate = Fraction(0, 1)  # variable: each frame has its own timestamp
        if extradata is not None:
            context.extradata = extradata
        stream.time_base = Fraction(1, VIDEO_CLOCK)
        return self._output(stream, "video")

    def _output(self, stream: Stream, kind: str) -> int:
        self.outputs.append(_Output(stream, kind, Fraction(1, 1)))
        return len(self.outputs) - 1

    def start(self) -> None:
        """Write the header now, so even a file killed a moment later can be parsed."""
        self.container.start_encoding()
        for output in self.outputs:
            assert output.stream.time_base is not None
            output.time_base = output.stream.time_base
        if self._templates is not None:
            self._templates.close()
            self._templates = None

    def write(self, index: int, data: bytes, pts: float, duration: float, keyframe: bool) -> bool:
        """Mux one frame; False if it would go back in time (the container forbids it)."""
        output = self.outputs[index]
        tb = output.time_base
        ticks = round(pts * tb.denominator / tb.numerator)
        if output.last_pts is not None and ticks <= output.last_pts:
            if output.kind == "audio":
                self.dropped += 1
                return False
            ticks = output.last_pts + 1  # two pictures within one tick of the file's clock
        packet = av.Packet(data)
        packet.stream = output.stream
        packet.time_base = tb
        packet.pts = packet.dts = ticks
        if duration > 0:
            packet.duration = max(1, round(duration * tb.denominator / tb.numerator))
        packet.is_keyframe = keyframe
        self.container.mux(packet)
        output.last_pts = ticks
        output.end = max(output.end, pts + duration)
        self.packets += 1
        return True

    def pulse(self) -> None:
        """Let audio through while a camera sends nothing.

        FFmpeg's interleaver holds every packet until each stream has one queued, and
        for VP8 it never gives up waiting (no max_interleave_delta), so a paused camera
        would keep the microphone out of the file, lost if the server is killed. An
        empty packet on the silent stream releases the queue and is not written.
        """
        now = self.duration
        for output in self.outputs:
            # Well behind the other streams, so a late picture still comes after it.
            at = now - IDLE_VIDEO / 2
            if output.kind != "video" or at - max(output.end, output.pulsed) < IDLE_VIDEO / 4:
                continue
            tb = output.time_base
            ticks = round(at * tb.denominator / tb.numerator)
            if output.last_pts is not None and ticks <= output.last_pts:
                continue
            packet = av.Packet()
            packet.stream = output.stream
            packet.time_base = tb
            packet.pts = packet.dts = ticks
            self.container.mux(packet)
            output.last_pts = ticks
            output.pulsed = at

    @property
    def duration(self) -> float:
        return max((o.end for o in self.outputs), default=0.0)

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            if self._templates is not None:
                self._templates.close()
                self._templates = None
