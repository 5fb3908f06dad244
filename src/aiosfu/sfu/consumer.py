"""A Consumer forwards what its sources emit to one subscriber track.

Consumers specialise by how they forward (mediasoup's kinds): a `SimpleConsumer`
forwards one source, whole. A simulcast consumer, which picks among several sources
(one per layer) for the subscriber's downlink, follows; it is a `Consumer` too, and the
Router attaches it to each of its sources the same way.

A SimpleConsumer starts video at a keyframe (asking upstream for one, and again if it
is slow to come), rewrites headers for the subscriber, answers the subscriber's NACKs
from the source's cache, and passes its PLI/FIR upstream through the source's rate
limit. It reads its producer only through the `Source` protocol (sfu/router.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from aiortc.rtp import RtpPacket

from aiosfu.sfu.rewrite import URI_TRANSPORT_CC, OutputParams, RtpRewriter
from aiosfu.sfu.router import Sink, Source

WriteParts = Callable[[bytearray, bytes, int, int], None]
# A packet the subscriber NACKed this many times that neither our cache nor the
# publisher could resend is given up on: a keyframe repairs the picture instead.
NACK_ATTEMPTS = 3
UNREPAIRED_TRACKED = 512
# A subscriber re-NACKs a packet every round trip until it comes; on a congested link
# answering each one floods the link with the same packet. Resend one packet at most
# this often (seconds); libwebrtc's sender holds off for a round trip likewise.
RESEND_GUARD = 0.1
RESENT_TRACKED = 1024


class Sequencer(Protocol):
    """The subscriber connection's transport-wide numbering (sfu/downstream.py)."""

    def next_transport_sequence(self, payload_size: int) -> int: ...

    def allow_retransmission(self, payload_size: int) -> bool:
        """Whether the downlink's retransmission budget has room for this packet."""
        ...


class RtpOutput(Protocol):
    """The subscriber-side sender: writes RTP and keeps its Sender Reports true."""

    def write_rtp(self, data: bytes, payload_size: int, timestamp: int) -> None:
        """Send now, synchronously (raises ConnectionError when the transport is gone)."""

    async def resend(self, data: bytes) -> None: ...

    # Optional: `write_rtp_parts(header, payload, payload_size, timestamp)`, the same as
    # `write_rtp(header + payload, ...)` without building the joined datagram.

    def set_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None: ...


class Consumer(Sink, Protocol):
    """One subscriber track, whatever its kind: a Sink of its sources, driven by the
    subscriber connection's sender (negotiation, NACK, PLI/FIR)."""

    kind: str
    closed: bool

    async def activate(self, params: OutputParams) -> None:
        """The subscriber's transport is up and negotiated: start forwarding."""

    async def on_nack(self, sequence_numbers: list[int]) -> None: ...

    async def on_keyframe_request(self) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, object]: ...


