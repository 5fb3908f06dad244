"""aiosfu's per-packet forwarding path, built from its real objects, with the network cut
off at the sockets: what `python -m bench.callgrind` counts instructions of.

One publisher's video track and N subscribers, each on its own connected transport with
its own SRTP session. A datagram goes in where the event loop would hand it over (the
publisher socket's `datagram_received`, which the fast path takes over) and comes out
as N protected datagrams handed to `sendto` of sink sockets that only count them.

Every object on the path is the server's own (PacketIO and its hook, ForwardingReceiver,
Producer, Router, SimpleConsumer, RtpRewriter, ForwardingSender, libsrtp through
pylibsrtp).
What is not: ICE and DTLS never ran; each transport is put in the state a finished
handshake leaves it in (SRTP sessions keyed, one nominated candidate pair, state
"connected"), and that pair's socket is a sink. That is why this module reads aiortc's
and aioice's private names: it stands in for the handshake, nothing else.

`build_path` is the adapter: the only code here that knows how the server's data path
is wired. When that wiring changes, re-point `build_path` at the new objects and keep
the `ForwardingPath` it returns; the harness and its figures stay comparable.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
from aiortc.rtcdtlstransport import SRTP_PROFILES
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pylibsrtp import Policy, Session

from aiosfu.sfu.aiortc_hooks import ForwardingReceiver, ForwardingSender, NeverTrack
from aiosfu.sfu.consumer import SimpleConsumer
from aiosfu.sfu.producer import Producer
from aiosfu.sfu.rewrite import URI_ABS_SEND_TIME, URI_MID, OutputParams
from aiosfu.sfu.router import Router

# Browsers publish and subscribe with transport-wide congestion control: each packet
# carries the transport-wide sequence number in, and gets the subscriber's own out.
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
try:
    from aiosfu.sfu.downstream import Downstream
except ImportError:  # a tree from before per-subscriber estimation (a before/after pair)
    Downstream = None  # type: ignore[assignment,misc]

Address = tuple[str, int]


@dataclass(frozen=True)
class Stream:
    """The publisher's video track, as negotiated (the harness builds its packets)."""

    ssrc: int = 0xA1B2C3D4
    payload_type: int = 96
    clock_rate: int = 90000
    mid: str = "1"
    extension_ids: dict[str, int] = field(
        default_factory=lambda: {URI_MID: 1, URI_ABS_SEND_TIME: 2, URI_TRANSPORT_CC: 5}
    )
    source: Address = ("127.0.0.2", 40000)  # the publisher's address, as ICE paired it


def srtp_profile() -> Any:
    """The profile two aiortc peers negotiate (the first libsrtp supports)."""
    return SRTP_PROFILES[0]


def srtp_key(seed: int) -> bytes:
    """Fixed key material: the same bytes every run, so libsrtp does the same work."""
    profile = srtp_profile()
    size = profile.key_length + profile.salt_length
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


def fixed_certificate() -> RTCCertificate:
    """The DTLS certificate every transport holds, made the same way every run (fixed key,
    dates and serial, deterministic ECDSA): a random one has a signature one or two bytes
    longer or shorter, and that leaves the C allocator in another state."""
    key = ec.derive_private_key(0x5EED_CAFE_F00D, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "bench")])
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    return RTCCertificate(key=key, cert=cert)


def srtp_session(key: bytes, inbound: bool) -> Session:
    """A session keyed as aiortc keys its own after DTLS (rtcdtlstransport.py)."""
    policy = Policy(
        key=key,
        ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=srtp_profile().libsrtp_profile,
    )
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return Session(policy)


@dataclass
class ForwardingPath:
    """What the harness drives: one SRTP datagram in, and what came out of the sinks."""

    deliver: Callable[[bytes, Address], None]  # the publisher socket's datagram_received
    source: Address
    sinks: list[SinkSocket]
    strays: list[bytes]  # datagrams that left the fast path (aiortc's slow path got them)

    def sent(self) -> int:
        return sum(sink.datagrams for sink in self.sinks)


# ----------------------------------------------------------------------------------------
# The sockets, cut off: the lowest layer the server touches, replaced by sinks.


class SinkSocket:
    """A subscriber's UDP socket that sends nothing: it counts what it was given."""

    def __init__(self) -> None:
        self.datagrams = 0
        self.octets = 0
        self.last: Any = b""  # the last datagram (a view, valid until the next one)

    def sendto(self, data: Any, address: Address) -> int:
        self.datagrams += 1
        self.last = data
        size = len(data)
        self.octets += size
        return size


class SinkTransport:
    """The asyncio datagram transport aioice's protocol holds (the fast paths read _sock);
    what goes through the transport itself (RTCP, from aiortc's own tasks) is counted."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self.max_size = 256 * 1024
        self.datagrams = 0

    def sendto(self, data: bytes, address: Address) -> None:
        self.datagrams += 1


class SinkProtocol:
    """aioice's per-candidate protocol: what arrives off the fast path is kept as a stray."""

    def __init__(self, sock: Any, strays: list[bytes]) -> None:
        self.transport = SinkTransport(sock)
        self._strays = strays

    def datagram_received(self, data: bytes, address: Address) -> None:
        self._strays.append(bytes(data))

    async def send_data(self, data: bytes, address: Address) -> None:
        self.transport.sendto(data, address)  # RTCP from aiortc's own loops


