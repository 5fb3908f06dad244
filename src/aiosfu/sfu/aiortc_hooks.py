"""Every touch of aiortc internals, in one place.

aiortc has no public API to forward RTP without decoding it. These two subclasses are
swapped onto the receivers and senders aiortc creates, so:

- a publisher's `ForwardingReceiver` keeps aiortc's RTCP (receiver reports, NACKs to
  the publisher, REMB, RTX unwrap) but starts no decoder and hands each packet to a
  Producer instead of the jitter buffer;
- a subscriber's `ForwardingSender` keeps aiortc's Sender Reports and RTT but sends
  the bytes a Consumer wrote instead of encoding frames, and routes NACK and PLI/FIR to
  that Consumer.

Both also have a fast path, which is where forwarding spends its time (see
BENCHMARKS.md): `FastIngress` takes SRTP datagrams from the publisher's nominated ICE pair
straight from the socket callback (no aioice queue, no task wake-up, no STUN parse
attempt), unprotects them and runs the receiver's ingress and the Producer's fan-out
synchronously; `ForwardingSender.write_rtp` protects and hands the datagram to the
subscriber's nominated pair's socket transport directly. Everything else (DTLS, SCTP,
RTCP, STUN, RTX, an SSRC not yet known) still takes aiortc's own path.

They read name-mangled attributes of aiortc 1.16.0 (pinned exactly in pyproject.toml)
and aioice 0.13.0's nominated pair; `tests/test_aiortc_hooks.py` fails loudly if an
upgrade moves any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import ipaddress
import random
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import aioice
import aioice.candidate
import aioice.ice
import aioice.turn
import pylibsrtp
from aiortc import (
    MediaStreamTrack,
    RTCCertificate,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.clock import current_ntp_time
from aiortc.codecs import CODECS, HEADER_EXTENSIONS, is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
    unwrap_rtx,
)
from aiortc.sdp import SessionDescription

from aiosfu.contract import ErrorCode, SfuError
from aiosfu.log import get_logger
from aiosfu.sfu.rewrite import URI_TRANSPORT_CC, OutputParams
from aiosfu.sfu.twcc import RTCP_RTPFB, TransportFeedback, split_compound
from aiosfu.sfu.uplink import Uplink, now_us, transport_sequence_of

log = get_logger("aiosfu.sfu.fastpath")

CONNECTED = DtlsState.CONNECTED
Send = Callable[[bytes | bytearray, bytes], None]
SRTP_MAX_TRAILER_LEN = 144  # libsrtp's bound on what protect() appends
STAMP = struct.Struct("qq")  # struct timespec
MAX_RTP_SIZE = 1500 - 28  # the largest RTP packet one IPv4 UDP datagram carries on Ethernet
DRAIN_LIMIT = 16  # datagrams read per socket wake-up beyond the first, at most
# aiortc's own extensions use IDs 1-3; BUNDLE shares one ID space across kinds.
TRANSPORT_CC_ID = 5

# The private attributes used below; checked by tests so an aiortc upgrade fails loudly.
RECEIVER_PRIVATE = (
    "_RTCRtpReceiver__codecs",
    "_RTCRtpReceiver__rtx_ssrc",
    "_RTCRtpReceiver__started",
    "_RTCRtpReceiver__rtcp_task",
    "_RTCRtpReceiver__nack_generator",
    "_RTCRtpReceiver__remote_bitrate_estimator",
    "_RTCRtpReceiver__remote_streams",
    "_RTCRtpReceiver__rtcp_ssrc",
    "_RTCRtpReceiver__decoder_thread",
)
SENDER_PRIVATE = (
    "_RTCRtpSender__packet_count",
    "_RTCRtpSender__octet_count",
    "_RTCRtpSender__ntp_timestamp",
    "_RTCRtpSender__rtp_timestamp",
)
# read off an RTCDtlsTransport by the fast paths (public-looking, but not public API)
DTLS_PRIVATE = (
    "_state",
    "_rx_srtp",
    "_tx_srtp",
    "_rtp_router",
    "_rtp_header_extensions_map",
    "_role",
    "_set_role",
)


def negotiate_transport_cc() -> None:
    """Make aiortc answer transport-wide congestion control to peers that offer it.

    aiortc knows the header extension's wire format but offers neither it nor the
    `transport-cc` RTCP feedback, and answers intersect the offer with these two module
    tables, so they gain one entry each. Browsers then drive their send-side controller
    from our feedback (publishers) and ask for the sequence numbers on what we send them
    (subscribers). Idempotent; affects every peer connection in this process.
    """
    for kind in ("audio", "video"):
        extensions = HEADER_EXTENSIONS[kind]
        if not any(e.uri == URI_TRANSPORT_CC for e in extensions):
            extensions.append(
                RTCRtpHeaderExtensionParameters(id=TRANSPORT_CC_ID, uri=URI_TRANSPORT_CC)
            )
        for codec in CODECS[kind]:
            feedback = RTCRtcpFeedback(type="transport-cc")
            if not is_rtx(codec) and feedback not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(feedback)


def uses_transport_cc(parameters: RTCRtpReceiveParameters | RTCRtpSendParameters) -> bool:
    return any(e.uri == URI_TRANSPORT_CC for e in parameters.headerExtensions)


def fast_protect(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.protect` without its per-call allocation and checks (a third of its cost
    at 1200 bytes): the same libsrtp call on the session's own buffer. Falls back to
    `session.protect` if pylibsrtp's internals are not where this expects them."""
    parts = fast_protect_parts(session)
    if parts is None:
        return session.protect

    def protect(data: bytes) -> bytes:
        return bytes(parts(b"", data))

    return protect


