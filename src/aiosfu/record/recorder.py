"""A TrackRecorder is one published track being recorded.

It has two sides. `on_rtp` and `on_sender_report` are the Producer's sink callbacks:
they run on the event loop's hot path, so they only append a tuple to a deque (bounded;
a stuck disk costs recorded packets, never forwarding time). Everything else runs on
the recording's writer thread: packets back in order, frames assembled, RTP
timestamps mapped to one clock shared with the other tracks of the publication.

Time comes from RTP, never from arrival: each track's RTP clock is tied to the
publisher's wall clock by its RTCP Sender Reports, the same anchor the publisher's
own receivers use for lip sync. Only a track whose publisher never sends a Sender
Report in time falls back to the arrival time of its first frame.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.record.bitstream import (
    OPUS_CLOCK,
    h264_dimensions,
    h264_parameter_sets,
    opus_is_stereo,
    opus_lost_packet,
    opus_samples,
    vp8_dimensions,
)
from aiosfu.record.frames import VIDEO_CODECS, AudioFrames, Frame, VideoFrames
from aiosfu.record.muxer import Muxer
from aiosfu.record.reorder import Gap, ReorderBuffer, Unwrapper

# Longest silence (seconds) filled with concealment packets rather than left as a jump.
MAX_CONCEALED = 600

# An RTP packet as queued by the sink: (sequence number, timestamp, marker, payload, keyframe).
QueuedPacket = tuple[int, int, int, bytes, bool]


class RecordableTrack(Protocol):
    """The part of a Producer a recorder uses."""

    kind: str
    codec: RTCRtpCodecParameters

    def add_sink(self, sink: Any) -> None: ...

    def remove_sink(self, sink: Any) -> None: ...

    def request_keyframe(self) -> Awaitable[bool]: ...


def ntp_seconds(ntp: int) -> float:
    return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 4294967296.0


class TrackRecorder:
    def __init__(
        self,
        producer: RecordableTrack,
        *,
        reorder_window: float = 0.4,
        queue_limit: int = 8192,
    ) -> None:
        self.producer = producer
        self.kind = producer.kind
        self.mime_type = producer.codec.mimeType.lower()
        self.clock_rate = producer.codec.clockRate
        self.codec_parameters = dict(producer.codec.parameters or {})
        self.queue: deque[QueuedPacket] = deque()
        self.queue_limit = queue_limit
        # (ntp, rtp, local wall time when received or None when it is an older report)
        self.reports: deque[tuple[int, int, float | None]] = deque()
        self.reorder: ReorderBuffer[QueuedPacket] = ReorderBuffer(reorder_window)
        self.frames: AudioFrames | VideoFrames = (
            VideoFrames(VIDEO_CODECS[self.mime_type]) if self.kind == "video" else AudioFrames()
        )
        self._timestamps = Unwrapper(32)
        self.pending: deque[tuple[int, Frame]] = deque()  # (extended timestamp, frame)
        self.first_frame: tuple[int, float] | None = None  # (extended timestamp, wall time)
        self.report: tuple[float, int] | None = None  # latest (sender seconds, rtp timestamp)
        self.report_offset: float | None = None  # local wall time minus sender time
        self.base: tuple[float, int] | None = None  # anchor: (wall seconds, extended ts)
        self.output: int | None = None  # stream index in the file
        self._audio_end: int | None = None  # extended timestamp where audio written ends
        self._audio_like: bytes = b""
        # counters
        self.packets_in = 0
        self.overflow = 0
        self.frames_written = 0
        self.frames_dropped = 0
        self.concealed = 0

    # --- hot path: event loop thread ---------------------------------------------------

    def on_rtp(self, packet: RtpPacket, keyframe: bool) -> None:
        queue = self.queue
        if len(queue) >= self.queue_limit:
            self.overflow += 1
            return
        queue.append(
            (packet.sequence_number, packet.timestamp, packet.marker, packet.payload, keyframe)
        )

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports.append((ntp_timestamp, rtp_timestamp, time.time()))

    def seed_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """The producer's last report from before the recording began (time of receipt
        unknown, so it anchors this track but not the sender-to-local clock offset)."""
        self.reports.append((ntp_timestamp, rtp_timestamp, None))

    # --- writer thread -------------------------------------------------------------------

    def collect(self, now: float, wall: float, final: bool = False) -> None:
        """Take what the sink queued, and turn every in-order packet into frames."""
        queue = self.queue
        reorder = self.reorder
        for _ in range(len(queue)):
            queued = queue.popleft()
            self.packets_in += 1
            reorder.push(queued[0], queued, now)
        while self.reports:
            ntp, rtp, received = self.reports.popleft()
            if ntp == 0:
                continue  # aiortc sends a zero report before its first packet
            seconds = ntp_seconds(ntp)
            self.report = (seconds, rtp)
            if received is not None and self.report_offset is None:
                self.report_offset = received - seconds
        frames = self.frames
        for item in reorder.flush() if final else reorder.pop(now):
            if isinstance(item, Gap):
                frames.gap()
                continue
            for frame in frames.push(item[1], item[2], item[3], item[4]):
                self._add_frame(frame, wall)
        if final:
            for frame in frames.flush():
                self._add_frame(frame, wall)

    def _add_frame(self, frame: Frame, wall: float) -> None:
        ext = self._timestamps(frame.timestamp)
        if self.first_frame is None:
            self.first_frame = (ext, wall)
        self.pending.append((ext, frame))

    @property
    def waiting_for_keyframe(self) -> bool:
        return self.frames.waiting_for_keyframe

    # --- clock ---------------------------------------------------------------------------

    def anchor(self, offset: float | None) -> None:
        """Fix this track's RTP-to-wall-clock mapping for the rest of the file.

        With a Sender Report and a known sender-to-local offset, the track sits on the
        sender's clock (what keeps audio and video of one publisher in sync); without,
        on the arrival time of its first frame.
        """
        if self.report is not None and offset is not None:
            seconds, rtp = self.report
            self.base = (seconds + offset, self._timestamps.nearest(rtp))
        elif self.first_frame is not None:
            ext, wall = self.first_frame
            self.base = (wall, ext)

    def seconds(self, ext: int) -> float:
        assert self.base is not None
        wall, base_ext = self.base
        return wall + (ext - base_ext) / self.clock_rate

    # --- file ----------------------------------------------------------------------------

    def add_stream(self, muxer: Muxer) -> bool:
        """Add this track to a file about to be opened, from what its first frames say.

        Frames that cannot start a file (a keyframe without SPS/PPS) are dropped; False
        if nothing usable has arrived yet.
        """
        if self.kind == "audio":
            if not self.pending:
                return False
            stereo = str(self.codec_parameters.get("stereo")) == "1" or any(
                opus_is_stereo(f.data) for _, f in list(self.pending)[:50]
            )
            self.output = muxer.add_opus(2 if stereo else 1)
            return True
        while self.pending:
            frame = self.pending[0][1]
            if self.mime_type == "video/vp8":
                size = vp8_dimensions(frame.data) if frame.keyframe else None
                if size is not None:
                    self.output = muxer.add_video(self.mime_type, *size)
                    return True
            else:
                sets = h264_parameter_sets(frame.data) if frame.keyframe else None
                if sets is not None:
                    try:
                        size = h264_dimensions(sets[0])
                    except ValueError:
                        size = None
                    if size is not None:
                        extradata = b"".join(b"\x00\x00\x00\x01" + unit for unit in sets)
                        self.output = muxer.add_video(self.mime_type, *size, extradata=extradata)
                        return True
            self.pending.popleft()
            self.frames_dropped += 1
            self.frames.waiting_for_keyframe = True
        return False

    def write(self, muxer: Muxer, origin: float) -> None:
        """Mux every pending frame at its place on the file's clock."""
        index = self.output
        assert index is not None and self.base is not None
        while self.pending:
            ext, frame = self.pending.popleft()
            if self.kind == "audio":
                self._write_audio(muxer, index, ext, frame.data, origin)
                continue
            pts = self.seconds(ext) - origin
            if pts < 0 or not muxer.write(index, frame.data, pts, 0.0, frame.keyframe):
                self.frames_dropped += 1
            else:
                self.frames_written += 1

    def _write_audio(self, muxer: Muxer, index: int, ext: int, data: bytes, origin: float) -> None:
        samples = opus_samples(data)
        if samples <= 0:
            self.frames_dropped += 1
            return
        end = self._audio_end
        if end is not None and self._audio_like:
            # Lost packets or a silent (DTX, muted) stretch: conceal it packet by packet,
            # so every player keeps this audio where the video is.
            lost = opus_lost_packet(self._audio_like)
            step = opus_samples(lost)
            if ext - end > MAX_CONCEALED * OPUS_CLOCK:
                end = ext  # a clock jump, not a pause: let the timestamps carry it
            while ext - end >= step:
                if muxer.write(index, lost, self.seconds(end) - origin, step / OPUS_CLOCK, True):
                    self.concealed += 1
                end += step
        pts = self.seconds(ext) - origin
        if pts < 0 or not muxer.write(index, data, pts, samples / OPUS_CLOCK, True):
            self.frames_dropped += 1
            return
        self.frames_written += 1
        self._audio_end = ext + samples
        self._audio_like = data

    def stats(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "codec": self.mime_type,
            "packetsIn": self.packets_in,
            "packetsLost": self.reorder.lost,
            "packetsReordered": self.reorder.reordered,
            "packetsLate": self.reorder.late,
            "queueOverflow": self.overflow,
            "framesWritten": self.frames_written,
            "framesDropped": self.frames_dropped + self.frames.dropped,
            "framesConcealed": self.concealed,
            "synced": self.report is not None,
            "inFile": self.output is not None,
        }
