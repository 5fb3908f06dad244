"""What a recorder must know about a codec's bitstream without decoding it.

A container header needs facts that only the encoded data carries: the picture size of
a VP8 or H264 stream, H264's parameter sets (the `avcC` a Matroska file stores), how
many samples an Opus packet lasts, whether it is stereo. PyAV exposes none of these
without opening a decoder (its H264 parser keeps the SPS to itself), and opening a
decoder is exactly what a forwarding server must not do, so the few header fields are
read here by hand from the specifications: RFC 6716 §3.1 (Opus TOC), RFC 6386 §9.1
(VP8 key frame header), ITU-T H.264 §7.3.2.1 (sequence parameter set).
"""

from __future__ import annotations

from collections.abc import Iterator

OPUS_CLOCK = 48000

# RFC 6716 §3.1: frame duration in 48 kHz samples for each TOC configuration 0..31.
_OPUS_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK-only NB/MB/WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # Hybrid SWB/FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # CELT-only NB/WB/SWB/FB: 2.5, 5, 10, 20 ms
)


def opus_samples(packet: bytes) -> int:
    """Duration of an Opus packet in 48 kHz samples (0 if the packet is malformed)."""
    if not packet:
        return 0
    toc = packet[0]
    per_frame = _OPUS_FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            return 0
        frames = packet[1] & 0x3F
    return per_frame * frames


def opus_is_stereo(packet: bytes) -> bool:
    return bool(packet) and bool(packet[0] & 0x04)


def opus_lost_packet(like: bytes) -> bytes:
    """A one-byte Opus packet whose only frame is empty: decoders conceal it (RFC 6716
    §3.2.1, a zero-length frame means "lost"), so a gap becomes silence, not a jump.

    It keeps the configuration and stereo flag of `like`, so it lasts one of its frames.
    """
    return bytes([like[0] & 0xFC])


def opus_head(channels: int, pre_skip: int = 0) -> bytes:
    """The identification header (RFC 7845 §5.1) that Ogg and Matroska store for Opus.

    Pre-skip is 0: a recording usually starts in the middle of a live encoder's stream,
    so there is no encoder delay at the start of the file to hide.
    """
    return (
        b"OpusHead"
        + bytes([1, channels])
        + pre_skip.to_bytes(2, "little")
        + OPUS_CLOCK.to_bytes(4, "little")
        + b"\x00\x00"  # output gain
        + b"\x00"  # channel mapping family 0: mono or stereo
    )


def vp8_frame_start(payload: bytes) -> bool:
    """RFC 7741: the packet begins partition 0 of a frame (S=1, PID=0)."""
    return bool(payload) and bool(payload[0] & 0x10) and not payload[0] & 0x07


def vp8_picture_id(payload: bytes) -> tuple[int, int] | None:
    """RFC 7741 PictureID and its modulus (2^7 or 2^15), if the descriptor carries one.

    Consecutive pictures have consecutive IDs, so it tells whether a whole frame went
    missing between two complete ones.
    """
    if len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return None
    if payload[2] & 0x80:
        if len(payload) < 4:
            return None
        return ((payload[2] & 0x7F) << 8) | payload[3], 1 << 15
    return payload[2] & 0x7F, 1 << 7


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame's uncompressed header (RFC 6386 §9.1)."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return (width, height) if width and height else None


# H264 NAL unit types (H.264 Table 7-1) and RTP packetization types (RFC 6184).
NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_FU_A = 28


def _starts_access_unit(nal_type: int, after_header: int | None) -> bool:
    if nal_type in (NAL_SPS, NAL_PPS, NAL_AUD, NAL_SEI):
        return True
    if nal_type in (NAL_SLICE, NAL_IDR):
        # first_mb_in_slice is ue(v); the value 0 is coded as a single 1 bit.
        return after_header is not None and bool(after_header & 0x80)
    return False


def h264_frame_start(payload: bytes) -> bool:
    """The RTP packet carries the first NAL unit of an access unit (a picture)."""
    if len(payload) < 2:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == NAL_STAP_A:
        if len(payload) < 4:
            return False
        inner = payload[3]
        return _starts_access_unit(inner & 0x1F, payload[4] if len(payload) > 4 else None)
    if nal_type == NAL_FU_A:
        if not payload[1] & 0x80:  # not the first fragment
            return False
        return _starts_access_unit(payload[1] & 0x1F, payload[2] if len(payload) > 2 else None)
    return _starts_access_unit(nal_type, payload[1])


def annexb_nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B byte stream (what aiortc's depayloader produces)."""
    positions = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        positions.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, start in enumerate(positions):
        end = positions[n + 1] - 3 if n + 1 < len(positions) else len(data)
        unit = data[start:end]
        while unit.endswith(b"\x00") and n + 1 < len(positions):
            unit = unit[:-1]  # the leading zero of the next four-byte start code
        if unit:
            yield unit


def h264_parameter_sets(access_unit: bytes) -> tuple[bytes, bytes] | None:
    """The first SPS and PPS NAL units of an Annex B access unit, if it has both."""
    sps = pps = None
    for unit in annexb_nal_units(access_unit):
        nal_type = unit[0] & 0x1F
        if nal_type == NAL_SPS and sps is None:
            sps = unit
        elif nal_type == NAL_PPS and pps is None:
            pps = unit
    return (sps, pps) if sps is not None and pps is not None else None


class _Bits:
    """An MSB-first bit reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.remaining = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.remaining:
            raise ValueError("SPS is truncated")
        self.remaining -= n
        return (self.value >> self.remaining) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def h264_dimensions(sps: bytes) -> tuple[int, int]:
    """Display width and height from an SPS NAL unit (header byte included)."""
    bits = _Bits(_rbsp(sps[1:]))
    profile_idc = bits.u(8)
    bits.u(16)  # constraint flags, level_idc
    bits.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = bits.ue()
        if chroma_format_idc == 3:
            separate_colour_plane = bits.u(1)
        bits.ue()  # bit_depth_luma_minus8
        bits.ue()  # bit_depth_chroma_minus8
        bits.u(1)  # qpprime_y_zero_transform_bypass_flag
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if bits.u(1):
                    last = next_scale = 8
                    for _ in range(16 if i < 6 else 64):
                        if next_scale:
                            next_scale = (last + bits.se() + 256) % 256
                        last = next_scale or last
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = bits.ue() + 1
    height_map_units = bits.ue() + 1
    frame_mbs_only = bits.u(1)
    if not frame_mbs_only:
        bits.u(1)  # mb_adaptive_frame_field_flag
    bits.u(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if bits.u(1):  # frame_cropping_flag
        left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
        if chroma_format_idc == 0 or separate_colour_plane:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            crop_x = 2 if chroma_format_idc in (1, 2) else 1
            crop_y = (2 if chroma_format_idc == 1 else 1) * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise ValueError("SPS gives an empty picture")
    return width, height