class SimpleConsumer:
    """One source, forwarded whole to one subscriber track (today's only kind)."""

    def __init__(
        self,
        source: Source,
        output: RtpOutput,
        *,
        keyframe_retry_interval: float = 1.0,
        downstream: Sequencer | None = None,
    ) -> None:
        self.source = source
        self.downstream = downstream
        # bound at activation when the subscriber negotiated transport-cc
        self._next_transport_sequence: Callable[[int], int] | None = None
        self.kind = source.kind
        self.output = output
        self.keyframe_retry_interval = keyframe_retry_interval
        self.rewriter: RtpRewriter | None = None
        self.waiting_for_keyframe = self.kind == "video"
        self.closed = False
        self._next_keyframe_request = 0.0
        self.packets_out = 0
        self.bytes_out = 0
        self.packets_skipped = 0
        self.nacks_received = 0
        self.retransmitted = 0
        self.keyframe_requests_received = 0
        self.nacked_packets = 0
        self.keyframe_escalations = 0
        self._unrepaired: dict[int, int] = {}  # original sequence -> NACKs not answered
        self._resent_at: dict[int, float] = {}  # original sequence -> when last resent
        self.resends_suppressed = 0
        self.activated_at: float | None = None
        self.first_packet_at: float | None = None
        # header and payload straight into the sender's SRTP buffer, when it can do that
        self._write_parts: WriteParts | None = getattr(output, "write_rtp_parts", None)

    async def activate(self, params: OutputParams) -> None:
        """The subscriber's transport is up and negotiated: start forwarding."""
        if self.closed or self.rewriter is not None:
            return
        self.rewriter = RtpRewriter(params)
        if self.downstream is not None and URI_TRANSPORT_CC in params.extension_ids:
            self._next_transport_sequence = self.downstream.next_transport_sequence
        self.activated_at = time.monotonic()
        if self.waiting_for_keyframe:
            self._next_keyframe_request = self.activated_at + self.keyframe_retry_interval
            await self.source.request_keyframe()

    def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        """The per-subscriber step of the producer's fan-out: synchronous, no allocation
        beyond the outgoing datagram."""
        rewriter = self.rewriter
        if rewriter is None:
            return
        if self.waiting_for_keyframe:
            if not keyframe:
                self.packets_skipped += 1
                now = time.monotonic()
                if now >= self._next_keyframe_request:
                    self._next_keyframe_request = now + self.keyframe_retry_interval
                    self.source.want_keyframe()
                return
            self.waiting_for_keyframe = False
        if not rewriter.started:
            rewriter.start(packet)
            self.first_packet_at = time.monotonic()
            if self.source.sender_clock is not None:
                self.on_sender_clock(*self.source.sender_clock)
        payload = packet.payload
        size = len(payload)
        self.packets_out += 1
        self.bytes_out += size
        timestamp = (packet.timestamp + rewriter.timestamp_offset) & 0xFFFFFFFF
        sequencer = self._next_transport_sequence
        transport_sequence = None if sequencer is None else sequencer(size)
        header = rewriter.header(packet, abs_send_time, transport_sequence)
        try:
            if header is None:
                self.output.write_rtp(
                    rewriter.rewrite_general(packet, abs_send_time, transport_sequence),
                    size,
                    timestamp,
                )
            elif self._write_parts is not None:
                self._write_parts(header, payload, size, timestamp)
            else:
                self.output.write_rtp(b"".join((header, payload)), size, timestamp)
        except ConnectionError:
            pass  # transport going away; the peer connection's state change cleans up

    async def send(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        """`forward` for callers on the event loop (RTCP it queued is sent before return)."""
        self.forward(packet, keyframe, abs_send_time)
        await self.source.flush_rtcp()

    def on_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Map the publisher's SR clock into this subscriber's timestamp space."""
        if self.rewriter is not None and self.rewriter.started:
            self.output.set_sender_clock(ntp_timestamp, self.rewriter.timestamp(rtp_timestamp))

    async def on_nack(self, sequence_numbers: list[int]) -> None:
        rewriter = self.rewriter
        if rewriter is None or not rewriter.started:
            return
        self.nacks_received += 1
        self.nacked_packets += len(sequence_numbers)
        missing: list[int] = []
        now = time.monotonic()
        resent_at = self._resent_at
        if len(resent_at) > RESENT_TRACKED:
            resent_at.clear()
        downstream = self.downstream
        for sequence_number in sequence_numbers:
            original = rewriter.original_sequence(sequence_number)
            packet = self.source.cache.get(original)
            if packet is None:
                missing.append(original)
                continue
            if now - resent_at.get(original, -1e9) < RESEND_GUARD or (
                downstream is not None and not downstream.allow_retransmission(len(packet.payload))
            ):
                self.resends_suppressed += 1
                continue
            resent_at[original] = now
            self.retransmitted += 1
            sequencer = self._next_transport_sequence
            transport_sequence = None if sequencer is None else sequencer(len(packet.payload))
            try:
                await self.output.resend(rewriter.retransmission(packet, None, transport_sequence))
            except ConnectionError:
                return
        if missing:
            await self.source.request_retransmission(missing)
            if self._given_up(missing):
                self.keyframe_escalations += 1
                await self.source.request_keyframe()

    def _given_up(self, missing: list[int]) -> bool:
        """Count unanswered NACKs per packet; True when one has had its last chance."""
        unrepaired = self._unrepaired
        if len(unrepaired) > UNREPAIRED_TRACKED:
            unrepaired.clear()
        given_up = False
        for sequence_number in missing:
            attempts = unrepaired.get(sequence_number, 0) + 1
            if attempts >= NACK_ATTEMPTS:
                del unrepaired[sequence_number]
                given_up = True
            else:
                unrepaired[sequence_number] = attempts
        return given_up

    async def on_keyframe_request(self) -> None:
        self.keyframe_requests_received += 1
        await self.source.request_keyframe()

    def on_source_closed(self) -> None:
        self.close()

    def close(self) -> None:
        """Forward nothing more (the Router detaches it; this holds until it has)."""
        self.closed = True
        self.rewriter = None

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "packetsOut": self.packets_out,
            "bytesOut": self.bytes_out,
            "packetsSkippedBeforeKeyframe": self.packets_skipped,
            "nacksReceived": self.nacks_received,
            "nackedPackets": self.nacked_packets,
            "retransmitted": self.retransmitted,
            "resendsSuppressed": self.resends_suppressed,
            "keyframeRequestsReceived": self.keyframe_requests_received,
            "keyframeEscalations": self.keyframe_escalations,
            "waitingForKeyframe": self.waiting_for_keyframe,
            "startDelayMs": (
                None
                if self.first_packet_at is None or self.activated_at is None
                else round((self.first_packet_at - self.activated_at) * 1000, 1)
            ),
        }
