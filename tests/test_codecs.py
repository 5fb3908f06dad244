"""Keyframe detection from RTP payload headers, on hand-built and on real encoded packets."""

from __future__ import annotations

import fractions
import struct

import numpy as np
import pytest
from aiortc.codecs import get_capabilities, get_encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from aiosfu.sfu.codecs import (
    h264_is_keyframe,
    keyframe_detector,
    vp8_is_keyframe,
    vp9_is_keyframe,
)

# VP8 payload header (RFC 6386 frame tag): bit 0 is P, 0 = keyframe.
VP8_KEY = b"\x50\x2a\x00\x9d\x01\x2a"  # P=0, then the keyframe start code 9d 01 2a
VP8_INTER = b"\x31\x2a\x00"  # P=1


def vp8(descriptor: bytes, header: bytes) -> bytes:
    return descriptor + header


# --- VP8 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("descriptor", "name"),
    [
        (b"\x10", "no-extension"),
        (b"\x90\x80\x05", "7-bit-picture-id"),
        (b"\x90\x80\x81\x23", "15-bit-picture-id"),
        (b"\x90\x40\x07", "tl0picidx"),
        (b"\x90\x20\x40", "tid"),
        (b"\x90\x10\x03", "keyidx"),
        (b"\x90\x30\x41", "tid-and-keyidx-share-a-byte"),
        (b"\x90\xf0\x81\x23\x11\x41", "all-extensions-15-bit"),
        (b"\x90\xf0\x05\x11\x41", "all-extensions-7-bit"),
        (b"\x90\x00", "x-with-nothing"),
        (b"\xb0\x80\x05", "n-bit-set"),
    ],
)
def test_vp8_descriptor_variants(descriptor: bytes, name: str) -> None:
    assert vp8_is_keyframe(vp8(descriptor, VP8_KEY)), name
    assert not vp8_is_keyframe(vp8(descriptor, VP8_INTER)), name


def test_vp8_descriptor_bytes_are_not_read_as_the_frame_header() -> None:
    # The byte before the VP8 header is odd (would look like an interframe) and vice
    # versa, so skipping one byte too few or too many flips the answer.
    assert vp8_is_keyframe(b"\x90\x80\x81\x01" + b"\x00")  # 15-bit id ending in 0x01
    assert not vp8_is_keyframe(b"\x90\x80\x80\x00" + b"\x01")
    assert vp8_is_keyframe(b"\x90\x80\x01" + b"\x00")  # 7-bit id 0x01
    assert not vp8_is_keyframe(b"\x90\x80\x00" + b"\x01")
    assert vp8_is_keyframe(b"\x90\xc0\x81\x01\x01" + b"\x00")  # I (15) + L
    assert not vp8_is_keyframe(b"\x90\xd0\x81\x00\x00\x00" + b"\x01")  # I + L + K


@pytest.mark.parametrize(
    "descriptor",
    [
        pytest.param(VpxPayloadDescriptor(1, 0), id="plain"),
        pytest.param(VpxPayloadDescriptor(1, 0, picture_id=0x1234), id="picture-id"),
        pytest.param(
            VpxPayloadDescriptor(1, 0, picture_id=17, tl0picidx=3, tid=(1, 1), keyidx=5),
            id="everything",
        ),
        pytest.param(VpxPayloadDescriptor(1, 0, tl0picidx=255), id="tl0"),
        pytest.param(VpxPayloadDescriptor(1, 0, keyidx=31), id="keyidx"),
    ],
)
def test_vp8_descriptors_built_by_aiortc(descriptor: VpxPayloadDescriptor) -> None:
    assert vp8_is_keyframe(bytes(descriptor) + VP8_KEY)
    assert not vp8_is_keyframe(bytes(descriptor) + VP8_INTER)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x00" + VP8_KEY, id="not-partition-start"),
        pytest.param(b"\x11" + VP8_KEY, id="partition-1"),
        pytest.param(b"\x17" + VP8_KEY, id="partition-7"),
        pytest.param(b"\x80\x80\x05" + VP8_KEY, id="extended-not-start"),
        pytest.param(b"\x91\x80\x05" + VP8_KEY, id="extended-partition-1"),
    ],
)
def test_vp8_non_start_packets_are_not_keyframes(payload: bytes) -> None:
    assert not vp8_is_keyframe(payload)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x10", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x80\x81\x23", b"\x90\xf0\x05\x11"],
)
def test_vp8_truncated_payloads_are_not_keyframes(payload: bytes) -> None:
    assert not vp8_is_keyframe(payload)


# --- H264 -------------------------------------------------------------------------

SPS = b"\x67\x42\xc0\x1f\xda"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33"
SLICE = b"\x41\x9a\x02\x03"  # non-IDR slice (type 1)
SEI = b"\x06\x05\x01\x00"


def stap_a(*nalus: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nalus)


