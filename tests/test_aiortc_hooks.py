"""The aiortc internals that sfu/aiortc_hooks.py relies on are still where it expects them.

Fails loudly on an aiortc upgrade that moves, renames or re-signs any of them.
"""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import AsyncIterator

import aiortc
import pytest
from aiortc import (
    RTCCertificate,
    RTCConfiguration,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket, RtpPacket, wrap_rtx

from aiosfu.sfu.aiortc_hooks import (
    DTLS_PRIVATE,
    RECEIVER_PRIVATE,
    SENDER_PRIVATE,
    ForwardingReceiver,
    ForwardingSender,
    NeverTrack,
    negotiate_transport_cc,
)
from aiosfu.sfu.packet_io import arrival_clock
from aiosfu.sfu.rewrite import URI_TRANSPORT_CC

PINNED = "1.16.0"


@pytest.fixture
async def dtls() -> AsyncIterator[RTCDtlsTransport]:
    # As aiortc's own tests build one: no network is touched until start().
    transport = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer()), [RTCCertificate.generateCertificate()]
    )
    yield transport
    await transport.stop()


def test_aiortc_is_the_version_the_hooks_were_written_for() -> None:
    assert aiortc.__version__ == PINNED


async def test_transceiver_keeps_negotiated_codecs_in_codecs() -> None:
    """receive_constrained_baseline_first reorders `_codecs`, which createAnswer lists."""
    offerer = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))
    answerer = aiortc.RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))
    try:
        offerer.addTransceiver("video", direction="sendonly")
        await offerer.setLocalDescription(await offerer.createOffer())
        await answerer.setRemoteDescription(offerer.localDescription)
        (transceiver,) = answerer.getTransceivers()
        negotiated = transceiver._codecs
        assert [c.mimeType for c in negotiated if c.mimeType != "video/rtx"] == [
            "video/VP8",
            "video/H264",
            "video/H264",
        ]
        transceiver._codecs = negotiated[::-1]  # what the answer lists follows `_codecs`
        await answerer.setLocalDescription(await answerer.createAnswer())
        answer = answerer.localDescription.sdp
        assert answer.index("H264/90000") < answer.index("VP8/90000")
    finally:
        await offerer.close()
        await answerer.close()


def test_certificate_builds_the_ssl_context_the_hooks_widen(dtls: RTCDtlsTransport) -> None:
    """accept_rsa_dtls_servers wraps RTCCertificate._create_ssl_context."""
    from OpenSSL import SSL

    from aiosfu.sfu.aiortc_hooks import accept_rsa_dtls_servers

    accept_rsa_dtls_servers()
    context = RTCCertificate.generateCertificate()._create_ssl_context(dtls._srtp_profiles)
    ciphers = SSL.Connection(context).get_cipher_list()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in ciphers
    assert "ECDHE-ECDSA-AES128-GCM-SHA256" in ciphers


def test_dtls_private_names_exist(dtls: RTCDtlsTransport) -> None:
    assert [name for name in DTLS_PRIVATE if not hasattr(dtls, name)] == []
    assert dtls._role == "auto"  # what answer_as_dtls_server takes as "not chosen yet"


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_receiver_private_names_exist(dtls: RTCDtlsTransport, kind: str) -> None:
    receiver = RTCRtpReceiver(kind, dtls)
    missing = [name for name in RECEIVER_PRIVATE if not hasattr(receiver, name)]
    assert missing == []
    # and the non-mangled ones the hooks use
    for name in ("_enabled", "_send_rtcp", "_send_rtcp_nack", "_send_rtcp_pli", "_run_rtcp"):
        assert hasattr(receiver, name), name
    assert receiver._RTCRtpReceiver__started is False
    assert receiver._RTCRtpReceiver__decoder_thread is None


@pytest.mark.parametrize("kind", ["audio", "video"])
async def test_sender_private_names_exist(dtls: RTCDtlsTransport, kind: str) -> None:
    sender = RTCRtpSender(kind, dtls)
    missing = [name for name in SENDER_PRIVATE if not hasattr(sender, name)]
    assert missing == []
    assert isinstance(sender._ssrc, int) and isinstance(sender._rtx_ssrc, int)
    assert sender._RTCRtpSender__packet_count == 0


def test_transport_methods_used_by_the_hooks_exist() -> None:
    for name in ("_register_rtp_receiver", "_send_rtp"):
        assert callable(getattr(RTCDtlsTransport, name, None)), name


def test_aiortc_sender_reports_read_the_fields_the_hooks_write() -> None:
    # ForwardingSender keeps Sender Reports true by writing these; aiortc's RTCP loop
    # must still be what reads them.
    source = inspect.getsource(RTCRtpSender._run_rtcp)
    for field in ("__ntp_timestamp", "__rtp_timestamp", "__packet_count", "__octet_count"):
        assert f"self.{field}" in source, field