def fast_protect_parts(
    session: pylibsrtp.Session,
) -> Callable[[bytes | bytearray, bytes], memoryview] | None:
    """protect(header, payload): both copied once, straight into the session's own
    buffer, protected there by libsrtp, and returned as a view of that buffer (valid until
    the next call): no joined packet, no copy out. None if pylibsrtp's internals moved."""
    try:
        from pylibsrtp._binding import ffi, lib

        srtp = session._srtp[0]
    except (ImportError, AttributeError):
        return None
    # Our own buffer, not the session's 1500 bytes: pylibsrtp keeps 144 of those for the
    # trailer, which caps RTP at 1356 bytes, and publishers such as GStreamer (1400-byte
    # payloader MTU) send larger packets, to which forwarding adds header extensions.
    cdata = ffi.new("char[]", MAX_RTP_SIZE + SRTP_MAX_TRAILER_LEN)
    buffer = ffi.buffer(cdata)
    size = MAX_RTP_SIZE
    view = memoryview(buffer)
    length = ffi.new("int *")
    srtp_protect = lib.srtp_protect

    def protect(
        header: bytes | bytearray, payload: bytes, _owner: pylibsrtp.Session = session
    ) -> memoryview:
        # _owner: `srtp` is only valid while the session that owns it lives
        h = len(header)
        n = h + len(payload)
        if n > size:
            raise ValueError("packet is too long")
        buffer[0:h] = header
        buffer[h:n] = payload
        length[0] = n
        error = srtp_protect(srtp, cdata, length)
        if error:
            raise pylibsrtp.Error(f"srtp_protect failed ({error})")
        return view[: length[0]]

    return protect


def fast_unprotect(session: pylibsrtp.Session) -> Callable[[bytes], bytes]:
    """`session.unprotect` without its per-call allocation and checks; raises
    pylibsrtp.Error the same way. Falls back to `session.unprotect`."""
    try:
        from pylibsrtp._binding import ffi, lib

        cdata, buffer, srtp = session._cdata, session._buffer, session._srtp[0]
    except (ImportError, AttributeError):
        return session.unprotect
    size = len(buffer)
    length = ffi.new("int *")
    srtp_unprotect = lib.srtp_unprotect

    def unprotect(data: bytes, _owner: pylibsrtp.Session = session) -> bytes:
        n = len(data)
        if n > size:
            raise pylibsrtp.Error("packet is too long")
        length[0] = n
        buffer[0:n] = data
        error = srtp_unprotect(srtp, cdata, length)
        if error:
            raise pylibsrtp.Error(f"srtp_unprotect failed ({error})")
        clear: bytes = buffer[0 : length[0]]
        return clear

    return unprotect


def connection_uplink(pc: Any) -> Uplink | None:
    """The transport-cc feedback state of a publisher's peer connection, if negotiated."""
    for transceiver in pc.getTransceivers():
        uplink = getattr(transceiver.receiver, "uplink", None)
        if isinstance(uplink, Uplink):
            return uplink
    return None


def nominated_pair(dtls: RTCDtlsTransport) -> Any | None:
    """aioice's nominated candidate pair under this DTLS transport, if ICE has one."""
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None) or {}
    return nominated.get(1)


