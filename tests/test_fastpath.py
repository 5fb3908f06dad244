"""The forwarding fast path gives the same bytes as the general path, and a real server
actually takes it (a regression to aiortc's slow path would pass every other test)."""

from __future__ import annotations

import itertools
import os
import random
import struct

import pylibsrtp
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from aiosfu.client import Client
from aiosfu.sfu.packet_io import fast_protect, fast_protect_parts, fast_unprotect
from aiosfu.sfu.rewrite import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_TRANSPORT_CC,
    OutputParams,
    RtpRewriter,
)
from tests.conftest import ServerProcess, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track

MAP = HeaderExtensionsMap()
MAP.configure(
    RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=5, uri=URI_TRANSPORT_CC)])
)


def _session(key: bytes) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        policy=pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    )


def test_fast_protect_matches_pylibsrtp() -> None:
    key = os.urandom(30)
    reference, fast = _session(key), fast_protect(_session(key))
    for seq in range(300):
        size = random.Random(seq).randint(12, 1300)
        packet = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0xABCD) + os.urandom(size)
        assert fast(packet) == reference.protect(packet)
    with pytest.raises(ValueError):
        fast(b"\x80" * 1500)


def test_protecting_header_and_payload_apart_is_protecting_them_joined() -> None:
    key = os.urandom(30)
    reference, parts = _session(key), fast_protect_parts(_session(key))
    assert parts is not None
    for seq in range(50):
        header = bytearray(struct.pack("!BBHII", 0x90, 96, seq, seq, 7) + b"\xbe\xde\x00\x01abcd")
        payload = os.urandom(1100)
        assert bytes(parts(header, payload)) == reference.protect(bytes(header) + payload)


def test_packets_larger_than_pylibsrtp_takes_are_protected_up_to_one_datagram() -> None:
    """GStreamer's payloaders send 1400-byte RTP; forwarding adds header extensions. pylibsrtp
    refuses anything over 1356 bytes, which used to drop every such packet."""
    key = os.urandom(30)
    parts = fast_protect_parts(_session(key))
    assert parts is not None
    inbound = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    receiver = pylibsrtp.Session(policy=inbound)
    header = struct.pack("!BBHII", 0x90, 96, 1, 1, 7) + b"\xbe\xde\x00\x02" + b"\x10\x01" * 4
    for seq, size in enumerate((1356, 1400, 1472)):
        header = header[:2] + struct.pack("!H", seq) + header[4:]
        payload = os.urandom(size - len(header))
        protected = bytes(parts(header, payload))
        assert len(protected) == size + 10
        assert fast_unprotect(receiver)(protected) == header + payload
    with pytest.raises(ValueError):
        parts(header, os.urandom(1500))


def test_fast_unprotect_matches_pylibsrtp() -> None:
    key = os.urandom(30)
    sender = _session(key)
    inbound = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    reference = pylibsrtp.Session(policy=inbound)
    fast = fast_unprotect(pylibsrtp.Session(policy=inbound))
    for seq in range(100):
        clear = struct.pack("!BBHII", 0x80, 96, seq, seq, 7) + os.urandom(500)
        protected = sender.protect(clear)
        assert fast(protected) == reference.unprotect(protected) == clear
    with pytest.raises(pylibsrtp.Error):
        fast(protected)  # a replay
    with pytest.raises(pylibsrtp.Error):
        fast(protected[:-1] + bytes([protected[-1] ^ 1]))  # tampered


def test_fast_protect_keeps_its_session_alive() -> None:
    fast = fast_protect(_session(os.urandom(30)))  # no other reference to the session
    packet = struct.pack("!BBHII", 0x80, 96, 1, 0, 1) + b"x" * 100
    assert len(fast(packet)) == len(packet) + 10  # AES-CM/HMAC-SHA1-80 auth tag


@pytest.mark.parametrize(
    ("mid", "ids"),
    [
        (mid, dict(ids))
        for mid in (None, "0", "video-12345")
        for n in range(5)
        for ids in itertools.combinations(
            ((URI_MID, 4), (URI_ABS_SEND_TIME, 2), (URI_AUDIO_LEVEL, 1), (URI_TRANSPORT_CC, 5)), n
        )
    ],
)
def test_template_rewrite_is_the_general_rewrite(mid: str | None, ids: dict[str, int]) -> None:
    params = OutputParams(
        ssrc=0x1234, payload_type=111, clock_rate=48000, mid=mid, extension_ids=ids
    )
    fast, general = RtpRewriter(params, 65530, 7), RtpRewriter(params, 65530, 7)
    rng = random.Random(5)
    for seq in range(65530, 65546):  # across the publisher's wrap
        packet = RtpPacket(
            payload_type=96,
            marker=seq % 3 == 0,
            sequence_number=seq & 0xFFFF,
            timestamp=(seq * 960) & 0xFFFFFFFF,
            ssrc=0x9999,
            payload=rng.randbytes(rng.randint(1, 200)),
        )
        packet.extensions.audio_level = None if seq % 2 else (seq % 4 == 0, seq % 128)
        for rewriter in (fast, general):
            if not rewriter.started:
                rewriter.start(packet)
        abs_send_time = None if seq % 5 == 0 else rng.getrandbits(24)
        transport_sequence = None if seq % 7 == 0 else rng.getrandbits(16)
        assert fast.rewrite(packet, abs_send_time, transport_sequence) == general.rewrite_general(
            packet, abs_send_time, transport_sequence
        )
        out = RtpPacket.parse(fast.rewrite(packet, abs_send_time, transport_sequence), MAP)
        if URI_TRANSPORT_CC in ids:
            assert out.extensions.transport_sequence_number == transport_sequence


@pytest.mark.media
async def test_server_forwards_on_the_fast_path(server: ServerProcess) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    publication = await teacher.publish("class", [ToneTrack(), PatternTrack(160, 120)])
    student = await Client.connect(server.ws_url, "student")
    await student.join("class")
    subscription = await student.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    audio = FrameCounter(await wait_for_track(subscription, "audio")).start()
    try:
        await wait_for(lambda: video.frames >= 30 and audio.frames >= 50, 20)
        stats = await server.stats()
        producers = stats["sfu"]["publications"][publication.mid]["producers"]
        for producer in producers:
            # all but what arrived before ICE/DTLS finished (the slow path's first packets)
            assert producer["packetsInFastPath"] >= 0.9 * producer["packetsIn"], producer
        (sub,) = stats["sfu"]["subscriptions"].values()
        assert all(c["packetsOut"] > 0 for c in sub["consumers"])

        # RTCP rides the PacketIO both ways on both legs: sender and receiver reports,
        # REMB or transport-cc feedback (a regression to aiortc's path passes the rest).
        async def rtcp_both_ways() -> bool:
            stats = await server.stats()
            legs = [
                stats["sfu"]["publications"][publication.mid]["packetIO"],
                *(s["packetIO"] for s in stats["sfu"]["subscriptions"].values()),
            ]
            return all(leg["rtcpReceived"] > 0 and leg["rtcpSent"] > 0 for leg in legs)

        await wait_for(rtcp_both_ways, 10)
    finally:
        await video.stop()
        await audio.stop()
        await student.close()
        await teacher.close()