@dataclass
class SinkPair:
    """aioice's nominated candidate pair."""

    protocol: SinkProtocol
    remote_addr: Address


def connected_transport(
    certificate: RTCCertificate, key: bytes, sock: Any, remote: Address, strays: list[bytes]
) -> RTCDtlsTransport:
    """An RTCDtlsTransport as a finished ICE + DTLS handshake leaves it (see the module
    docstring), its one candidate pair on `sock`."""
    dtls = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()), [certificate])
    dtls._rx_srtp = srtp_session(key, inbound=True)
    dtls._tx_srtp = srtp_session(key, inbound=False)
    pair = SinkPair(SinkProtocol(sock, strays), remote)
    dtls.transport._connection._nominated[1] = pair
    dtls._state = DtlsState.CONNECTED
    return dtls


# ----------------------------------------------------------------------------------------
# THE ADAPTER: the one function that wires the server's current data-path objects.


async def build_path(subscribers: int, stream: Stream, keepalive: list[Any]) -> ForwardingPath:
    """Publisher transport → PacketIO (its receive hook on the socket) →
    ForwardingReceiver → Producer → the room's Router → `subscribers` x (SimpleConsumer
    → ForwardingSender → the subscriber connection's PacketIO → sink socket), wired as
    `LocalSfu.publish` / `LocalSfu.subscribe` wire them once negotiation is done.

    The publisher's datagrams are protected with `srtp_key(0)`, subscriber i's transport
    is keyed with `srtp_key(i + 1)`. `keepalive` holds what must outlive the call."""
    certificate = fixed_certificate()
    strays: list[bytes] = []
    # The publisher's socket: a real one, never written to, so the fast path's drain
    # (recvfrom until EAGAIN after each datagram) costs what it costs on a live socket.
    inbound, other_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    inbound.setblocking(False)
    keepalive += [inbound, other_end]
    publisher = connected_transport(certificate, srtp_key(0), inbound, stream.source, strays)

    codec = RTCRtpCodecParameters(
        mimeType="video/VP8", clockRate=stream.clock_rate, payloadType=stream.payload_type
    )
    receiver = RTCRtpReceiver("video", publisher)
    producer = Producer("video", codec, upstream=receiver)  # type: ignore[arg-type]
    ForwardingReceiver.adopt(
        receiver, on_rtp=producer.on_rtp, on_sender_report=producer.on_sender_report
    )
    receiver._set_rtcp_ssrc(0x0BADCAFE)  # as RTCPeerConnection does: REMB is sent
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[codec],
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri)
                for uri, i in stream.extension_ids.items()
            ],
            muxId=stream.mid,
            encodings=[RTCRtpDecodingParameters(ssrc=stream.ssrc, payloadType=stream.payload_type)],
        )
    )
    router = Router("bench")
    router.add_producer(producer)
    keepalive += [publisher, receiver, producer, router]

    sinks = []
    for i in range(subscribers):
        sink = SinkSocket()
        dtls = connected_transport(
            certificate, srtp_key(i + 1), sink, ("127.0.0.3", 41000 + i), strays
        )
        if Downstream is None:
            sender = ForwardingSender.adopt(RTCRtpSender(NeverTrack("video"), dtls))
            consumer = SimpleConsumer(producer, sender)
        else:
            downstream = Downstream()
            sender = ForwardingSender.adopt(RTCRtpSender(NeverTrack("video"), dtls), downstream)
            consumer = SimpleConsumer(producer, sender, downstream=downstream)
        sender.on_negotiated = consumer.activate
        sender.on_nack = consumer.on_nack
        sender.on_keyframe_request = consumer.on_keyframe_request
        router.attach(producer, consumer)
        await consumer.activate(
            OutputParams(
                ssrc=0x90000000 + i,  # fixed (aiortc draws them at random): same work each run
                payload_type=stream.payload_type,
                clock_rate=stream.clock_rate,
                mid="1",
                extension_ids=dict(stream.extension_ids),
            )
        )
        sinks.append(sink)
        keepalive += [dtls, sender, consumer]

    # A publisher's Sender Report, as arrives within its first second: from then on every
    # subscriber's sender reports the publisher's clock (the steady state).
    await receiver._handle_rtcp_packet(
        RtcpSrPacket(
            ssrc=stream.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=0xE0000000_00000000, rtp_timestamp=0, packet_count=0, octet_count=0
            ),
        )
    )
    protocol = publisher.transport._connection._nominated[1].protocol
    deliver = protocol.__dict__.get("datagram_received")
    if deliver is None:
        raise RuntimeError("the fast path did not take over the publisher's socket")
    return ForwardingPath(deliver=deliver, source=stream.source, sinks=sinks, strays=strays)