class FastIngress:
    """SRTP from the publisher's nominated ICE pair, from the socket callback to the
    Producer in one synchronous call.

    aiortc's ingress puts each datagram on an aioice queue, wakes the DTLS transport's
    task, tries to parse it as STUN first and awaits through five coroutines before a
    receiver sees it. Here the datagram's clear-text header picks the receiver (by SSRC,
    as aiortc's router learnt it), and only then is it unprotected, so anything not ours
    to handle goes down aiortc's path untouched (SRTP keeps its replay state right).
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self._installed_on: Any = None
        dtls.on("statechange", self._on_state)
        self._on_state()  # aiortc starts receivers once DTLS is already up

    @classmethod
    def attach(cls, dtls: RTCDtlsTransport) -> None:
        if getattr(dtls, "_aiosfu_fast_ingress", None) is None:
            dtls._aiosfu_fast_ingress = cls(dtls)

    @property
    def installed(self) -> bool:
        return self._installed_on is not None

    def _on_state(self) -> None:
        if self.dtls._state == DtlsState.CONNECTED and self._installed_on is None:
            self._install()
        elif self.dtls._state != DtlsState.CONNECTED and self._installed_on is not None:
            self._installed_on.__dict__.pop("datagram_received", None)
            self._installed_on = None

    def _install(self) -> None:
        pair = nominated_pair(self.dtls)
        if pair is None:
            return
        protocol = pair.protocol
        remote = tuple(pair.remote_addr)
        fallback = protocol.datagram_received  # the class's, with ice.py's address filter
        unprotect = fast_unprotect(self.dtls._rx_srtp)
        routes = self.dtls._rtp_router.ssrc_table
        from_bytes = int.from_bytes
        transport = protocol.transport
        sock = getattr(transport, "_sock", None)  # the asyncio transport's own socket
        max_size = getattr(transport, "max_size", 256 * 1024)
        arrival = arrival_clock(sock)
        dtls = self.dtls

        def datagram_received(data: bytes, addr: tuple[Any, ...]) -> None:
            # asyncio read this datagram just now, so the socket's timestamp is its own.
            handle(data, addr, arrival())
            if sock is None:
                return
            # A video frame arrives as a burst of packets: take what else is already
            # queued now, instead of one event-loop turn (and epoll_wait) per datagram.
            for _ in range(DRAIN_LIMIT):
                try:
                    data, addr = sock.recvfrom(max_size)
                except OSError:  # drained (or an error asyncio will see on its next read)
                    return
                handle(data, addr, arrival())

        def handle(data: bytes, addr: tuple[Any, ...], arrival_us: int) -> None:
            # RFC 7983: 128-191 is RTP/RTCP; RTCP payload types are 192-223.
            if 127 < data[0] < 192 and len(data) > 12 and not 191 < data[1] < 224:
                receiver = routes.get(from_bytes(data[8:12], "big"))
                if (
                    receiver is not None
                    and receiver.__class__ is ForwardingReceiver
                    and receiver.forward is not None
                    and (addr[0], addr[1]) == remote
                ):
                    try:
                        clear = unprotect(data)
                    except pylibsrtp.Error:
                        return
                    receiver.ingest(clear, arrival_us)
                    return
                # aiortc's path queues it: note its arrival for transport-cc now, from
                # the header SRTP leaves in clear (RFC 3711), if it is the peer's.
                uplink: Uplink | None = getattr(dtls, "_aiosfu_uplink", None)
                if uplink is not None and (addr[0], addr[1]) == remote:
                    sequence = transport_sequence_of(data, uplink.extension_id)
                    if sequence is not None:
                        uplink.record(
                            sequence, from_bytes(data[8:12], "big"), arrival_us, len(data)
                        )
            fallback(data, addr)

        protocol.datagram_received = datagram_received
        self._installed_on = protocol


SIOCGSTAMPNS = 0x8907  # Linux: when the last datagram read from a socket arrived


def arrival_clock(sock: socket.socket | None) -> Callable[[], int]:
    """When the datagram just read from `sock` reached the host (µs on uplink.now_us's
    clock): the kernel's receive timestamp, so time the process waited to be scheduled
    (a busy machine, a long event-loop turn) is not taken for network queueing. Falls
    back to the read time where the kernel keeps no timestamp."""
    monotonic, wall = time.monotonic, time.time

    def read_time() -> int:
        return int(monotonic() * 1_000_000)

    if sock is None:
        return read_time
    fd = sock.fileno()
    stamp = bytearray(16)
    try:
        fcntl.ioctl(fd, SIOCGSTAMPNS, stamp, True)  # the first call turns stamping on
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: on, but nothing read since
            return read_time
    ioctl, unpack_from = fcntl.ioctl, STAMP.unpack_from

    def kernel_time() -> int:
        try:
            ioctl(fd, SIOCGSTAMPNS, stamp, True)
        except OSError:
            return int(monotonic() * 1_000_000)
        seconds: int
        nanoseconds: int
        seconds, nanoseconds = unpack_from(stamp)
        # the stamp is wall-clock time: moved onto the monotonic clock at this instant
        return int((seconds + nanoseconds / 1e9 + monotonic() - wall()) * 1_000_000)

    return kernel_time


def parse_rtp(data: bytes, extensions: HeaderExtensionsMap) -> RtpPacket | None:
    """aiortc's parser, or None for a malformed packet. Besides its ValueError it raises
    struct.error on a header extension of the wrong length (found by fuzzing): from the
    socket callback that would cost a traceback per packet."""
    try:
        return RtpPacket.parse(data, extensions)
    except (ValueError, struct.error):
        return None


class NeverTrack(MediaStreamTrack):
    """A track that never yields a frame, so a sender started on it never encodes."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()


