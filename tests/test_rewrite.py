"""Per-subscriber RTP header rewrite, checked by parsing the bytes back with aiortc."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from aiosfu.sfu.rewrite import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    OutputParams,
    RtpRewriter,
    random_start_sequence,
)

PUB_SSRC = 0x11111111
SUB_SSRC = 0x22222222
RTX_SSRC = 0x33333333
EXT_IDS = {URI_MID: 4, URI_ABS_SEND_TIME: 2, URI_AUDIO_LEVEL: 1}


def extensions_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri) for uri, i in ids.items()
            ]
        )
    )
    return ext_map


FULL_MAP = extensions_map(EXT_IDS)


def packet(
    seq: int,
    ts: int,
    payload: bytes = b"\x90\x80payload",
    marker: int = 0,
    pt: int = 120,
    audio_level: tuple[bool, int] | None = None,
) -> RtpPacket:
    p = RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=PUB_SSRC,
        payload=payload,
    )
    p.extensions.audio_level = audio_level
    return p


def params(**kwargs: object) -> OutputParams:
    values: dict[str, object] = {"ssrc": SUB_SSRC, "payload_type": 96, "clock_rate": 90000}
    values.update(kwargs)
    return OutputParams(**values)  # type: ignore[arg-type]


def test_header_fields_and_payload() -> None:
    rw = RtpRewriter(params(), start_sequence=1000, start_timestamp=5000)
    payload = bytes(range(256)) * 4
    first = packet(40000, 123456, payload, marker=1, pt=120)
    rw.start(first)
    data = rw.rewrite(first)
    out = RtpPacket.parse(data)
    assert out.version == 2
    assert out.ssrc == SUB_SSRC
    assert out.payload_type == 96
    assert out.marker == 1
    assert out.sequence_number == 1000
    assert out.timestamp == 5000
    assert out.payload == payload
    assert out.csrc == [] and out.padding_size == 0
    assert data[0] == 0x80  # no extension bit when nothing is negotiated
    assert len(data) == 12 + len(payload)

    out2 = RtpPacket.parse(rw.rewrite(packet(40001, 123456 + 3000, b"x", marker=0)))
    assert out2.marker == 0
    assert out2.payload == b"x"


def test_sequence_numbers_are_consecutive_from_the_start_value() -> None:
    rw = RtpRewriter(params(), start_sequence=777, start_timestamp=0)
    rw.start(packet(3, 0))
    seqs = [RtpPacket.parse(rw.rewrite(packet(3 + i, 0))).sequence_number for i in range(50)]
    assert seqs == list(range(777, 827))
    assert rw.started


def test_publisher_sequence_wrap_around() -> None:
    rw = RtpRewriter(params(), start_sequence=100, start_timestamp=0)
    rw.start(packet(65530, 0))
    pub_seqs = [(65530 + i) & 0xFFFF for i in range(12)]  # 65530..65535, 0..5
    assert pub_seqs[6] == 0
    out = [RtpPacket.parse(rw.rewrite(packet(s, 0))).sequence_number for s in pub_seqs]
    assert out == list(range(100, 112))


def test_subscriber_sequence_wraps_at_16_bits() -> None:
    rw = RtpRewriter(params(), start_sequence=65534, start_timestamp=0)
    rw.start(packet(10, 0))
    out = [RtpPacket.parse(rw.rewrite(packet(10 + i, 0))).sequence_number for i in range(4)]
    assert out == [65534, 65535, 0, 1]


@pytest.mark.parametrize("first_seq", [0, 1, 30000, 65535])
def test_original_sequence_inverts_sequence(first_seq: int) -> None:
    rw = RtpRewriter(params(), start_sequence=60000, start_timestamp=0)
    rw.start(packet(first_seq, 0))
    for s in (0, 1, first_seq, (first_seq + 100) & 0xFFFF, 65535):
        assert rw.original_sequence(rw.sequence(s)) == s
        assert rw.sequence(rw.original_sequence(s)) == s
    assert rw.sequence(first_seq) == 60000
    assert rw.original_sequence(60000) == first_seq


def test_timestamps_offset_consistently_and_wrap_at_2_32() -> None:
    rw = RtpRewriter(params(), start_sequence=0, start_timestamp=0xFFFFF000)
    rw.start(packet(0, 1_000_000))
    steps = [0, 3000, 6000, 9000]
    out = [
        RtpPacket.parse(rw.rewrite(packet(i, 1_000_000 + step))).timestamp
        for i, step in enumerate(steps)
    ]
    assert out == [(0xFFFFF000 + step) & 0xFFFFFFFF for step in steps]
    assert out[0] > out[-1]  # wrapped past 2^32
    assert rw.timestamp(1_000_000) == 0xFFFFF000
    # the publisher's own timestamp wrapping keeps the same difference
    rw2 = RtpRewriter(params(), start_sequence=0, start_timestamp=500)
    rw2.start(packet(0, 0xFFFFFFFF - 99))
    assert rw2.timestamp(0xFFFFFFFF - 99) == 500
    assert rw2.timestamp(0) == 600
    assert rw2.timestamp(900) == 1500


def test_offsets_are_fixed_at_start() -> None:
    rw = RtpRewriter(params(), start_sequence=10, start_timestamp=20)
    assert not rw.started
    rw.start(packet(5000, 90000))
    assert (rw.sequence_offset, rw.timestamp_offset) == ((10 - 5000) & 0xFFFF, (20 - 90000) % 2**32)
    # a late (reordered) packet from before the start maps just below the start values
    out = RtpPacket.parse(rw.rewrite(packet(4999, 87000)))
    assert (out.sequence_number, out.timestamp) == (9, 20 - 3000 + 2**32)


def test_random_start_values() -> None:
    starts = {random_start_sequence() for _ in range(200)}
    assert all(0 <= s < 32768 for s in starts)
    assert len(starts) > 100
    rw = RtpRewriter(params())
    rw.start(packet(5, 7))
    assert rw.sequence(5) < 32768


def test_extensions_present_with_right_values() -> None:
    rw = RtpRewriter(params(mid="1", extension_ids=EXT_IDS), start_sequence=0, start_timestamp=0)
    first = packet(1, 0, audio_level=(True, 42))
    rw.start(first)
    data = rw.rewrite(first, abs_send_time=0xABCDEF)
    assert data[0] & 0x10  # X bit
    out = RtpPacket.parse(data, FULL_MAP)
    assert out.extensions.mid == "1"
    assert out.extensions.abs_send_time == 0xABCDEF
    assert out.extensions.audio_level == (True, 42)
    assert out.payload == first.payload
    assert out.sequence_number == 0

    quiet = RtpPacket.parse(rw.rewrite(packet(2, 0, audio_level=(False, 127)), 1), FULL_MAP)
    assert quiet.extensions.audio_level == (False, 127)
    assert quiet.extensions.abs_send_time == 1


def test_long_mid_is_kept_up_to_16_bytes() -> None:
    rw = RtpRewriter(params(mid="a" * 16, extension_ids={URI_MID: 9}), 0, 0)
    rw.start(packet(0, 0))
    out = RtpPacket.parse(rw.rewrite(packet(0, 0)), extensions_map({URI_MID: 9}))
    assert out.extensions.mid == "a" * 16


def test_extensions_absent_when_not_negotiated() -> None:
    rw = RtpRewriter(params(mid="1"), start_sequence=0, start_timestamp=0)
    first = packet(1, 0, audio_level=(True, 42))
    rw.start(first)
    data = rw.rewrite(first, abs_send_time=0xABCDEF)
    assert not data[0] & 0x10
    out = RtpPacket.parse(data, FULL_MAP)
    assert out.extensions.mid is None
    assert out.extensions.abs_send_time is None
    assert out.extensions.audio_level is None
    assert out.payload == first.payload


def test_each_extension_only_when_its_id_is_negotiated() -> None:
    only_ast = RtpRewriter(params(mid="v", extension_ids={URI_ABS_SEND_TIME: 3}), 0, 0)
    first = packet(1, 0, audio_level=(True, 5))
    only_ast.start(first)
    ast_map = extensions_map({URI_ABS_SEND_TIME: 3, URI_MID: 4, URI_AUDIO_LEVEL: 1})
    out = RtpPacket.parse(only_ast.rewrite(first, 77), ast_map)
    assert out.extensions.abs_send_time == 77
    assert out.extensions.mid is None
    assert out.extensions.audio_level is None

    # mid id negotiated but no mid known: no mid element
    no_mid = RtpRewriter(params(mid=None, extension_ids={URI_MID: 4}), 0, 0)
    no_mid.start(first)
    data = no_mid.rewrite(first)
    assert not data[0] & 0x10
    assert RtpPacket.parse(data, FULL_MAP).extensions.mid is None

    # abs-send-time negotiated but no value given; no audio level on the packet
    no_values = RtpRewriter(params(extension_ids=EXT_IDS), 0, 0)
    plain = packet(1, 0)
    no_values.start(plain)
    data = no_values.rewrite(plain)
    assert not data[0] & 0x10
    assert RtpPacket.parse(data, FULL_MAP).payload == plain.payload


def test_extension_block_is_word_aligned() -> None:
    for mid in ("1", "12", "123", "1234", "video0"):
        rw = RtpRewriter(params(mid=mid, extension_ids=EXT_IDS), 0, 0)
        first = packet(1, 0, payload=b"\xaa\xbb")
        rw.start(first)
        data = rw.rewrite(first, 5)
        profile, words = struct.unpack("!HH", data[12:16])
        assert profile == 0xBEDE
        assert data[16 + 4 * words :] == b"\xaa\xbb"
        out = RtpPacket.parse(data, FULL_MAP)
        assert out.extensions.mid == mid and out.extensions.abs_send_time == 5


RTX_PARAMS = params(rtx_ssrc=RTX_SSRC, rtx_payload_type=97)


def test_rtx_retransmission_rfc_4588() -> None:
    rw = RtpRewriter(RTX_PARAMS, start_sequence=500, start_timestamp=9000)
    first = packet(65535, 100, b"first", marker=1)
    rw.start(first)
    second = packet(0, 3100, b"second-payload")
    rtx_seqs = []
    for original, expected_seq in ((second, 501), (first, 500), (second, 501)):
        data = rw.retransmission(original)
        rtx = RtpPacket.parse(data)
        assert rtx.ssrc == RTX_SSRC
        assert rtx.payload_type == 97
        assert rtx.marker == original.marker
        assert rtx.timestamp == rw.timestamp(original.timestamp)
        assert rtx.payload[:2] == struct.pack("!H", expected_seq)
        assert rtx.payload[2:] == original.payload
        rtx_seqs.append(rtx.sequence_number)
    # the RTX stream has its own consecutive sequence numbers
    assert rtx_seqs == [(rtx_seqs[0] + i) & 0xFFFF for i in range(3)]
    # and sending on the media stream is unaffected
    assert RtpPacket.parse(rw.rewrite(packet(1, 6100))).sequence_number == 502


def test_rtx_sequence_is_independent_of_media_sequence() -> None:
    rw = RtpRewriter(RTX_PARAMS, start_sequence=0, start_timestamp=0)
    first = packet(0, 0)
    rw.start(first)
    a = RtpPacket.parse(rw.retransmission(first)).sequence_number
    for i in range(10):
        rw.rewrite(packet(i, 0))
    b = RtpPacket.parse(rw.retransmission(first)).sequence_number
    assert b == (a + 1) & 0xFFFF


def test_rtx_keeps_extensions() -> None:
    rw = RtpRewriter(
        params(rtx_ssrc=RTX_SSRC, rtx_payload_type=97, mid="0", extension_ids=EXT_IDS), 0, 0
    )
    first = packet(0, 0, b"abc")
    rw.start(first)
    rtx = RtpPacket.parse(rw.retransmission(first, abs_send_time=99), FULL_MAP)
    assert rtx.extensions.mid == "0" and rtx.extensions.abs_send_time == 99
    assert rtx.payload == b"\x00\x00abc"


@pytest.mark.parametrize(
    "kwargs", [{}, {"rtx_ssrc": RTX_SSRC}, {"rtx_payload_type": 97}], ids=["none", "ssrc", "pt"]
)
def test_plain_resend_without_rtx(kwargs: dict[str, int]) -> None:
    rw = RtpRewriter(params(**kwargs), start_sequence=321, start_timestamp=0)
    first = packet(1000, 0, b"first", marker=1)
    rw.start(first)
    later = packet(1003, 9000, b"later")
    assert rw.retransmission(later) == rw.rewrite(later)
    again = RtpPacket.parse(rw.retransmission(first))
    assert again.ssrc == SUB_SSRC
    assert again.payload_type == 96
    assert again.sequence_number == 321
    assert again.marker == 1
    assert again.payload == b"first"
