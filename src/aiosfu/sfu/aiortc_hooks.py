"""Every touch of aiortc internals, in one place.

aiortc has no public API to forward RTP without decoding it. These two subclasses are
swapped onto the receivers and senders aiortc creates, so:

- a publisher's `ForwardingReceiver` keeps aiortc's RTCP (receiver reports, NACKs to
  the publisher, REMB, RTX unwrap) but starts no decoder and hands each packet to a
  Producer instead of the jitter buffer;
- a subscriber's `ForwardingSender` keeps aiortc's Sender Reports and RTT but sends
  the bytes a Consumer wrote instead of encoding frames, and routes NACK and PLI/FIR to
  that Consumer.

They read name-mangled attributes of aiortc 1.16.0 (pinned exactly in pyproject.toml);
`tests/test_aiortc_hooks.py` fails loudly if an upgrade moves any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.codecs import is_rtx
from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
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
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)

from aiosfu.sfu.rewrite import OutputParams

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
        return receiver

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        """aiortc's `receive` minus the decoder thread."""
        if self._RTCRtpReceiver__started:
            return
        codecs: dict[int, RTCRtpCodecParameters] = self._RTCRtpReceiver__codecs
        for codec in parameters.codecs:
            codecs[codec.payloadType] = codec
        for encoding in parameters.encodings:
            if encoding.rtx:
                self._RTCRtpReceiver__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
        self.transport._register_rtp_receiver(self, parameters)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        """aiortc's ingress up to (not including) depacketizing, then the Producer."""
        if not self._enabled:
            return
        estimator: RemoteBitrateEstimator | None = self._RTCRtpReceiver__remote_bitrate_estimator
        if estimator is not None and packet.extensions.abs_send_time is not None:
            remb = estimator.add(
                abs_send_time=packet.extensions.abs_send_time,
                arrival_time_ms=arrival_time_ms,
                payload_size=len(packet.payload) + packet.padding_size,
                ssrc=packet.ssrc,
            )
            rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc
            if rtcp_ssrc is not None and remb is not None:
                await self._send_rtcp(
                    RtcpPsfbPacket(
                        fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                    )
                )
        codecs: dict[int, RTCRtpCodecParameters] = self._RTCRtpReceiver__codecs
        codec = codecs.get(packet.payload_type)
        if codec is None:
            return
        streams: dict[int, StreamStatistics] = self._RTCRtpReceiver__remote_streams
        stream = streams.get(packet.ssrc)
        if stream is None:
            stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if is_rtx(codec):
            original_ssrc = self._RTCRtpReceiver__rtx_ssrc.get(packet.ssrc)
            apt = codec.parameters.get("apt")
            if original_ssrc is None or len(packet.payload) < 2 or apt not in codecs:
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=original_ssrc)
        nack_generator = self._RTCRtpReceiver__nack_generator
        if nack_generator is not None and nack_generator.add(packet):
            await self._send_rtcp_nack(packet.ssrc, sorted(nack_generator.missing))
        await self.on_rtp(packet)

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        await super()._handle_rtcp_packet(packet)
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self.on_sender_report(packet.ssrc, info.ntp_timestamp, info.rtp_timestamp)

    async def request_keyframe(self, ssrc: int) -> None:
        await self._send_rtcp_pli(ssrc)

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None:
        await self._send_rtcp_nack(ssrc, sequence_numbers)

    @property
    def decoding(self) -> bool:
        return self._RTCRtpReceiver__decoder_thread is not None


class ForwardingSender(RTCRtpSender):
    """Sends what a Consumer writes; aiortc's own RTP loop idles on a NeverTrack."""

    on_negotiated: Callable[[OutputParams], Awaitable[None]]
    on_nack: Callable[[list[int]], Awaitable[None]]
    on_keyframe_request: Callable[[], Awaitable[None]]

    @classmethod
    def adopt(cls, sender: RTCRtpSender) -> ForwardingSender:
        sender.__class__ = cls
        assert isinstance(sender, ForwardingSender)
        sender.has_sender_clock = False
        return sender

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        await super().send(parameters)
        codec = parameters.codecs[0]
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

    async def write_rtp(self, data: bytes, payload_size: int, timestamp: int) -> None:
        await self.transport._send_rtp(data)
        self._RTCRtpSender__packet_count += 1
        self._RTCRtpSender__octet_count += payload_size
        if not self.has_sender_clock:
            # Until the publisher's first SR arrives, pair arrival time with the timestamp.
            self._RTCRtpSender__ntp_timestamp = current_ntp_time()
            self._RTCRtpSender__rtp_timestamp = timestamp

    async def resend(self, data: bytes) -> None:
        await self.transport._send_rtp(data)

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
            pass  # REMB: bandwidth adaptation is not done by this forwarder yet
        else:
            await super()._handle_rtcp_packet(packet)