class ForwardingReceiver(RTCRtpReceiver):
    on_rtp: Callable[[RtpPacket], Awaitable[None]]
    on_sender_report: Callable[[int, int, int], None]
    # the synchronous twin of on_rtp (Producer.forward), when there is one
    forward: Callable[[RtpPacket], None] | None
    _rtcp_out: list[Coroutine[Any, Any, None]]
    _rtcp_tasks: set[asyncio.Task[None]]
    _failed: bool
    _rtx_payload_types: set[int]  # is_rtx() per packet costs a string split
    # transport-cc feedback for the whole connection, shared by its receivers
    uplink: Uplink | None
    # loss repair on the publisher's leg
    nacks_sent: int
    nacked_packets: int
    rtx_received: int
    keyframe_requests: int

    @classmethod
    def adopt(
        cls,
        receiver: RTCRtpReceiver,
        on_rtp: Callable[[RtpPacket], Awaitable[None]],
        on_sender_report: Callable[[int, int, int], None],
    ) -> ForwardingReceiver:
        receiver.__class__ = cls
        assert isinstance(receiver, ForwardingReceiver)
        receiver.on_rtp = on_rtp
        receiver.on_sender_report = on_sender_report
        owner = getattr(on_rtp, "__self__", None)
        forward = getattr(owner, "forward", None)
        receiver.forward = forward if callable(forward) else None
        receiver._rtcp_out = []
        receiver._rtcp_tasks = set()
        receiver._rtx_payload_types = set()
        receiver._failed = False
        receiver.uplink = None
        receiver.nacks_sent = receiver.nacked_packets = 0
        receiver.rtx_received = receiver.keyframe_requests = 0
        return receiver

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """aiortc's `receive` minus the decoder thread."""
        if self._RTCRtpReceiver__started:
            return
        codecs: dict[int, RTCRtpCodecParameters] = self._RTCRtpReceiver__codecs
        for codec in parameters.codecs:
            assert codec.payloadType is not None  # negotiated codecs always have one
            codecs[codec.payloadType] = codec
        self._rtx_payload_types = {pt for pt, codec in codecs.items() if is_rtx(codec)}
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._RTCRtpReceiver__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self.transport._register_rtp_receiver(self, parameters)
        # aiortc learns an RTX SSRC from its first packet, on its slow path; the fast
        # ingress routes by SSRC, so tell it now (retransmissions and probes are RTX).
        for encoding in parameters.encodings:
            if encoding.rtx:
                self.transport._rtp_router.ssrc_table.setdefault(encoding.rtx.ssrc, self)
        if uses_transport_cc(parameters):
            self.uplink = self._connection_uplink(parameters)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True
        FastIngress.attach(self.transport)

    def _connection_uplink(self, parameters: RTCRtpReceiveParameters) -> Uplink:
        dtls = self.transport
        uplink: Uplink | None = getattr(dtls, "_aiosfu_uplink", None)
        if uplink is None:
            ssrc = self._RTCRtpReceiver__rtcp_ssrc or random.getrandbits(32)
            extension_id = next(
                e.id for e in parameters.headerExtensions if e.uri == URI_TRANSPORT_CC
            )
            uplink = Uplink(dtls._send_rtp, ssrc, extension_id)
            dtls._aiosfu_uplink = uplink
        return uplink

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's ingress up to (not including) depacketizing, then the Producer.

        Only what the fast ingress does not take comes here (before ICE nominates, an
        SSRC not yet known). Once the fast ingress is on, it has already noted these
        packets' arrival for transport-cc as it read them (`FastIngress._install`):
        the time aiortc's task gets to one is later by however long it queued."""
        ingress = getattr(self.transport, "_aiosfu_fast_ingress", None)
        noted = ingress is not None and ingress.installed
        accepted = self._accept(packet, now_us(), len(packet.payload), record_arrival=not noted)
        while self._rtcp_out:
            await self._rtcp_out.pop(0)
        if accepted is not None:
            await self.on_rtp(accepted)

    def ingest(self, data: bytes, arrival_us: int) -> None:
        """The fast path's entry (FastIngress): a clear RTP datagram read from the socket
        at `arrival_us` (on uplink.now_us's clock), handled at once."""
        packet = parse_rtp(data, self.transport._rtp_header_extensions_map)
        if packet is None:
            return
        try:
            accepted = self._accept(packet, arrival_us, len(data))
            if accepted is not None and self.forward is not None:
                self.forward(accepted)
        except Exception:
            # A bug must not silence the track or flood the log: say it once per track.
            if not self._failed:
                self._failed = True
                log.exception("forward-failed", kind=self.track.kind)
        for coro in self._rtcp_out:
            task = asyncio.ensure_future(coro)
            self._rtcp_tasks.add(task)
            task.add_done_callback(self._rtcp_tasks.discard)
        self._rtcp_out.clear()

    def _accept(
        self, packet: RtpPacket, arrival_us: int, size: int, *, record_arrival: bool = True
    ) -> RtpPacket | None:
        """aiortc's ingress work, synchronously: congestion feedback (transport-cc, or
        REMB for a peer that offered only that), receive statistics, RTX unwrap, NACK
        generation. RTCP it calls for is queued in `_rtcp_out`."""
        if not self._enabled:
            return None
        uplink = self.uplink
        transport_sequence = packet.extensions.transport_sequence_number
        estimator: RemoteBitrateEstimator | None
        if uplink is not None and transport_sequence is not None:
            # The peer runs its own controller on our feedback; a REMB from aiortc's
            # receive-side estimator would only cap it.
            if record_arrival:
                uplink.record(transport_sequence, packet.ssrc, arrival_us, size)
            estimator = None
        else:
            estimator = self._RTCRtpReceiver__remote_bitrate_estimator
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_us // 1000,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc
            if rtcp_ssrc is not None and remb is not None:
                self._rtcp_out.append(
                    self._send_rtcp(
                        RtcpPsfbPacket(
                            fmt=RTCP_PSFB_APP,
                            ssrc=rtcp_ssrc,
                            media_ssrc=0,
                            fci=pack_remb_fci(*remb),
                        )
                    )
                )
        codecs: dict[int, RTCRtpCodecParameters] = self._RTCRtpReceiver__codecs
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return None
        streams: dict[int, StreamStatistics] = self._RTCRtpReceiver__remote_streams
        stream = streams.get(packet.ssrc)
        if stream is None:
            stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if packet.payload_type in self._rtx_payload_types:
            original_ssrc = self._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in codecs:
                return None
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
            self.rtx_received += 1
        nack_generator = self._RTCRtpReceiver__nack_generator
        if nack_generator is not None and nack_generator.add(packet):
            missing = sorted(nack_generator.missing)
            self.nacks_sent += 1
            self.nacked_packets += len(missing)
            self._rtcp_out.append(self._send_rtcp_nack(packet.ssrc, missing))
        return packet

    async def stop(self) -> None:
        if self.uplink is not None:
            self.uplink.close()
        await super().stop()

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        await super()._handle_rtcp_packet(packet)
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.on_sender_report(packet.ssrc, info.ntp_timestamp, info.rtp_timestamp)

    async def request_keyframe(self, ssrc: int) -> None:
        self.keyframe_requests += 1
        await self._send_rtcp_pli(ssrc)

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None:
        self.nacks_sent += 1
        self.nacked_packets += len(sequence_numbers)
        await self._send_rtcp_nack(ssrc, sequence_numbers)

    def repair_stats(self) -> dict[str, int]:
        """Loss repair on the publisher's leg: NACKs we sent, RTX that came back, PLIs."""
        return {
            "nacksSent": self.nacks_sent,
            "nackedPackets": self.nacked_packets,
            "rtxReceived": self.rtx_received,
            "plisSent": self.keyframe_requests,
        }

    @property
    def decoding(self) -> bool:
        return self._RTCRtpReceiver__decoder_thread is not None


