"""Codec knowledge the forwarder needs without decoding: is this packet a keyframe start?

A new subscriber can only start decoding at a keyframe, so video forwarding to it begins
at the first packet for which `is_keyframe` is true. Only the payload descriptor and NAL
header bytes are read; the picture itself is never touched.
"""

from __future__ import annotations

from collections.abc import Callable

H264_SPS = 7
H264_IDR = 5
H264_STAP_A = 24
H264_FU_A = 28


def vp8_is_keyframe(payload: bytes) -> bool:
    """RFC 7741: keyframe iff S=1, PID=0 and the VP8 header's P bit is 0."""
    if len(payload) < 2:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S bit clear or partition index != 0
        return False
    i = 1
    if first & 0x80:  # X: extension byte present
        ext = payload[1]
        i = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if i >= len(payload):
                return False
            i += 2 if payload[i] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            i += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            i += 1
    return i < len(payload) and not payload[i] & 0x01


def h264_is_keyframe(payload: bytes) -> bool:
    """RFC 6184: an IDR or SPS NAL unit, alone, aggregated (STAP-A) or first fragment (FU-A)."""
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (H264_IDR, H264_SPS):
        return True
    if nal_type == H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) == H264_IDR
    if nal_type == H264_STAP_A:
        i = 1
        while i + 2 < len(payload):
            size = (payload[i] << 8) | payload[i + 1]
            if (payload[i + 2] & 0x1F) in (H264_IDR, H264_SPS):
                return True
            i += 2 + size
    return False


def vp9_is_keyframe(payload: bytes) -> bool:
    """RFC 9628 descriptor: B (start of frame) set and P (inter-picture predicted) clear."""
    if not payload:
        return False
    first = payload[0]
    return bool(first & 0x08) and not first & 0x40


def _never(payload: bytes) -> bool:
    return False


KEYFRAME_DETECTORS: dict[str, Callable[[bytes], bool]] = {
    "video/vp8": vp8_is_keyframe,
    "video/h264": h264_is_keyframe,
    "video/vp9": vp9_is_keyframe,
}


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool]:
    return KEYFRAME_DETECTORS.get(mime_type.lower(), _never)
