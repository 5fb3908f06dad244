"""Every touch of aiortc internals, in one place.

aiortc has no public API to forward RTP without decoding it. These two subclasses are
swapped onto the receivers and senders aiortc creates, so:

- a publisher's `ForwardingReceiver` keeps aiortc's RTCP (receiver reports, NACKs to
  the publisher, REMB, RTX unwrap) but starts no decoder and hands each packet to a
  Producer instead of the jitter buffer;
- a subscriber's `ForwardingSender` keeps aiortc's Sender Reports and RTT but sends
  the bytes a Consumer wrote instead of encoding frames, and routes NACK and PLI/FIR to
  that Consumer.

Both send their RTCP (and the Uplink its transport-cc feedback and REMB) through the
connection's PacketIO once it is connected, aiortc's `_send_rtp` before that.

Both also have a fast path, which is where forwarding spends its time (see
BENCHMARKS.md), through the connection's `PacketIO` (sfu/packet_io.py), which
`PacketIOHook` wires to aiortc's transport: SRTP datagrams from the publisher's
nominated ICE pair are taken straight from the socket callback (no aioice queue, no
task wake-up, no STUN parse attempt), unprotected, and the receiver's ingress and the
Producer's fan-out run synchronously; `ForwardingSender.write_rtp_parts` hands header
and payload to the subscriber connection's PacketIO, which protects them and sends on
the nominated pair's socket. SRTCP from the peer is unprotected there too and handed to
`PacketIOHook.route_rtcp`: transport-cc feedback to the subscriber's Downstream, the
rest to aiortc's RTCP dispatch (`_handle_rtcp_data`), which routes it to receivers and
senders as before. Everything else (DTLS, SCTP, STUN, an SSRC not yet known) still takes
aiortc's own path. The PacketIO itself knows nothing of aiortc: the
hook hands it the SRTP sessions, the socket and aiortc's own datagram handler.

They read name-mangled attributes of aiortc 1.16.0 (pinned exactly in pyproject.toml)
and aioice 0.13.0's nominated pair; `tests/test_aiortc_hooks.py` fails loudly if an
upgrade moves any of them.
"""

from __future__ import annotations

import asyncio
import errno
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
from aiosfu.sfu.packet_io import PacketIO, SendRtp
from aiosfu.sfu.rewrite import URI_TRANSPORT_CC, OutputParams
from aiosfu.sfu.twcc import RTCP_RTPFB, TransportFeedback, split_compound
from aiosfu.sfu.uplink import Uplink, now_us

log = get_logger("aiosfu.sfu.fastpath")

CONNECTED = DtlsState.CONNECTED
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
    "_handle_rtcp_data",
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


def connection_uplink(pc: Any) -> Uplink | None:
    """The transport-cc feedback state of a publisher's peer connection, if negotiated."""
    for transceiver in pc.getTransceivers():
        uplink = getattr(transceiver.receiver, "uplink", None)
        if isinstance(uplink, Uplink):
            return uplink
    return None


def connection_packet_io(pc: Any) -> PacketIO | None:
    """The PacketIO of a peer connection (BUNDLE: one transport), if ours wired one."""
    for transceiver in pc.getTransceivers():
        hook = getattr(transceiver.sender.transport, "_aiosfu_packet_io", None)
        if isinstance(hook, PacketIOHook):
            return hook.io
    return None


def nominated_pair(dtls: RTCDtlsTransport) -> Any | None:
    """aioice's nominated candidate pair under this DTLS transport, if ICE has one."""
    connection = getattr(dtls.transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None) or {}
    return nominated.get(1)


