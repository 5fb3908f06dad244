"""The publisher's leg of congestion control, piece by piece, without a network."""

from __future__ import annotations

import asyncio

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unpack_remb_fci

from aiosfu.sfu.rewrite import URI_MID, URI_TRANSPORT_CC
from aiosfu.sfu.twcc import decode
from aiosfu.sfu.uplink import (
    NO_CEILING_BPS,
    RELEASES,
    Uplink,
    keeps_remb,
    transport_sequence_of,
)

MAP = HeaderExtensionsMap()
MAP.configure(
    RTCRtpParameters(
        headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=1, uri=URI_MID),
            RTCRtpHeaderExtensionParameters(id=5, uri=URI_TRANSPORT_CC),
        ]
    )
)


def packet(transport_sequence: int | None, mid: str | None = "0") -> bytes:
    rtp = RtpPacket(payload_type=96, sequence_number=7, ssrc=0x1234, payload=b"\xaa" * 20)
    rtp.extensions.mid = mid
    rtp.extensions.transport_sequence_number = transport_sequence
    return rtp.serialize(MAP)


def test_the_transport_sequence_number_is_read_from_the_header_alone() -> None:
    assert transport_sequence_of(packet(0xBEEF), 5) == 0xBEEF
    assert transport_sequence_of(packet(3, mid=None), 5) == 3
    assert transport_sequence_of(packet(None), 5) is None  # mid only
    assert transport_sequence_of(packet(None, mid=None), 5) is None  # no extension block
    assert transport_sequence_of(packet(9), 4) is None  # another ID
    data = bytearray(packet(9))
    data[-21:] = b"\xff" * 21  # the payload is ciphertext to this reader
    assert transport_sequence_of(bytes(data), 5) == 9
    assert transport_sequence_of(packet(9)[:20], 5) is None  # truncated extension block


async def test_feedback_goes_out_on_its_own_timer_and_covers_every_packet() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    uplink = Uplink(send, sender_ssrc=42, extension_id=5)
    base = 1_000_000
    for seq in (10, 11, 13):  # 12 lost
        uplink.record(seq, 0x1234, base + seq * 1000, 1200)
    await asyncio.sleep(0.2)  # the first poll starts the clock; feedback after 50-250 ms
    uplink.record(14, 0x1234, base + 20_000, 1200)
    await asyncio.sleep(0.3)
    uplink.close()
    feedback = [decode(p) for p in sent]
    assert feedback, "no transport-cc feedback was sent"
    reported = {seq: arrival for fb in feedback for seq, arrival in fb.arrivals()}
    assert set(reported) >= {10, 11, 12, 13}
    assert reported[12] is None and reported[10] is not None
    assert all(fb.sender_ssrc == 42 and fb.media_ssrc == 0x1234 for fb in feedback)


async def test_a_ceiling_is_sent_as_remb_and_lifted_explicitly() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    uplink = Uplink(send, sender_ssrc=42, extension_id=5)
    uplink.set_cap(None, [7])  # never capped: nothing to say
    await asyncio.sleep(0)
    assert sent == []
    uplink.set_cap(500_000, [7])
    for _ in range(RELEASES + 2):
        uplink.set_cap(None, [7])
    await asyncio.sleep(0)
    bitrates = [unpack_remb_fci(p[12:])[0] for p in sent]
    assert bitrates[0] == 500_000
    assert [b >= NO_CEILING_BPS * 0.99 for b in bitrates[1:]] == [True] * RELEASES
    assert unpack_remb_fci(sent[0][12:])[1] == [7]


async def test_a_remb_only_publisher_gets_the_lower_of_its_estimate_and_the_cap() -> None:
    # Its only congestion signal is our REMB (aiortc's receive-side estimate): the
    # subscribers' ceiling must come through that same REMB, never as a second value.
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    uplink = Uplink(send, sender_ssrc=42, extension_id=0)
    assert uplink.remb_bitrate(1_500_000) == 1_500_000  # no ceiling: the estimate
    uplink.set_cap(500_000, [7])
    assert uplink.remb_bitrate(1_600_000) == 500_000
    assert uplink.remb_bitrate(400_000) == 400_000  # its own uplink is the lower
    uplink.set_cap(None, [7])  # lifted: back to the estimate, not to "no ceiling"
    assert uplink.remb_bitrate(1_700_000) == 1_700_000
    await asyncio.sleep(0)
    bitrates = [unpack_remb_fci(p[12:])[0] for p in sent]
    assert bitrates == [500_000, 400_000]


FIREFOX_OFFER_HEAD = "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 1 0 IN IP4 0.0.0.0\r\ns=-\r\n"
CHROMIUM_OFFER_HEAD = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\n"
VIDEO_LINES = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n"
    "a=rtpmap:96 VP8/90000\r\n"
    "a=rtcp-fb:96 goog-remb\r\n"
    "a=rtcp-fb:96 transport-cc\r\n"
    "a=rtcp-fb:96 nack\r\n"
)


def test_firefox_publishers_are_answered_on_remb_and_chromium_on_transport_cc() -> None:
    chromium = CHROMIUM_OFFER_HEAD + VIDEO_LINES
    assert keeps_remb(chromium) == chromium
    firefox = keeps_remb(FIREFOX_OFFER_HEAD + VIDEO_LINES)
    assert "transport-cc" not in firefox and "transport-wide-cc" not in firefox
    assert "a=rtcp-fb:96 goog-remb\r\n" in firefox and "a=rtcp-fb:96 nack\r\n" in firefox
