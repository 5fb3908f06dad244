"""Header facts read from real encoders' output: Opus TOC, VP8 and H264 picture sizes."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from av import AudioFrame, VideoFrame

from aiosfu.record.bitstream import (
    annexb_nal_units,
    h264_dimensions,
    h264_frame_start,
    h264_parameter_sets,
    opus_head,
    opus_is_stereo,
    opus_lost_packet,
    opus_samples,
    vp8_dimensions,
    vp8_frame_start,
)


def _video_frame(width: int, height: int, index: int = 0) -> VideoFrame:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, (index * 4) % width] = 255
    frame = VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
    frame.pts = index * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def _encode(codec: str, width: int, height: int, **options: str) -> bytes:
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90000)
    encoder.options = options
    packets = encoder.encode(_video_frame(width, height)) + encoder.encode(None)
    return bytes(packets[0])


def _opus_packets(milliseconds: int, layout: str) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = layout
    encoder.format = "s16"
    encoder.time_base = fractions.Fraction(1, 48000)
    encoder.options = {"frame_duration": str(milliseconds)}
    channels = 2 if layout == "stereo" else 1
    samples = 48 * milliseconds
    packets = []
    for i in range(5):
        tone = (np.sin(np.arange(samples * channels) / 7) * 8000).astype(np.int16)
        frame = AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout=layout)
        frame.sample_rate, frame.pts = 48000, i * samples
        packets += [bytes(p) for p in encoder.encode(frame)]
    return packets


@pytest.mark.parametrize("milliseconds", [10, 20, 40, 60])
@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_opus_duration_and_channels_from_the_toc(milliseconds: int, layout: str) -> None:
    packets = _opus_packets(milliseconds, layout)
    assert packets
    for packet in packets:
        assert opus_samples(packet) == 48 * milliseconds
        assert opus_is_stereo(packet) == (layout == "stereo")
        lost = opus_lost_packet(packet)
        assert len(lost) == 1 and opus_is_stereo(lost) == (layout == "stereo")
        # It lasts one frame of the same configuration: a whole number of them fill a gap.
        assert opus_samples(packet) % opus_samples(lost) == 0


def test_opus_toc_edge_cases() -> None:
    assert opus_samples(b"") == 0
    assert opus_samples(bytes([0xF8 | 3])) == 0  # code 3 without its frame count byte
    assert opus_samples(bytes([0xF8 | 3, 5])) == 5 * 960  # five 20 ms CELT frames
    assert opus_samples(bytes([0x00])) == 480  # SILK NB 10 ms
    head = opus_head(2)
    assert head[:8] == b"OpusHead" and head[9] == 2 and len(head) == 19


@pytest.mark.parametrize("size", [(320, 240), (642, 362), (1280, 720)])
def test_vp8_keyframe_size(size: tuple[int, int]) -> None:
    data = _encode("libvpx", *size)
    assert vp8_dimensions(data) == size
    assert vp8_dimensions(b"\x01" + data[1:]) is None  # interframe flag set
    assert vp8_dimensions(data[:8]) is None


@pytest.mark.parametrize(
    ("size", "options"),
    [
        ((320, 240), {"profile": "baseline"}),
        ((642, 362), {"profile": "baseline"}),  # cropped to a non-multiple of 16
        ((1920, 1080), {"profile": "high"}),
        ((640, 480), {"profile": "high", "x264-params": "interlaced=1"}),
    ],
)
def test_h264_size_from_the_sps(size: tuple[int, int], options: dict[str, str]) -> None:
    data = _encode("libx264", *size, preset="ultrafast", **options)
    sets = h264_parameter_sets(data)
    assert sets is not None
    sps, pps = sets
    assert sps[0] & 0x1F == 7 and pps[0] & 0x1F == 8
    assert h264_dimensions(sps) == size


def test_h264_sps_with_scaling_matrix() -> None:
    data = _encode(
        "libx264", 352, 288, preset="ultrafast", profile="high", **{"x264-params": "cqm=jvt"}
    )
    sets = h264_parameter_sets(data)
    assert sets is not None
    assert h264_dimensions(sets[0]) == (352, 288)


def test_h264_truncated_sps_is_an_error() -> None:
    sps = h264_parameter_sets(_encode("libx264", 320, 240, preset="ultrafast"))[0]  # type: ignore[index]
    with pytest.raises(ValueError):
        h264_dimensions(sps[:4])


def test_annexb_split_keeps_units_whole() -> None:
    units = [b"\x67\x42\x00\x1f\x00", b"\x68\xce", b"\x65\x88\x84\x00\x00\x03\x01"]
    stream = b"\x00\x00\x00\x01" + units[0] + b"\x00\x00\x01" + units[1]
    stream += b"\x00\x00\x00\x01" + units[2]
    # A unit's own trailing zero (before a 3-byte start code) is indistinguishable from
    # a 4-byte start code's; H.264 allows dropping it (trailing_zero_8bits).
    assert list(annexb_nal_units(stream)) == [units[0][:-1], units[1], units[2]]


def test_frame_start_of_real_rtp_payloads() -> None:
    # aiortc's own packetizers, as an aiortc publisher sends them.
    encoder = H264Encoder()
    first_payloads: list[bytes] = []
    other_payloads: list[bytes] = []
    for i in range(3):
        payloads, _ = encoder.encode(_video_frame(640, 480, i), force_keyframe=i == 0)
        first_payloads.append(payloads[0])
        other_payloads += payloads[1:]
    assert all(h264_frame_start(p) for p in first_payloads)
    assert other_payloads and not any(h264_frame_start(p) for p in other_payloads)
    # VP8 descriptor: S bit with partition 0.
    assert vp8_frame_start(bytes([0x90, 0x80, 0x01]))
    assert not vp8_frame_start(bytes([0x80, 0x80, 0x01]))
    assert not vp8_frame_start(bytes([0x11]))