def fu_a(nal: bytes, start: bool, end: bool = False) -> bytes:
    indicator = (nal[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes([indicator, header]) + nal[1:]


def test_h264_single_nal_units() -> None:
    assert h264_is_keyframe(IDR)
    assert h264_is_keyframe(SPS)
    assert not h264_is_keyframe(PPS)
    assert not h264_is_keyframe(SLICE)
    assert not h264_is_keyframe(SEI)
    assert h264_is_keyframe(b"\x25")  # IDR with nri=1: only the low 5 bits are the type


def test_h264_stap_a() -> None:
    assert h264_is_keyframe(stap_a(SPS, PPS))
    assert h264_is_keyframe(stap_a(SPS, PPS, IDR))
    assert h264_is_keyframe(stap_a(SEI, IDR))  # found after walking past the first unit
    assert h264_is_keyframe(stap_a(PPS, SEI, SPS))
    assert not h264_is_keyframe(stap_a(PPS, SEI))
    assert not h264_is_keyframe(stap_a(SEI, SLICE))
    assert not h264_is_keyframe(b"\x78")
    assert not h264_is_keyframe(b"\x78\x00\x05")  # length without a unit
    # a length that runs past the end must not be trusted to find a later unit
    assert not h264_is_keyframe(b"\x78\x00\x40" + SEI + b"\x00\x05" + IDR)


def test_h264_fu_a() -> None:
    assert h264_is_keyframe(fu_a(IDR, start=True))
    assert not h264_is_keyframe(fu_a(IDR, start=False))  # continuation
    assert not h264_is_keyframe(fu_a(IDR, start=False, end=True))
    assert not h264_is_keyframe(fu_a(SLICE, start=True))  # start of a non-IDR slice
    assert not h264_is_keyframe(b"\x7c")  # FU indicator without header


def test_empty_payloads() -> None:
    assert not vp8_is_keyframe(b"")
    assert not h264_is_keyframe(b"")
    assert not vp9_is_keyframe(b"")


# --- VP9 --------------------------------------------------------------------------


def test_vp9_descriptor() -> None:
    # I P L F B E V Z
    assert vp9_is_keyframe(bytes([0x08]))  # B, not P
    assert vp9_is_keyframe(bytes([0x8E, 0x80, 0x01]))  # I, B, E, V
    assert not vp9_is_keyframe(bytes([0x48]))  # B and P: inter-picture predicted
    assert not vp9_is_keyframe(bytes([0x00]))  # not the start of a frame
    assert not vp9_is_keyframe(bytes([0x04]))  # end of frame only


def test_detector_lookup() -> None:
    assert keyframe_detector("video/VP8") is vp8_is_keyframe
    assert keyframe_detector("video/H264") is h264_is_keyframe
    assert keyframe_detector("video/vp9") is vp9_is_keyframe
    never = keyframe_detector("audio/opus")
    assert never(b"\x10\x00") is False
    assert never(IDR) is False


# --- real encoder output -----------------------------------------------------------


def video_frame(index: int) -> VideoFrame:
    y, x = np.mgrid[0:96, 0:128]
    image = np.stack([(x * 2 + index * 7) % 256, (y * 2) % 256, (x + y + index) % 256], axis=-1)
    frame = VideoFrame.from_ndarray(image.astype(np.uint8), format="bgr24")
    frame.pts = index * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def encoded_frames(encoder: object, count: int = 4) -> list[list[bytes]]:
    frames = []
    for i in range(count):
        payloads, _ = encoder.encode(video_frame(i), force_keyframe=(i == 0))  # type: ignore[attr-defined]
        assert payloads
        frames.append(payloads)
    return frames


def codec(mime_type: str) -> RTCRtpCodecParameters:
    capability = next(c for c in get_capabilities("video").codecs if c.mimeType == mime_type)
    return RTCRtpCodecParameters(
        mimeType=capability.mimeType,
        clockRate=capability.clockRate,
        payloadType=96,
        parameters=dict(capability.parameters),
    )


@pytest.mark.parametrize(
    ("mime_type", "encoder_class"), [("video/VP8", Vp8Encoder), ("video/H264", H264Encoder)]
)
def test_real_encoder_packets(mime_type: str, encoder_class: type) -> None:
    encoder = get_encoder(codec(mime_type))
    assert isinstance(encoder, encoder_class)
    detect = keyframe_detector(mime_type)
    frames = encoded_frames(encoder)
    key, *inter = frames
    assert detect(key[0])
    for payloads in inter:
        assert not detect(payloads[0])
    # no packet of an interframe looks like a keyframe start
    assert not any(detect(p) for payloads in inter for p in payloads)


def test_real_vp8_only_the_first_packet_of_a_keyframe_starts_it() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frame = VideoFrame.from_ndarray(noise, format="bgr24")
    frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
    key, _ = Vp8Encoder().encode(frame, force_keyframe=True)
    assert len(key) > 1  # a noisy picture does not fit one packet
    assert [vp8_is_keyframe(p) for p in key] == [True] + [False] * (len(key) - 1)


def test_real_h264_keyframe_starts_with_parameter_sets() -> None:
    key = encoded_frames(H264Encoder(), count=1)[0]
    nal_types = [p[0] & 0x1F for p in key]
    assert nal_types[0] in (7, 24)  # SPS, alone or aggregated
    assert h264_is_keyframe(key[0])


def test_real_vp8_forced_keyframe_later_in_the_stream() -> None:
    encoder = Vp8Encoder()
    results = []
    for i in range(5):
        payloads, _ = encoder.encode(video_frame(i), force_keyframe=i in (0, 3))
        results.append(vp8_is_keyframe(payloads[0]))
    assert results == [True, False, False, True, False]
