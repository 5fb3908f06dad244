"""A Producer is one published track on this SFU: it receives the publisher's RTP and
fans each packet out to every Consumer in one pass.

It owns what is shared by all subscribers of the track: the packet cache that answers
NACKs, the keyframe detector, the publisher's Sender Report clock and the rate limit on
keyframe requests sent upstream (many subscribers asking at once cost one PLI).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.codecs import keyframe_detector
from aiosfu.sfu.packet_cache import PacketCache

if TYPE_CHECKING:
    from aiosfu.sfu.consumer import Consumer


class Upstream(Protocol):
    """RTCP towards the publisher."""

    async def request_keyframe(self, ssrc: int) -> None: ...

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None: ...


class PacketSink(Protocol):
    """Anything that wants a track's packets as they arrive (a recorder, a relay).

    Called synchronously on the hot path: a sink queues, it never blocks or awaits.
    """

    def on_rtp(self, packet: RtpPacket, keyframe: bool) -> None: ...

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None: ...


class Producer:
    def __init__(
        self,
        kind: str,
        codec: RTCRtpCodecParameters,
        upstream: Upstream,
        *,
        cache_size: int = 512,
        keyframe_request_interval: float = 0.5,
    ) -> None:
        self.kind = kind
        self.codec = codec
        self.mime_type = codec.mimeType
        self.clock_rate = codec.clockRate
        self.upstream = upstream
        self.consumers: list[Consumer] = []
        self.sinks: list[PacketSink] = []
        self.cache = PacketCache(cache_size)
        self.is_keyframe = keyframe_detector(codec.mimeType)
        self.keyframe_request_interval = keyframe_request_interval
        self.ssrc: int | None = None
        # (ntp, rtp) from the publisher's last Sender Report: the lip-sync anchor.
        self.sender_clock: tuple[int, int] | None = None
        self.closed = False
        self._last_keyframe_request = -1e9
        self.packets_in = 0
        self.bytes_in = 0
        self.keyframes_in = 0
        self.keyframe_requests_sent = 0
        self.keyframe_requests_suppressed = 0
        self.retransmission_requests_sent = 0

    async def on_rtp(self, packet: RtpPacket) -> None:
        payload = packet.payload
        if not payload:
            await self._forward_padding(packet)
            return
        self.ssrc = packet.ssrc
        self.packets_in += 1
        self.bytes_in += len(payload)
        self.cache.put(packet)
        keyframe = self.kind == "video" and self.is_keyframe(payload)
        if keyframe:
            self.keyframes_in += 1
        for sink in self.sinks:
            sink.on_rtp(packet, keyframe)
        if not self.consumers:
            return
        abs_send_time = (current_ntp_time() >> 14) & 0xFFFFFF
        for consumer in self.consumers:
            await consumer.send(packet, keyframe, abs_send_time)

    async def _forward_padding(self, packet: RtpPacket) -> None:
        """Padding-only packets (bandwidth probes) carry a sequence number of the stream:
        forwarding them keeps every subscriber's sequence gap-free, so nobody NACKs them."""
        if packet.ssrc != self.ssrc:
            return
        self.cache.put(packet)
        abs_send_time = (current_ntp_time() >> 14) & 0xFFFFFF
        for consumer in self.consumers:
            await consumer.send(packet, False, abs_send_time)

    def on_sender_report(self, ssrc: int, ntp_timestamp: int, rtp_timestamp: int) -> None:
        if self.ssrc is not None and ssrc != self.ssrc:
            return
        self.sender_clock = (ntp_timestamp, rtp_timestamp)
        for sink in self.sinks:
            sink.on_sender_report(ntp_timestamp, rtp_timestamp)
        for consumer in self.consumers:
            consumer.on_sender_clock(ntp_timestamp, rtp_timestamp)

    async def request_keyframe(self) -> bool:
        """Ask the publisher for a keyframe unless one was asked for very recently."""
        if self.kind != "video" or self.ssrc is None or self.closed:
            return False
        now = time.monotonic()
        if now - self._last_keyframe_request < self.keyframe_request_interval:
            self.keyframe_requests_suppressed += 1
            return False
        self._last_keyframe_request = now
        self.keyframe_requests_sent += 1
        await self.upstream.request_keyframe(self.ssrc)
        return True

    async def request_retransmission(self, sequence_numbers: list[int]) -> None:
        if self.ssrc is None or self.closed or not sequence_numbers:
            return
        self.retransmission_requests_sent += 1
        await self.upstream.request_retransmission(self.ssrc, sequence_numbers)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        if self.sender_clock is not None:
            consumer.on_sender_clock(*self.sender_clock)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def add_sink(self, sink: PacketSink) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: PacketSink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)

    def close(self) -> None:
        self.closed = True
        self.sinks.clear()
        for consumer in list(self.consumers):
            consumer.close()
        self.consumers.clear()

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "codec": self.mime_type,
            "ssrc": self.ssrc,
            "packetsIn": self.packets_in,
            "bytesIn": self.bytes_in,
            "keyframesIn": self.keyframes_in,
            "keyframeRequestsSent": self.keyframe_requests_sent,
            "keyframeRequestsSuppressed": self.keyframe_requests_suppressed,
            "retransmissionRequestsSent": self.retransmission_requests_sent,
            "consumers": len(self.consumers),
        }
