"""From in-order RTP packets to the encoded frames a container stores.

Depacketizing is not decoding: aiortc's own depayloaders strip the RTP payload
descriptors (RFC 7741 for VP8, RFC 6184 for H264: FU-A and STAP-A become Annex B) and
the picture bytes are never looked at. An Opus RTP payload already is one Opus packet.

A video frame goes into the file only when all of it arrived: it begins with a
codec-level frame start, has no gap inside, and ends on the marker bit. After any loss
the next frames may refer to what was lost, so video resumes only at a complete
keyframe (the owner is told to ask the publisher for one); audio needs no such care.

A gap *between* two frames is not always loss: the SFU does not hand padding-only
packets (bandwidth probes) to recorders, yet they use sequence numbers. Where the codec
numbers its pictures (VP8's PictureID), consecutive pictures across the gap prove no
frame is missing and recording goes on without waiting for a keyframe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload

from aiosfu.record.bitstream import h264_frame_start, vp8_frame_start, vp8_picture_id


@dataclass(frozen=True, slots=True)
class Frame:
    timestamp: int  # RTP timestamp, 32 bits as sent
    data: bytes
    keyframe: bool


class AudioFrames:
    """One RTP packet is one frame; a lost packet is a gap the timeline fills."""

    waiting_for_keyframe = False

    def __init__(self) -> None:
        self.dropped = 0

    def push(self, timestamp: int, marker: int, payload: bytes, keyframe: bool) -> list[Frame]:
        return [Frame(timestamp, payload, True)]

    def gap(self) -> None:
        pass

    def flush(self) -> list[Frame]:
        return []


def _no_picture_id(payload: bytes) -> tuple[int, int] | None:
    return None


@dataclass(frozen=True)
class VideoCodec:
    depayload: Callable[[bytes], bytes]
    frame_start: Callable[[bytes], bool]
    picture_id: Callable[[bytes], tuple[int, int] | None] = _no_picture_id


VIDEO_CODECS = {
    "video/vp8": VideoCodec(vp8_depayload, vp8_frame_start, vp8_picture_id),
    "video/h264": VideoCodec(h264_depayload, h264_frame_start),
}


class VideoFrames:
    def __init__(self, codec: VideoCodec) -> None:
        self.codec = codec
        self.waiting_for_keyframe = True
        self.dropped = 0
        self._timestamp: int | None = None
        self._parts: list[bytes] = []
        self._keyframe = False
        self._complete_start = False
        self._broken = False
        self._picture: tuple[int, int] | None = None  # PictureID of the frame in progress
        self._last_picture: tuple[int, int] | None = None  # ...of the last complete one
        self._gap_before = False  # packets went missing just before this frame

    def push(self, timestamp: int, marker: int, payload: bytes, keyframe: bool) -> list[Frame]:
        out: list[Frame] = []
        if self._timestamp is not None and timestamp != self._timestamp:
            # A new picture with no gap before it: the last one ended unmarked.
            self._finish(out)
        if self._timestamp is None:
            self._timestamp = timestamp
            self._complete_start = self.codec.frame_start(payload)
            self._picture = self.codec.picture_id(payload)
            if self._gap_before:
                self._gap_before = False
                if not self._follows_last_picture():
                    self.waiting_for_keyframe = True
        try:
            self._parts.append(self.codec.depayload(payload))
        except ValueError:
            self._broken = True
        self._keyframe = self._keyframe or keyframe
        if marker:
            self._finish(out)
        return out

    def gap(self) -> None:
        """Packets were lost here: the frame in progress is incomplete, and what follows
        may depend on what was lost."""
        if self._timestamp is not None:
            self._broken = True
            self.waiting_for_keyframe = True
        else:
            self._gap_before = True  # the next packet tells whether a frame was lost

    def _follows_last_picture(self) -> bool:
        if not self._complete_start or self._picture is None or self._last_picture is None:
            return False
        picture, modulus = self._picture
        return picture == (self._last_picture[0] + 1) % modulus

    def flush(self) -> list[Frame]:
        # A frame still open at the end never got its marker: it is incomplete.
        if self._timestamp is not None:
            self._broken = True
        out: list[Frame] = []
        self._finish(out)
        return out

    def _finish(self, out: list[Frame]) -> None:
        if self._timestamp is None:
            return
        usable = self._complete_start and not self._broken
        if usable:
            self._last_picture = self._picture
        if usable and (self._keyframe or not self.waiting_for_keyframe):
            self.waiting_for_keyframe = False
            out.append(Frame(self._timestamp, b"".join(self._parts), self._keyframe))
        else:
            self.dropped += 1
            if not usable:
                self.waiting_for_keyframe = True
        self._timestamp = None
        self._parts = []
        self._keyframe = False
        self._broken = False