def parameter_names(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base", "subclass", "name"),
    [
        (RTCRtpReceiver, ForwardingReceiver, "receive"),
        (RTCRtpReceiver, ForwardingReceiver, "_handle_rtp_packet"),
        (RTCRtpReceiver, ForwardingReceiver, "_handle_rtcp_packet"),
        (RTCRtpSender, ForwardingSender, "send"),
        (RTCRtpSender, ForwardingSender, "_handle_rtcp_packet"),
    ],
)
def test_overridden_methods_keep_their_signature(base: type, subclass: type, name: str) -> None:
    original = base.__dict__.get(name)
    assert original is not None, f"{base.__name__}.{name} is gone"
    assert inspect.iscoroutinefunction(original)
    override = subclass.__dict__[name]
    assert parameter_names(original) == parameter_names(override)


def test_expected_signatures() -> None:
    assert parameter_names(RTCRtpReceiver.receive) == ["self", "parameters"]
    assert parameter_names(RTCRtpReceiver._handle_rtp_packet) == [
        "self",
        "packet",
        "arrival_time_ms",
    ]
    assert parameter_names(RTCRtpReceiver._handle_rtcp_packet) == ["self", "packet"]
    assert parameter_names(RTCRtpSender.send) == ["self", "parameters"]
    assert parameter_names(RTCRtpReceiver._send_rtcp_pli) == ["self", "media_ssrc"]
    assert parameter_names(RTCRtpReceiver._send_rtcp_nack) == ["self", "media_ssrc", "lost"]


VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
RTX = RTCRtpCodecParameters(
    mimeType="video/rtx", clockRate=90000, payloadType=97, parameters={"apt": 96}
)


async def test_forwarding_receiver_hands_packets_over_without_decoding(
    dtls: RTCDtlsTransport,
) -> None:
    got: list[RtpPacket] = []
    reports: list[tuple[int, int, int]] = []

    async def on_rtp(packet: RtpPacket) -> None:
        got.append(packet)

    receiver = ForwardingReceiver.adopt(
        RTCRtpReceiver("video", dtls), on_rtp, lambda *sr: reports.append(sr)
    )
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[VP8, RTX],
            encodings=[
                RTCRtpDecodingParameters(ssrc=1111, payloadType=96, rtx=RTCRtpRtxParameters(2222))
            ],
        )
    )
    try:
        assert receiver.decoding is False
        media = RtpPacket(payload_type=96, sequence_number=10, timestamp=5, ssrc=1111)
        media.payload = b"\x10\x00abc"
        await receiver._handle_rtp_packet(media, arrival_time_ms=0)
        rtx = wrap_rtx(media, payload_type=97, sequence_number=500, ssrc=2222)
        await receiver._handle_rtp_packet(rtx, arrival_time_ms=1)
        unknown = RtpPacket(payload_type=45, sequence_number=11, ssrc=1111, payload=b"x")
        await receiver._handle_rtp_packet(unknown, arrival_time_ms=2)
        assert [(p.ssrc, p.payload_type, p.sequence_number, p.payload) for p in got] == [
            (1111, 96, 10, b"\x10\x00abc"),
            (1111, 96, 10, b"\x10\x00abc"),  # RTX unwrapped
        ]
        sr = RtcpSrPacket(
            ssrc=1111,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1 << 40, rtp_timestamp=9000, packet_count=1, octet_count=5
            ),
        )
        await receiver._handle_rtcp_packet(sr)
        assert reports == [(1111, 1 << 40, 9000)]
    finally:
        await receiver.stop()
    assert receiver.decoding is False


async def test_forwarding_sender_sets_the_sender_clock(dtls: RTCDtlsTransport) -> None:
    sender = ForwardingSender.adopt(RTCRtpSender(NeverTrack("video"), dtls))
    assert sender.has_sender_clock is False
    sender.set_sender_clock(123, 456)
    assert sender.has_sender_clock is True
    assert sender._RTCRtpSender__ntp_timestamp == 123
    assert sender._RTCRtpSender__rtp_timestamp == 456
    with pytest.raises(ConnectionError):  # not connected: the caller's ConnectionError path
        await sender.write_rtp(b"\x80" * 12, 0, 0)


TRANSPORT_CC = RTCRtpHeaderExtensionParameters(id=5, uri=URI_TRANSPORT_CC)