class DownlinkFeedback(Protocol):
    """What a subscriber says about its downlink (sfu/downstream.py's Downstream)."""

    def on_transport_feedback(self, feedback: TransportFeedback) -> None: ...

    def on_receiver_report(self, fraction_lost: int) -> None: ...

    def on_remb(self, bitrate: int) -> None: ...


def read_transport_feedback(dtls: RTCDtlsTransport, downstream: DownlinkFeedback) -> None:
    """Take transport-cc feedback out of a subscriber's RTCP before aiortc parses it.

    aiortc's parser reads every RTPFB format as a generic NACK: a transport-cc packet
    would come out as bogus lost sequence numbers, or fail the whole compound datagram
    (and the receiver reports and NACKs in it) on its padded length."""
    if getattr(dtls, "_aiosfu_downstream", None) is not None:
        return
    dtls._aiosfu_downstream = downstream
    handle_rtcp_data = dtls._handle_rtcp_data

    async def handle(data: bytes) -> None:
        if RTCP_RTPFB in data[1::4]:  # cheap pre-check: some packet type byte may be RTPFB
            try:
                feedbacks, data = split_compound(data)
            except ValueError:
                return
            for feedback in feedbacks:
                downstream.on_transport_feedback(feedback)
            if not data:
                return
        await handle_rtcp_data(data)

    dtls._handle_rtcp_data = handle  # type: ignore[method-assign]


