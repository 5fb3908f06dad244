"""A Router is one room's media: which sinks each producer's packets go to.

mediasoup's Router and Listener shape. A producer emits every packet to the sinks the
Router attached to it, consumers and recorders alike (`Sink`); a consumer asks its
source for what only the publisher's side has: keyframes, retransmissions, cached
packets, the publisher's clock (`Source`). Neither holds the other's class, so
`producer.py` and `consumer.py` do not import each other, and a consumer kind that
reads several sources (simulcast: one producer per layer) is attached the same way.

The Router alone changes who is attached to whom. The list a producer emits to is the
producer's own (`sinks`, read once per packet on the hot path); the Router is the only
writer of it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.packet_cache import PacketCache


class Sink(Protocol):
    """What a producer emits to. Called synchronously on the hot path, from the socket
    callback: a sink sends or queues, it never blocks or awaits."""

    def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        """One packet of the source (`keyframe`: it starts one); padding-only packets
        (bandwidth probes) come too, with an empty payload."""

    def on_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """The publisher's Sender Report: its NTP time for an RTP timestamp."""

    def on_source_closed(self) -> None:
        """The source is gone (unpublished): nothing more will come."""


class Source(Protocol):
    """What a consumer reads from the producer it forwards."""

    kind: str
    cache: PacketCache  # recent packets, by original sequence number (NACK answers)

    @property
    def sender_clock(self) -> tuple[int, int] | None:
        """(ntp, rtp) of the publisher's last Sender Report, if any."""

    def request_keyframe(self) -> Awaitable[bool]:
        """Ask the publisher for a keyframe, through the source's rate limit."""

    def want_keyframe(self) -> bool:
        """The same from the synchronous forwarding pass: sent right after it."""

    async def request_retransmission(self, sequence_numbers: list[int]) -> None: ...

    async def flush_rtcp(self) -> None:
        """Send the RTCP the last forwarding pass queued."""


class Emitter(Protocol):
    """A producer as the Router sees it."""

    kind: str
    codec: RTCRtpCodecParameters
    sinks: list[Sink]  # the Router's to change

    @property
    def sender_clock(self) -> tuple[int, int] | None: ...

    def request_keyframe(self) -> Awaitable[bool]: ...

    def close(self) -> None: ...


class PacketSink(Protocol):
    """A recorder's side of a track (record/recorder.py's TrackRecorder)."""

    def on_rtp(self, packet: RtpPacket, keyframe: bool) -> None: ...

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None: ...


class RecorderSink:
    """A recorder as a Sink: media packets only (no padding), and the publisher's
    Sender Reports, which the recorder's clock is built from."""

    __slots__ = ("recorder",)

    def __init__(self, recorder: PacketSink) -> None:
        self.recorder = recorder

    def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        if packet.payload:
            self.recorder.on_rtp(packet, keyframe)

    def on_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.recorder.on_sender_report(ntp_timestamp, rtp_timestamp)

    def on_source_closed(self) -> None:
        pass  # the recording manager stops a recording when its publication goes


class RecordedTrack:
    """One producer as a recorder takes it (record/recorder.py's RecordableTrack): its
    recorders are attached through the Router, so the record package needs nothing of
    ours but this shape."""

    def __init__(self, router: Router, producer: Emitter) -> None:
        self.router = router
        self.producer = producer
        self.kind = producer.kind
        self.codec = producer.codec
        self._sinks: dict[int, RecorderSink] = {}  # id(recorder) -> its adapter

    @property
    def sender_clock(self) -> tuple[int, int] | None:
        return self.producer.sender_clock

    def add_sink(self, sink: PacketSink) -> None:
        adapter = self._sinks.setdefault(id(sink), RecorderSink(sink))
        self.router.attach(self.producer, adapter)

    def remove_sink(self, sink: PacketSink) -> None:
        adapter = self._sinks.pop(id(sink), None)
        if adapter is not None:
            self.router.detach(self.producer, adapter)

    def request_keyframe(self) -> Awaitable[bool]:
        return self.producer.request_keyframe()


class Router:
    def __init__(self, rid: str = "") -> None:
        self.rid = rid
        self.producers: list[Emitter] = []
        self._sources: dict[Sink, list[Emitter]] = {}  # sink -> what it is attached to

    @property
    def empty(self) -> bool:
        return not self.producers and not self._sources

    def add_producer(self, producer: Emitter) -> None:
        if producer not in self.producers:
            self.producers.append(producer)

    def attach(self, producer: Emitter, sink: Sink) -> None:
        """From now on `sink` gets every packet `producer` emits."""
        if producer not in self.producers:
            raise ValueError("the producer is not on this router (closed, or never added)")
        if sink in producer.sinks:
            return
        producer.sinks.append(sink)
        self._sources.setdefault(sink, []).append(producer)

    def detach(self, producer: Emitter, sink: Sink) -> None:
        if sink in producer.sinks:
            producer.sinks.remove(sink)
        sources = self._sources.get(sink)
        if sources is not None:
            if producer in sources:
                sources.remove(producer)
            if not sources:
                del self._sources[sink]

    def remove_sink(self, sink: Sink) -> None:
        """Detach `sink` from every producer (a subscription that ends)."""
        for producer in list(self._sources.get(sink, ())):
            self.detach(producer, sink)

    def sources_of(self, sink: Sink) -> list[Emitter]:
        return list(self._sources.get(sink, ()))

    def sinks_of(self, producer: Emitter) -> list[Sink]:
        return list(producer.sinks)

    def close_producer(self, producer: Emitter) -> None:
        """The publication ends: the producer stops, and every sink attached to it is
        detached and told (a consumer closes)."""
        if producer in self.producers:
            self.producers.remove(producer)
        producer.close()
        for sink in list(producer.sinks):
            self.detach(producer, sink)
            sink.on_source_closed()

    def recordable(self, producer: Emitter) -> RecordedTrack:
        return RecordedTrack(self, producer)

    def stats(self) -> dict[str, object]:
        return {"producers": len(self.producers), "sinks": len(self._sources)}