async def test_transport_wide_sequence_numbers_feed_the_connection_uplink(
    dtls: RTCDtlsTransport,
) -> None:
    async def on_rtp(packet: RtpPacket) -> None:
        pass

    receiver = ForwardingReceiver.adopt(RTCRtpReceiver("video", dtls), on_rtp, lambda *sr: None)
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[VP8, RTX],
            headerExtensions=[TRANSPORT_CC],
            encodings=[
                RTCRtpDecodingParameters(ssrc=1111, payloadType=96, rtx=RTCRtpRtxParameters(2222))
            ],
        )
    )
    try:
        uplink = receiver.uplink
        assert uplink is not None and connection_uplink_of(dtls) is uplink
        # the RTX SSRC is routable before its first packet, so the fast ingress takes it
        assert dtls._rtp_router.ssrc_table.get(2222) is receiver
        extensions = dtls._rtp_header_extensions_map
        for seq in (7, 8):
            media = RtpPacket(payload_type=96, sequence_number=seq, timestamp=5, ssrc=1111)
            media.extensions.transport_sequence_number = 100 + seq
            media.extensions.abs_send_time = 1000 + seq
            media.payload = b"\x10\x00abc"
            receiver.ingest(media.serialize(extensions), arrival_us=1_000_000 + seq * 1000)
        assert uplink.packets == 2
        assert uplink.feedback.pending == 2
        # the browser runs its own controller on transport-cc: no REMB from aiortc's
        assert receiver._rtcp_out == []
        packets = uplink.feedback.flush()
        assert len(packets) == 1 and packets[0][1] == 205 and packets[0][0] & 0x1F == 15
    finally:
        await receiver.stop()
    assert uplink.closed


def connection_uplink_of(dtls: RTCDtlsTransport) -> object:
    return getattr(dtls, "_aiosfu_uplink", None)


OFFER_WITH_TRANSPORT_CC = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
m=video 9 UDP/TLS/RTP/SAVPF 96 97
c=IN IP4 0.0.0.0
a=ice-ufrag:abcd
a=ice-pwd:abcdefghijklmnopqrstuvwx
a=fingerprint:sha-256 FINGERPRINT
a=setup:actpass
a=mid:0
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:4 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=sendonly
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=ssrc:1111 cname:x
"""


@pytest.mark.parametrize("offered", [True, False])
async def test_transport_cc_is_answered_when_offered(offered: bool) -> None:
    negotiate_transport_cc()
    fingerprint = ":".join(["AB"] * 32)
    offer = OFFER_WITH_TRANSPORT_CC.replace("FINGERPRINT", fingerprint).replace("\n", "\r\n")
    if not offered:
        offer = "".join(line for line in offer.splitlines(True) if "transport" not in line)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
    finally:
        await pc.close()
    assert ("a=rtcp-fb:96 transport-cc" in answer.sdp) is offered
    assert (f"a=extmap:4 {URI_TRANSPORT_CC}" in answer.sdp) is offered
    assert "a=rtcp-fb:96 goog-remb" in answer.sdp  # REMB stays for peers that want it


def test_arrival_time_is_when_the_datagram_reached_the_host_not_when_it_was_read() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", 0))
        arrival = arrival_clock(receiver)
        sender.sendto(b"x", receiver.getsockname())
        time.sleep(0.05)  # the process is busy elsewhere
        receiver.recvfrom(16)
        read_at = int(time.monotonic() * 1_000_000)
        assert 40_000 <= read_at - arrival() < 1_000_000


async def test_peer_connections_share_a_certificate_and_build_no_idle_estimator() -> None:
    """cheap_peer_connections: what aiortc would build per connection, built once."""
    from aiortc.rate import RemoteBitrateEstimator

    from aiosfu.sfu.aiortc_hooks import cheap_peer_connections

    cheap_peer_connections()
    first, second = aiortc.RTCPeerConnection(), aiortc.RTCPeerConnection()
    try:
        for pc in (first, second):
            pc.addTransceiver("video", direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
        first_fp, second_fp = (
            {x for x in pc.localDescription.sdp.splitlines() if x.startswith("a=fingerprint:")}
            for pc in (first, second)
        )
        assert first_fp and first_fp == second_fp
        receiver = first.getTransceivers()[0].receiver
        estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator
        assert estimator is not None and estimator._estimator is None, "built before use"
        estimator.add(arrival_time_ms=1, abs_send_time=1, payload_size=1000, ssrc=1)
        assert isinstance(estimator._estimator, RemoteBitrateEstimator)
    finally:
        await first.close()
        await second.close()


async def test_host_candidates_in_a_port_range_use_what_aioice_has() -> None:
    """The port-range gathering replaces aioice's host part and keeps the rest of it."""
    import aioice.ice
    import aioice.turn

    from aiosfu.sfu.aiortc_hooks import gather_host_candidates_in

    original = aioice.ice.Connection.get_component_candidates
    assert list(inspect.signature(original).parameters) == [
        "self", "component", "addresses", "timeout"
    ]  # fmt: skip
    assert isinstance(aioice.turn.UDP_SOCKET_BUFFER_SIZE, int)
    assert inspect.iscoroutinefunction(aioice.ice.server_reflexive_candidate)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        taken = probe.getsockname()[1]
        ports = range(taken, taken + 2)
        gather_host_candidates_in(ports)
        try:
            connection = aioice.ice.Connection(ice_controlling=False)
            assert connection._protocols == []
            found = await connection.get_component_candidates(1, ["127.0.0.1"])
            assert [(c.host, c.port, c.type) for c in found] == [("127.0.0.1", taken + 1, "host")]
            assert [p.local_candidate for p in connection._protocols] == found
            await connection.close()
        finally:
            gather_host_candidates_in(None)
    assert aioice.ice.Connection.get_component_candidates is original