class ForwardingSender(RTCRtpSender):
    """Sends what a Consumer writes; aiortc's own RTP loop idles on a NeverTrack."""

    on_negotiated: Callable[[OutputParams], Awaitable[None]]
    on_nack: Callable[[list[int]], Awaitable[None]]
    on_keyframe_request: Callable[[], Awaitable[None]]
    # send(header, payload) to the subscriber, bound once the transport is up
    _egress: tuple[Send, RTCDtlsTransport] | None
    # the subscriber connection's downlink, told what its RTCP says
    downstream: DownlinkFeedback | None

    @classmethod
    def adopt(
        cls, sender: RTCRtpSender, downstream: DownlinkFeedback | None = None
    ) -> ForwardingSender:
        sender.__class__ = cls
        assert isinstance(sender, ForwardingSender)
        sender.has_sender_clock = False
        sender._egress = None
        sender.downstream = downstream
        return sender

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self.downstream is not None and uses_transport_cc(parameters):
            read_transport_feedback(self.transport, self.downstream)
        await super().send(parameters)
        codec = parameters.codecs[0]
        assert codec.payloadType is not None  # negotiated codecs always have one
        rtx_payload_type = next(
            (
                c.payloadType
                for c in parameters.codecs
                if is_rtx(c) and c.parameters.get("apt") == codec.payloadType
            ),
            None,
        )
        params = OutputParams(
            ssrc=self._ssrc,
            payload_type=codec.payloadType,
            clock_rate=codec.clockRate,
            rtx_ssrc=self._rtx_ssrc if rtx_payload_type is not None else None,
            rtx_payload_type=rtx_payload_type,
            mid=parameters.muxId,
            extension_ids={ext.uri: ext.id for ext in parameters.headerExtensions},
        )
        await self.on_negotiated(params)

    def write_rtp(self, data: bytes, payload_size: int, timestamp: int) -> None:
        """Protect and send now: straight to the nominated pair's socket transport, which
        is all aiortc's `_send_rtp` ends in after four awaits."""
        self.write_rtp_parts(b"", data, payload_size, timestamp)

    def write_rtp_parts(
        self,
        header: bytes | bytearray,
        payload: bytes,
        payload_size: int,
        timestamp: int,
        count: bool = True,
    ) -> None:
        """`write_rtp(header + payload, ...)`, with header and payload copied straight
        into the SRTP buffer: the forwarder's per-subscriber call."""
        egress = self._egress
        if egress is None or egress[1]._state is not CONNECTED:
            egress = self._egress = self._open_egress(self.transport)
        egress[0](header, payload)
        if not count:  # a retransmission: Sender Reports count each packet once
            return
        self._RTCRtpSender__packet_count += 1
        self._RTCRtpSender__octet_count += payload_size
        if not self.has_sender_clock:
            # Until the publisher's first SR arrives, pair arrival time with the timestamp.
            self._RTCRtpSender__ntp_timestamp = current_ntp_time()
            self._RTCRtpSender__rtp_timestamp = timestamp

    @staticmethod
    def _open_egress(dtls: RTCDtlsTransport) -> tuple[Send, RTCDtlsTransport]:
        """send(header, payload): protect + sendto on the nominated pair's socket, bound
        once per connection (kept with the transport whose state says it still holds)."""
        if dtls._state is not CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        pair = nominated_pair(dtls)
        transport = pair.protocol.transport if pair is not None else None
        if pair is None or transport is None:
            raise ConnectionError("Cannot send encrypted RTP, no nominated ICE pair")
        remote = pair.remote_addr
        protect = fast_protect_parts(dtls._tx_srtp)
        sock = getattr(transport, "_sock", None)  # the asyncio transport's own socket
        if protect is None or sock is None:
            session, transport_sendto = dtls._tx_srtp, transport.sendto

            def send(header: bytes | bytearray, payload: bytes) -> None:
                with contextlib.suppress(ValueError):  # too long for pylibsrtp's buffer
                    transport_sendto(session.protect(bytes(header) + payload), remote)

            return send, dtls
        sock_sendto = sock.sendto

        def send_direct(header: bytes | bytearray, payload: bytes) -> None:
            # Safe to bypass asyncio's datagram transport: UDP needs no ordering with
            # what it may have buffered, and a full socket buffer means a drop either way.
            try:
                sock_sendto(protect(header, payload), remote)
            except ValueError:
                pass  # larger than one UDP datagram: no peer could take it
            except BlockingIOError:
                pass  # dropped as on a congested link; NACK/PLI repair it
            except OSError as exc:  # the socket is closed: the connection is going away
                raise ConnectionError(str(exc)) from exc

        return send_direct, dtls

    async def resend(self, data: bytes) -> None:
        """A retransmission goes out the way forwarded packets do (aiortc's `_send_rtp`
        would refuse a packet above 1356 bytes, and its error would end the transport)."""
        self.write_rtp_parts(b"", data, 0, 0, count=False)

    def set_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.has_sender_clock = True
        self._RTCRtpSender__ntp_timestamp = ntp_timestamp
        self._RTCRtpSender__rtp_timestamp = rtp_timestamp

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            await self.on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_FIR, RTCP_PSFB_PLI):
            await self.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            if self.downstream is not None:
                try:
                    bitrate, _ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                self.downstream.on_remb(bitrate)
        else:
            if self.downstream is not None and isinstance(packet, RtcpRrPacket):
                for report in packet.reports:
                    if report.ssrc == self._ssrc:
                        self.downstream.on_receiver_report(report.fraction_lost)
            await super()._handle_rtcp_packet(packet)