class PacketIOHook:
    """Wires a connection's PacketIO (sfu/packet_io.py) to aiortc's transport: connects
    it to the SRTP sessions and nominated ICE pair when DTLS is up, sets its receive hook
    on that pair's protocol once a receiver or sender of ours is on the connection, and
    takes both away when DTLS leaves the connected state. The peer's clear RTCP comes
    back to `route_rtcp`; ours goes out through `send_rtcp`.

    The receive hook replaces aiortc's ingress, which puts each datagram on an aioice
    queue, wakes the DTLS transport's task, tries to parse it as STUN first and awaits
    through five coroutines before a receiver sees it. The PacketIO hands everything not
    routed to us to the protocol's own `datagram_received` (ice.py's address filter).
    """

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self.io = PacketIO()
        self.receiving = False
        self._installed_on: Any = None
        # the subscriber's downlink, if it sends transport-cc feedback
        self.downstream: DownlinkFeedback | None = None
        self._rtcp_tasks: set[asyncio.Task[None]] = set()
        self.io.rtcp_route = self.route_rtcp
        dtls.on("statechange", self._on_state)

    @classmethod
    def of(cls, dtls: RTCDtlsTransport) -> PacketIOHook:
        hook: PacketIOHook | None = getattr(dtls, "_aiosfu_packet_io", None)
        if hook is None:
            hook = dtls._aiosfu_packet_io = cls(dtls)
        return hook

    @property
    def installed(self) -> bool:
        return self._installed_on is not None

    def receive(self) -> None:
        """A receiver or sender on this connection wants its packets (RTP, RTCP) from
        the socket callback."""
        self.receiving = True
        self._on_state()  # aiortc starts receivers once DTLS is already up

    def open(self) -> PacketIO | None:
        """The PacketIO, connected if DTLS is and ICE has a nominated pair (else None)."""
        if not self.io.connected:
            self._on_state()
        return self.io if self.io.connected else None

    def route_rtcp(self, data: bytes) -> None:
        """The peer's clear compound RTCP, from the socket callback: transport-cc
        feedback to the subscriber's Downstream, the rest to aiortc's RTCP dispatch.

        aiortc's parser reads every RTPFB format as a generic NACK: a transport-cc packet
        would come out as bogus lost sequence numbers, or fail the whole compound datagram
        (and the receiver reports and NACKs in it) on its padded length."""
        downstream = self.downstream
        if downstream is not None and RTCP_RTPFB in data[1::4]:  # some type byte is RTPFB
            try:
                feedbacks, data = split_compound(data)
            except ValueError:
                return
            for feedback in feedbacks:
                downstream.on_transport_feedback(feedback)
            if not data:
                return
        task = asyncio.ensure_future(self.dtls._handle_rtcp_data(data))
        self._rtcp_tasks.add(task)
        task.add_done_callback(self._rtcp_tasks.discard)

    async def send_rtcp(self, data: bytes) -> None:
        """Protect and send a compound RTCP packet: through the PacketIO while it is
        connected, else aiortc's `_send_rtp` (which raises ConnectionError unless DTLS
        is connected)."""
        io = self.open() if self.dtls._state is CONNECTED else None
        if io is None:
            await self.dtls._send_rtp(data)
        else:
            io.send_rtcp(data)

    def _on_state(self) -> None:
        if self.dtls._state == DtlsState.CONNECTED:
            if not self.io.connected:
                self._connect()
            if self.receiving and self.io.connected and self._installed_on is None:
                self._installed_on = self._pair_protocol
                self._installed_on.datagram_received = self.io.datagram_received
        else:
            if self._installed_on is not None:
                self._installed_on.__dict__.pop("datagram_received", None)
                self._installed_on = None
            self.io.disconnect()

    def _connect(self) -> None:
        pair = nominated_pair(self.dtls)
        transport = pair.protocol.transport if pair is not None else None
        if pair is None or transport is None:
            return
        self._pair_protocol = pair.protocol
        self.io.uplink = self.io.uplink or getattr(self.dtls, "_aiosfu_uplink", None)
        self.io.connect(
            rx_srtp=self.dtls._rx_srtp,
            tx_srtp=self.dtls._tx_srtp,
            remote=tuple(pair.remote_addr),
            sock=getattr(transport, "_sock", None),  # the asyncio transport's own socket
            sendto=transport.sendto,
            passthrough=pair.protocol.datagram_received,  # the class's: ice.py's filter
            max_size=getattr(transport, "max_size", 256 * 1024),
        )


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
        hook = PacketIOHook.of(self.transport)
        # Without transport-cc the uplink only carries the subscribers' ceiling into REMB.
        self.uplink = self._connection_uplink(parameters)
        if uses_transport_cc(parameters):
            hook.io.uplink = hook.io.uplink or self.uplink
        if self.forward is not None:
            # what aiortc's router knows is ours; an SSRC it learns later is added on
            # its first packet (`_handle_rtp_packet`)
            routes = hook.io.routes
            for ssrc, receiver in self.transport._rtp_router.ssrc_table.items():
                if receiver is self:
                    routes.setdefault(ssrc, self.ingest)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True
        hook.receive()

    def _connection_uplink(self, parameters: RTCRtpReceiveParameters) -> Uplink:
        dtls = self.transport
        uplink: Uplink | None = getattr(dtls, "_aiosfu_uplink", None)
        if uplink is None:
            ssrc = self._RTCRtpReceiver__rtcp_ssrc or random.getrandbits(32)
            extension_id = next(
                (e.id for e in parameters.headerExtensions if e.uri == URI_TRANSPORT_CC), 0
            )
            uplink = Uplink(PacketIOHook.of(dtls).send_rtcp, ssrc, extension_id)
            dtls._aiosfu_uplink = uplink
        return uplink

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's ingress up to (not including) depacketizing, then the Producer.

        Only what the fast ingress does not take comes here (before ICE nominates, an
        SSRC not yet known). Once the fast ingress is on, it has already noted these
        packets' arrival for transport-cc as it read them (`PacketIO`'s receive hook):
        the time aiortc's task gets to one is later by however long it queued."""
        hook: PacketIOHook | None = getattr(self.transport, "_aiosfu_packet_io", None)
        noted = hook is not None and hook.installed
        if hook is not None and self.forward is not None:
            hook.io.routes.setdefault(packet.ssrc, self.ingest)  # aiortc routed it to us
        accepted = self._accept(packet, now_us(), len(packet.payload), record_arrival=not noted)
        while self._rtcp_out:
            await self._rtcp_out.pop(0)
        if accepted is not None:
            await self.on_rtp(accepted)

    def ingest(self, data: bytes, arrival_us: int) -> None:
        """The fast path's entry (PacketIO's route): a clear RTP datagram read from the socket
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
                if uplink is not None:  # capped by the subscribers' downlinks
                    remb = (uplink.remb_bitrate(remb[0]), remb[1])
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

    async def _send_rtcp(self, packet: AnyRtcpPacket) -> None:
        """aiortc's, through the connection's PacketIO (receiver reports, NACK, PLI, REMB)."""
        try:
            await PacketIOHook.of(self.transport).send_rtcp(bytes(packet))
        except ConnectionError:
            pass

    async def stop(self) -> None:
        if self.uplink is not None:
            self.uplink.close()
        hook: PacketIOHook | None = getattr(self.transport, "_aiosfu_packet_io", None)
        if hook is not None:
            routes = hook.io.routes
            for ssrc in [s for s, route in routes.items() if route == self.ingest]:
                del routes[ssrc]
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
    """Give a subscriber's transport-cc feedback to its Downstream, taken out of its RTCP
    before aiortc parses the rest (`PacketIOHook.route_rtcp`)."""
    hook = PacketIOHook.of(dtls)
    if hook.downstream is None:
        hook.downstream = downstream


class ForwardingSender(RTCRtpSender):
    """Sends what a Consumer writes; aiortc's own RTP loop idles on a NeverTrack."""

    on_negotiated: Callable[[OutputParams], Awaitable[None]]
    on_nack: Callable[[list[int]], Awaitable[None]]
    on_keyframe_request: Callable[[], Awaitable[None]]
    # send(header, payload) to the subscriber, bound once the transport is up
    _egress: tuple[SendRtp, RTCDtlsTransport] | None
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
        PacketIOHook.of(self.transport).receive()  # the subscriber's RTCP
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
    def _open_egress(dtls: RTCDtlsTransport) -> tuple[SendRtp, RTCDtlsTransport]:
        """send(header, payload): the connection's PacketIO, kept with the transport
        whose state says it still holds."""
        if dtls._state is not CONNECTED:
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        io = PacketIOHook.of(dtls).open()
        if io is None:
            raise ConnectionError("Cannot send encrypted RTP, no nominated ICE pair")
        return io.send_rtp, dtls

    async def resend(self, data: bytes) -> None:
        """A retransmission goes out the way forwarded packets do (aiortc's `_send_rtp`
        would refuse a packet above 1356 bytes, and its error would end the transport)."""
        self.write_rtp_parts(b"", data, 0, 0, count=False)

    async def _send_rtcp(self, packets: list[AnyRtcpPacket]) -> None:
        """aiortc's (Sender Reports, BYE), through the connection's PacketIO."""
        try:
            await PacketIOHook.of(self.transport).send_rtcp(b"".join(bytes(p) for p in packets))
        except ConnectionError:
            pass

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
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    for port in cursor.order():
        # Bound here rather than by the loop: uvloop reports a port in use without errno.
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, aioice.turn.UDP_SOCKET_BUFFER_SIZE)
        _, protocol = await loop.create_datagram_endpoint(
            lambda: aioice.ice.StunProtocol(connection), sock=sock
        )
        cursor.next = port + 1 if port + 1 < cursor.ports.stop else cursor.ports.start
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
