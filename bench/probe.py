"""Subscriber-side measurement: counts RTP as it arrives, before any jitter buffer or
decoder, so a subscriber costs the generator its ingress and a few dict lookups.

A probe replaces one aiortc receiver's `_handle_rtp_packet` (a bench-only touch of an
aiortc internal: no public hook sees packets before the jitter buffer). It tracks loss
by sequence number, the first packet and first keyframe, and per-frame latency against
the publisher's send times on the same `time.perf_counter` clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiortc import RTCPeerConnection
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from aiosfu.sfu.codecs import vp8_is_keyframe

if TYPE_CHECKING:
    from bench.media import PacedTrack

ALIGN_FRAMES = 5
MASK32 = 0xFFFFFFFF


class StreamProbe:
    def __init__(
        self,
        kind: str,
        source: PacedTrack | None,
        rtx_payload_types: set[int],
        started_at: float,
    ) -> None:
        self.kind = kind
        self.source = source
        self.rtx_payload_types = rtx_payload_types
        self.started_at = started_at
        self.first_packet_at: float | None = None
        self.first_keyframe_at: float | None = None
        self.measuring = False
        # counters over the measured window
        self.packets = 0
        self.bytes = 0
        self.frames = 0
        self.rtx = 0
        self.latencies: list[float] = []
        self._window_first: int | None = None
        # extended highest sequence number seen
        self._highest: int | None = None
        self._offset: int | None = None
        self._pending: list[tuple[int, float]] = []

    async def handle(self, packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        now = time.perf_counter()
        if packet.payload_type in self.rtx_payload_types:
            self.rtx += self.measuring
            return
        if self.first_packet_at is None:
            self.first_packet_at = now
        seq = packet.sequence_number
        highest = self._highest
        if highest is None:
            highest = self._highest = seq
        else:
            delta = (seq - highest) & 0xFFFF
            if delta < 0x8000:
                highest = self._highest = highest + delta
        if self.kind == "video":
            if self.first_keyframe_at is None and vp8_is_keyframe(packet.payload):
                self.first_keyframe_at = now
            if packet.marker:
                self._on_frame(packet.timestamp, now)
        if self.measuring:
            if self._window_first is None:
                self._window_first = highest
            self.packets += 1
            self.bytes += len(packet.payload)

    def _on_frame(self, timestamp: int, now: float) -> None:
        if self.measuring:
            self.frames += 1
        source = self.source
        if source is None:
            return
        if self._offset is None:
            self._pending.append((timestamp, now))
            if len(self._pending) >= ALIGN_FRAMES:
                self._align(source.sent_at)
            return
        sent = source.sent_at.get((timestamp - self._offset) & MASK32)
        if sent is not None and self.measuring:
            self.latencies.append(now - sent)

    def _align(self, sent_at: dict[int, float]) -> None:
        """Find the server's timestamp offset: the one under which all of the first few
        received frames are frames the publisher sent (the pts jitter makes it unique)."""
        first_ts, first_at = self._pending[0]
        rest = self._pending[1:]
        for pts, at in reversed(list(sent_at.items())):
            if at > first_at or first_at - at > 5.0:
                continue
            offset = (first_ts - pts) & MASK32
            if all(((ts - offset) & MASK32) in sent_at for ts, _ in rest):
                self._offset = offset
                break
        self._pending.clear()

    def start_window(self) -> None:
        self.measuring = True

    def stop_window(self) -> None:
        self.measuring = False

    @property
    def expected(self) -> int:
        if self._window_first is None or self._highest is None:
            return 0
        return self._highest - self._window_first + 1


def rtx_payload_types(pc: RTCPeerConnection) -> set[int]:
    description = pc.remoteDescription or pc.localDescription
    if description is None:
        return set()
    parsed = SessionDescription.parse(description.sdp)
    return {
        codec.payloadType
        for media in parsed.media
        for codec in media.rtp.codecs
        if codec.mimeType.lower().endswith("/rtx")
    }


def attach_probes(
    pc: RTCPeerConnection, sources: Iterable[PacedTrack], started_at: float
) -> list[StreamProbe]:
    """A probe on every receiver of `pc`, matched by kind to the publisher's tracks."""
    by_kind = {track.kind: track for track in sources}
    rtx = rtx_payload_types(pc)
    probes = []
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        probe = StreamProbe(transceiver.kind, by_kind.get(transceiver.kind), rtx, started_at)
        receiver._handle_rtp_packet = probe.handle  # type: ignore[method-assign]
        probes.append(probe)
    return probes