def answer_as_dtls_server(pc: RTCPeerConnection, offer: SessionDescription) -> None:
    """Be the DTLS server (`a=setup:passive`) towards an offer of `actpass`.

    aiortc always answers `actpass` with `active`, and as DTLS client it offers only
    ECDHE-ECDSA cipher suites, so a peer with an RSA certificate (GStreamer's webrtcbin,
    for one) fails the handshake with "no shared cipher". As the server we pick a suite
    from whatever the peer's client offers, as Janus and mediasoup do (RFC 8842 §5.3 lets
    the answerer choose). An offer of `active` or `passive` is honoured as aiortc does.
    Call between setRemoteDescription(offer) and createAnswer().
    """
    actpass = {m.rtp.muxId for m in offer.media if m.dtls is not None and m.dtls.role == "auto"}
    transports: list[RTCDtlsTransport] = [
        t.receiver.transport for t in pc.getTransceivers() if t.mid in actpass
    ]
    sctp = pc.sctp
    if sctp is not None and sctp.mid in actpass:
        transports.append(sctp.transport)
    for dtls in transports:
        if dtls._role == "auto":
            dtls._set_role("server")


def receive_constrained_baseline_first(pc: RTCPeerConnection) -> None:
    """Where a publisher's offer puts H264 Baseline first and also has Constrained
    Baseline in the same packetization mode, answer with Constrained Baseline.

    Chromium offers 42001f before 42e01f for the same encoder; a stream negotiated as
    Constrained Baseline can be forwarded to subscribers offering either (see
    sfu/codec_match.py), one negotiated as Baseline only to those offering Baseline.
    aiortc keeps the offer's order in the transceiver's `_codecs`, which its answer lists
    as is. Call between setRemoteDescription(offer) and createAnswer().
    """
    from aiortc.sdp import H264Profile, parse_h264_profile_level_id

    def h264(codec: RTCRtpCodecParameters) -> tuple[H264Profile, str] | None:
        if codec.mimeType.lower() != "video/h264":
            return None
        try:
            profile = parse_h264_profile_level_id(
                str(codec.parameters.get("profile-level-id", "42e01f"))
            )[0]
        except ValueError:
            return None
        return profile, str(codec.parameters.get("packetization-mode", "0"))

    for transceiver in pc.getTransceivers():
        codecs: list[RTCRtpCodecParameters] = transceiver._codecs
        primary = next((c for c in codecs if not is_rtx(c)), None)
        first = h264(primary) if primary is not None else None
        if first is None or first[0] != H264Profile.PROFILE_BASELINE:
            continue
        better = next(
            (c for c in codecs if h264(c) == (H264Profile.PROFILE_CONSTRAINED_BASELINE, first[1])),
            None,
        )
        if better is None:
            continue
        rtx = [c for c in codecs if is_rtx(c) and c.parameters.get("apt") == better.payloadType]
        transceiver._codecs = [better, *rtx] + [
            c for c in codecs if c is not better and c not in rtx
        ]


# aiortc's own list, then the same suites for servers whose certificate is RSA.
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
_aiortc_ssl_context = RTCCertificate._create_ssl_context


def _ssl_context(self: RTCCertificate, srtp_profiles: list[Any]) -> Any:
    context = _aiortc_ssl_context(self, srtp_profiles)
    context.set_cipher_list(DTLS_CIPHERS)
    return context


def accept_rsa_dtls_servers() -> None:
    """As DTLS client (towards an offer of `setup:passive`), also offer the ECDHE-RSA
    suites, so a peer whose certificate is RSA can be the DTLS server.

    aiortc offers only ECDHE-ECDSA suites, which a server with an RSA certificate cannot
    choose. Our own certificate stays ECDSA, so as DTLS server we still only ever pick
    ECDSA suites. Process-wide and idempotent, like sfu/ice.py's aioice settings.
    """
    RTCCertificate._create_ssl_context = _ssl_context  # type: ignore[method-assign]


# --- the cost of a new peer connection (docs/large-rooms.md, subscribe storms) -------------


