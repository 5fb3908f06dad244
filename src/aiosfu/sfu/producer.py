"""A Producer is one published track on this SFU: it receives the publisher's RTP and
emits each packet to every sink the room's Router attached to it, in one pass.

It owns what is shared by all subscribers of the track: the packet cache that answers
NACKs, the keyframe detector, the publisher's Sender Report clock and the rate limit on
keyframe requests sent upstream (many subscribers asking at once cost one PLI). To its
sinks (consumers, recorders) it is a `Source` (sfu/router.py); it knows none of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from time import time as wall_clock
from typing import TYPE_CHECKING, Any, Protocol

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.codecs import keyframe_detector
from aiosfu.sfu.packet_cache import PacketCache

if TYPE_CHECKING:
    from aiosfu.sfu.router import Sink


NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP) to 1970 (Unix)


def abs_send_time_now() -> int:
    """abs-send-time (6.18 fixed-point seconds, 24 bits) from the wall clock, without the
    datetime arithmetic of aiortc's `current_ntp_time` (this runs per inbound packet)."""
    return int((wall_clock() + NTP_EPOCH_OFFSET) * 262144) & 0xFFFFFF


class Upstream(Protocol):
    """RTCP towards the publisher."""

    async def request_keyframe(self, ssrc: int) -> None: ...

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None: ...


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
        # what each packet goes to: the Router's to change (sfu/router.py)
        self.sinks: list[Sink] = []
        self.cache = PacketCache(cache_size)
        self.is_keyframe = keyframe_detector(codec.mimeType)
        self.keyframe_request_interval = keyframe_request_interval
        self.ssrc: int | None = None
        # (ntp, rtp) from the publisher's last Sender Report: the lip-sync anchor.
        self.sender_clock: tuple[int, int] | None = None
        self.closed = False
        self.paused = False  # a room admin muted it: nothing is forwarded or recorded
        self._last_keyframe_request = -1e9
        self.packets_in = 0
        self.bytes_in = 0
        self.keyframes_in = 0
        self.keyframe_requests_sent = 0
        self.keyframe_requests_suppressed = 0
        self.retransmission_requests_sent = 0
        self.packets_in_fast_path = 0
        self._trailing_request: asyncio.TimerHandle | None = None
        self._video = kind == "video"
        self._rtcp: list[Coroutine[Any, Any, None]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def forward(self, packet: RtpPacket) -> None:
        """The hot path: one inbound packet to every sink in one synchronous
        pass, called straight from the socket callback (the connection's PacketIO). RTCP
        it calls for (a keyframe request) goes out right after, as a task."""
        self.packets_in_fast_path += 1
        self._forward(packet)
        if self._rtcp:
            self._send_rtcp_later()

    async def on_rtp(self, packet: RtpPacket) -> None:
        """The same for callers on the event loop: RTCP it calls for is sent before return."""
        self._forward(packet)
        await self.flush_rtcp()

    async def flush_rtcp(self) -> None:
        """Send the RTCP the last forwarding pass queued."""
        while self._rtcp:
            await self._rtcp.pop(0)

    def _forward(self, packet: RtpPacket) -> None:
        if self.paused:
            return
        payload = packet.payload
        if not payload:
            self._forward_padding(packet)
            return
        self.ssrc = packet.ssrc
        self.packets_in += 1
        self.bytes_in += len(payload)
        self.cache.put(packet)
        keyframe = self._video and self.is_keyframe(payload)
        if keyframe:
            self.keyframes_in += 1
        sinks = self.sinks
        if sinks:
            abs_send_time = abs_send_time_now()
            for sink in sinks:
                sink.forward(packet, keyframe, abs_send_time)

    def _forward_padding(self, packet: RtpPacket) -> None:
        """Padding-only packets (bandwidth probes) carry a sequence number of the stream:
        forwarding them keeps every subscriber's sequence gap-free, so nobody NACKs them."""
        if packet.ssrc != self.ssrc:
            return
        self.cache.put(packet)
        abs_send_time = abs_send_time_now()
        for sink in self.sinks:
            sink.forward(packet, False, abs_send_time)

    def _send_rtcp_later(self) -> None:
        for coro in self._rtcp:
            task = asyncio.ensure_future(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._rtcp.clear()

    def on_sender_report(self, ssrc: int, ntp_timestamp: int, rtp_timestamp: int) -> None:
        if self.ssrc is not None and ssrc != self.ssrc:
            return
        self.sender_clock = (ntp_timestamp, rtp_timestamp)
        for sink in self.sinks:
            sink.on_sender_clock(ntp_timestamp, rtp_timestamp)

    def _may_request_keyframe(self, *, trailing: bool = False) -> bool:
        """The rate limit: many subscribers asking at once cost the publisher one PLI
        now and, if more asked meanwhile, one more when the interval ends (a request that
        lands inside the interval is deferred, never lost: that subscriber's decoder is
        waiting for it)."""
        if not self._video or self.ssrc is None or self.closed:
            return False
        now = time.monotonic()
        wait = self._last_keyframe_request + self.keyframe_request_interval - now
        if wait > 0:
            if not trailing:
                self.keyframe_requests_suppressed += 1
            if self._trailing_request is None:
                loop = asyncio.get_running_loop()
                self._trailing_request = loop.call_later(wait, self._send_trailing_request)
            return False
        self._last_keyframe_request = now
        self.keyframe_requests_sent += 1
        return True

    def _send_trailing_request(self) -> None:
        self._trailing_request = None
        if self._may_request_keyframe(trailing=True):
            assert self.ssrc is not None
            self._rtcp.append(self.upstream.request_keyframe(self.ssrc))
            self._send_rtcp_later()

    async def request_keyframe(self) -> bool:
        """Ask the publisher for a keyframe unless one was asked for very recently."""
        if not self._may_request_keyframe():
            return False
        assert self.ssrc is not None
        await self.upstream.request_keyframe(self.ssrc)
        return True

    def want_keyframe(self) -> bool:
        """`request_keyframe` from the synchronous forwarding pass: queued, sent after it."""
        if not self._may_request_keyframe():
            return False
        assert self.ssrc is not None
        self._rtcp.append(self.upstream.request_keyframe(self.ssrc))
        return True

    async def request_retransmission(self, sequence_numbers: list[int]) -> None:
        if self.ssrc is None or self.closed or not sequence_numbers:
            return
        self.retransmission_requests_sent += 1
        await self.upstream.request_retransmission(self.ssrc, sequence_numbers)

    def close(self) -> None:
        """Stop asking the publisher for anything (Router.close_producer ends the sinks)."""
        self.closed = True
        if self._trailing_request is not None:
            self._trailing_request.cancel()
            self._trailing_request = None

    def stats(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "codec": self.mime_type,
            "ssrc": self.ssrc,
            "packetsIn": self.packets_in,
            "packetsInFastPath": self.packets_in_fast_path,
            "bytesIn": self.bytes_in,
            "keyframesIn": self.keyframes_in,
            "keyframeRequestsSent": self.keyframe_requests_sent,
            "keyframeRequestsSuppressed": self.keyframe_requests_suppressed,
            "retransmissionRequestsSent": self.retransmission_requests_sent,
            "sinks": len(self.sinks),
            **getattr(self.upstream, "repair_stats", dict)(),
        }
