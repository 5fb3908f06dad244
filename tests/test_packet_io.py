"""PacketIO, the packet boundary of one connection, against real SRTP sessions and real
loopback sockets; aiortc plays no part (tests/test_fastpath.py runs it under a server)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pylibsrtp
import pytest
from aiortc.rtp import (
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    RtpPacket,
)

from aiosfu.sfu.packet_io import PacketIO

KEY = os.urandom(30)
OURS, OTHER = 0x11111111, 0x22222222


def session(inbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(policy=pylibsrtp.Policy(key=KEY, ssrc_type=kind))


def packet(ssrc: int, seq: int, payload: bytes = b"\x90" * 100) -> bytes:
    return RtpPacket(payload_type=96, sequence_number=seq, ssrc=ssrc, payload=payload).serialize()


def receiver_report(ssrc: int, lost: int) -> bytes:
    info = RtcpReceiverInfo(
        ssrc=OURS,
        fraction_lost=lost,
        packets_lost=lost,
        highest_sequence=9,
        jitter=0,
        lsr=0,
        dlsr=0,
    )
    return bytes(RtcpRrPacket(ssrc=ssrc, reports=[info]))


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(ours, the peer's): two UDP sockets on loopback, connected in both directions."""
    ours = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with ours, peer:
        ours.bind(("127.0.0.1", 0))
        peer.bind(("127.0.0.1", 0))
        ours.setblocking(False)
        peer.settimeout(2)
        yield ours, peer


def connected(
    ours: socket.socket, peer: socket.socket
) -> tuple[PacketIO, list[tuple[bytes, int]], list[bytes]]:
    io = PacketIO()
    routed: list[tuple[bytes, int]] = []
    passed: list[bytes] = []
    io.routes[OURS] = lambda clear, arrival_us: routed.append((clear, arrival_us))
    io.connect(
        rx_srtp=session(inbound=True),
        tx_srtp=session(inbound=False),
        remote=peer.getsockname(),
        sock=ours,
        sendto=ours.sendto,
        passthrough=lambda data, addr: passed.append(data),
    )
    return io, routed, passed


def test_routed_srtp_comes_out_clear_and_the_rest_passes_through_untouched(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, routed, passed = connected(ours, peer)
    protect = session(inbound=False).protect
    mine = [protect(packet(OURS, seq)) for seq in (1, 2, 3)]
    not_routed = protect(packet(OTHER, 1))
    rtcp = bytes([0x80, 200]) + bytes(26)
    for datagram in (*mine[1:], not_routed, rtcp):
        peer.sendto(datagram, ours.getsockname())
    # The first one as asyncio would hand it over; the callback drains the rest itself.
    io.datagram_received(mine[0], peer.getsockname())
    assert [RtpPacket.parse(clear).sequence_number for clear, _ in routed] == [1, 2, 3]
    assert all(arrival > 0 for _, arrival in routed)
    assert passed == [not_routed, rtcp]  # still protected: aiortc's path unprotects them


def test_srtp_from_another_address_is_not_taken(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, routed, passed = connected(ours, peer)
    datagram = session(inbound=False).protect(packet(OURS, 1))
    io.datagram_received(datagram, ("127.0.0.9", 9))
    assert routed == [] and passed == [datagram]


def test_header_and_payload_go_out_as_one_srtp_datagram_until_disconnected(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, _, _ = connected(ours, peer)
    clear = packet(OURS, 7, b"payload")
    io.send_rtp(clear[:12], clear[12:])
    received, _ = peer.recvfrom(2048)
    assert session(inbound=True).unprotect(received) == clear
    io.disconnect()
    with pytest.raises(ConnectionError):
        io.send_rtp(clear[:12], clear[12:])
    with pytest.raises(ConnectionError):
        io.datagram_received  # noqa: B018 (the receive hook is gone with the wire)


def test_srtcp_from_the_peer_comes_out_clear_on_the_rtcp_route(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, routed, passed = connected(ours, peer)
    rtcp: list[bytes] = []
    io.rtcp_route = rtcp.append
    peer_tx = session(inbound=False)
    compound = receiver_report(OTHER, 10) + receiver_report(OTHER, 20)
    media = peer_tx.protect(packet(OURS, 1))
    peer.sendto(peer_tx.protect_rtcp(receiver_report(OTHER, 30)), ours.getsockname())
    io.datagram_received(peer_tx.protect_rtcp(compound), peer.getsockname())
    io.datagram_received(media, peer.getsockname())  # RTP still takes its own route
    assert rtcp[0] == compound
    reports = [p for clear in rtcp for p in RtcpPacket.parse(clear)]
    assert [r.reports[0].fraction_lost for r in reports if isinstance(r, RtcpRrPacket)] == [
        10,
        20,
        30,
    ]
    assert len(routed) == 1 and passed == []
    assert io.stats()["rtcpReceived"] == 2


def test_srtcp_from_another_address_or_that_fails_to_unprotect_is_not_routed(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, _, passed = connected(ours, peer)
    rtcp: list[bytes] = []
    io.rtcp_route = rtcp.append
    datagram = session(inbound=False).protect_rtcp(receiver_report(OTHER, 1))
    io.datagram_received(datagram, ("127.0.0.9", 9))
    forged = bytearray(datagram)
    forged[-1] ^= 1  # the authentication tag no longer matches
    io.datagram_received(bytes(forged), peer.getsockname())
    assert rtcp == [] and passed == [datagram]


def test_send_rtcp_protects_one_srtcp_datagram_until_disconnected(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = sockets
    io, _, _ = connected(ours, peer)
    report = bytes(
        RtcpSrPacket(
            ssrc=OURS,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=1 << 32, rtp_timestamp=90000, packet_count=3, octet_count=300
            ),
        )
    ) + receiver_report(OURS, 5)
    io.send_rtcp(report)
    received, _ = peer.recvfrom(2048)
    assert received != report
    assert session(inbound=True).unprotect_rtcp(received) == report
    assert io.stats()["rtcpSent"] == 1
    io.disconnect()
    with pytest.raises(ConnectionError):
        io.send_rtcp(report)
    peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        peer.recvfrom(2048)  # nothing went out after disconnect