class _LazyRemoteBitrateEstimator:
    """aiortc's receive-side REMB estimator, built on its first packet.

    aiortc gives every video receiver one, the receivers of send-only subscriber
    transceivers included, and each builds 1,000 rate buckets (~0.7 ms here): a class of
    300 arriving at once pays 0.2 s of event loop for estimators that never see a packet.
    """

    __slots__ = ("_estimator",)

    def __init__(self) -> None:
        self._estimator: RemoteBitrateEstimator | None = None

    def add(
        self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        if self._estimator is None:
            self._estimator = RemoteBitrateEstimator()
        return self._estimator.add(
            arrival_time_ms=arrival_time_ms,
            abs_send_time=abs_send_time,
            payload_size=payload_size,
            ssrc=ssrc,
        )


# aiortc's certificates are valid for 30 days; a shared one is replaced well before that.
CERTIFICATE_LIFETIME_S = 7 * 24 * 3600


class _SharedCertificate:
    """One DTLS certificate for every peer connection of the process, renewed weekly.

    aiortc generates a key pair and a signed certificate per RTCPeerConnection (~1.2 ms
    here). The certificate only has to match the fingerprint in the SDP it is sent
    with, so one per process is as safe, and it is what Janus and mediasoup do.
    """

    _current: tuple[float, RTCCertificate] | None = None

    @classmethod
    def generateCertificate(cls) -> RTCCertificate:
        now = time.monotonic()
        if cls._current is None or now - cls._current[0] > CERTIFICATE_LIFETIME_S:
            cls._current = (now, RTCCertificate.generateCertificate())
        return cls._current[1]


def cheap_peer_connections() -> None:
    """Make a new peer connection cost what it must: no certificate of its own, no REMB
    estimator until one receives. Process-wide and idempotent."""
    import aiortc.rtcpeerconnection
    import aiortc.rtcrtpreceiver

    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _LazyRemoteBitrateEstimator  # type: ignore[assignment]
    aiortc.rtcpeerconnection.RTCCertificate = _SharedCertificate  # type: ignore[assignment]


# --- host candidates in a fixed UDP port range ------------------------------------------

_aioice_component_candidates = aioice.ice.Connection.get_component_candidates


class _PortCursor:
    """Where the next search of the range starts: just past the last port taken, so ports
    go round the range and a port a closed connection just freed is the last one reused
    (a late datagram for the old connection then finds nobody)."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.next = ports.start

    def order(self) -> list[int]:
        offset = self.next - self.ports.start
        return [*self.ports[offset:], *self.ports[:offset]]


async def _bind_in_range(
    connection: aioice.ice.Connection, address: str, cursor: _PortCursor
) -> aioice.ice.StunProtocol:
    loop = asyncio.get_running_loop()
    for port in cursor.order():
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(connection), local_addr=(address, port)
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        cursor.next = port + 1 if port + 1 < cursor.ports.stop else cursor.ports.start
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        return protocol
    ports = cursor.ports
    raise SfuError(
        ErrorCode.NO_MEDIA_PORT,
        f"every UDP port of the ICE range {ports.start}-{ports.stop - 1} on {address} is in use",
    )


def gather_host_candidates_in(ports: range | None) -> None:
    """Make aioice bind host candidates only on `ports` (None: any ephemeral port, as
    aioice does). Process-wide.

    aioice 0.13 binds each host candidate to port 0 and has no setting for a range, so
    the host part of `Connection.get_component_candidates` is done here, the way aioice
    does it; server-reflexive and relayed candidates are still aioice's own (relayed ones
    are asked for with no host address, which is what aioice does with the relay policy).
    A range with no free port left raises `SfuError(no-media-port)` out of
    `setLocalDescription`, so the peer is refused at once instead of waiting for ICE.
    """
    if ports is None:
        aioice.ice.Connection.get_component_candidates = _aioice_component_candidates  # type: ignore[method-assign]
        return
    cursor = _PortCursor(ports)

    async def get_component_candidates(
        self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5
    ) -> list[aioice.Candidate]:
        protocols: list[aioice.ice.StunProtocol] = []
        try:
            for address in addresses:
                protocols.append(await _bind_in_range(self, address, cursor))
        except BaseException:
            for protocol in protocols:
                protocol.transport.close()
            raise
        for protocol in protocols:
            host, port = protocol.transport.get_extra_info("sockname")[:2]
            protocol.local_candidate = aioice.Candidate(
                foundation=aioice.candidate.candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=aioice.candidate.candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
        self._protocols += protocols
        candidates = [protocol.local_candidate for protocol in protocols]
        reflexive = [
            asyncio.ensure_future(aioice.ice.server_reflexive_candidate(p, self.stun_server))
            for p in protocols
            if self.stun_server and ipaddress.ip_address(p.local_candidate.host).version == 4
        ]
        relayed = await _aioice_component_candidates(self, component, [], timeout)
        if reflexive:
            done, pending = await asyncio.wait(reflexive, timeout=timeout)
            for task in pending:
                task.cancel()
            candidates += [t.result()[0] for t in done if t.exception() is None]
        return candidates + relayed

    aioice.ice.Connection.get_component_candidates = get_component_candidates  # type: ignore[method-assign]
