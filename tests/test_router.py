"""The Router and the consumer kinds against small hand-written fakes: a real Producer
with fake sinks, and a real SimpleConsumer on a fake source."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.consumer import Consumer, SimpleConsumer
from aiosfu.sfu.packet_cache import PacketCache
from aiosfu.sfu.producer import Producer
from aiosfu.sfu.rewrite import OutputParams
from aiosfu.sfu.router import Router, Sink, Source

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
SSRC = 0xAAAA0001
KEY = b"\x10\x50\x2a\x00\x9d\x01\x2a"  # VP8: start of a keyframe
INTER = b"\x10\x31\x2a\x00"


def rtp(seq: int, payload: bytes) -> RtpPacket:
    return RtpPacket(
        payload_type=96, sequence_number=seq, timestamp=seq * 3000, ssrc=SSRC, payload=payload
    )


@dataclass
class FakeUpstream:
    keyframe_requests: list[int] = field(default_factory=list)

    async def request_keyframe(self, ssrc: int) -> None:
        self.keyframe_requests.append(ssrc)

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None:
        pass


@dataclass(eq=False)
class FakeSink:
    """Any Sink: a consumer kind or a recorder, as the Router sees them."""

    packets: list[tuple[int, bool]] = field(default_factory=list)
    clocks: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False

    def forward(self, packet: RtpPacket, keyframe: bool, abs_send_time: int) -> None:
        self.packets.append((packet.sequence_number, keyframe))

    def on_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.clocks.append((ntp_timestamp, rtp_timestamp))

    def on_source_closed(self) -> None:
        self.closed = True


@dataclass
class FakeRecorder:
    packets: list[int] = field(default_factory=list)
    reports: list[tuple[int, int]] = field(default_factory=list)

    def on_rtp(self, packet: RtpPacket, keyframe: bool) -> None:
        self.packets.append(packet.sequence_number)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports.append((ntp_timestamp, rtp_timestamp))


@dataclass
class FakeSource:
    """Any Source: what a consumer may ask of the producer it forwards."""

    kind: str = "video"
    cache: PacketCache = field(default_factory=lambda: PacketCache(16))
    sender_clock: tuple[int, int] | None = None
    keyframe_requests: int = 0
    wanted: int = 0
    retransmissions: list[list[int]] = field(default_factory=list)

    async def request_keyframe(self) -> bool:
        self.keyframe_requests += 1
        return True

    def want_keyframe(self) -> bool:
        self.wanted += 1
        return True

    async def request_retransmission(self, sequence_numbers: list[int]) -> None:
        self.retransmissions.append(list(sequence_numbers))

    async def flush_rtcp(self) -> None:
        pass


@dataclass
class FakeOutput:
    written: list[bytes] = field(default_factory=list)
    clocks: list[tuple[int, int]] = field(default_factory=list)

    def write_rtp(self, data: bytes, payload_size: int, timestamp: int) -> None:
        self.written.append(bytes(data))

    async def resend(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def set_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.clocks.append((ntp_timestamp, rtp_timestamp))


def room() -> tuple[Router, Producer, FakeUpstream]:
    upstream = FakeUpstream()
    producer = Producer("video", VP8, upstream, keyframe_request_interval=0.0)
    router = Router("class")
    router.add_producer(producer)
    return router, producer, upstream


PARAMS = OutputParams(ssrc=0xBBBB0001, payload_type=100, clock_rate=90000)


# --- the Router ----------------------------------------------------------------------------


async def test_a_producers_packets_reach_every_attached_consumer_and_recorder() -> None:
    router, producer, _ = room()
    first, second, recorder = FakeSink(), FakeSink(), FakeRecorder()
    router.attach(producer, first)
    router.attach(producer, second)
    router.attach(producer, first)  # attaching twice delivers once
    router.recordable(producer).add_sink(recorder)
    await producer.on_rtp(rtp(1, KEY))
    await producer.on_rtp(rtp(2, INTER))
    await producer.on_rtp(rtp(3, b""))  # padding: consumers keep their sequence, recorders skip
    assert first.packets == second.packets == [(1, True), (2, False), (3, False)]
    assert recorder.packets == [1, 2]
    producer.on_sender_report(SSRC, 7, 8)
    assert first.clocks == second.clocks == [(7, 8)] and recorder.reports == [(7, 8)]


async def test_detaching_stops_a_sink_and_only_that_one() -> None:
    router, producer, _ = room()
    kept, gone, recorder = FakeSink(), FakeSink(), FakeRecorder()
    track = router.recordable(producer)
    for sink in (kept, gone):
        router.attach(producer, sink)
    track.add_sink(recorder)
    await producer.on_rtp(rtp(1, KEY))
    router.detach(producer, gone)
    track.remove_sink(recorder)
    await producer.on_rtp(rtp(2, INTER))
    assert kept.packets == [(1, True), (2, False)]
    assert gone.packets == [(1, True)] and recorder.packets == [1]
    assert router.sources_of(gone) == [] and router.sinks_of(producer) == [kept]


async def test_one_sink_on_several_producers_is_removed_from_all() -> None:
    """A simulcast consumer reads one producer per layer: one sink, several sources."""
    router, low, _ = room()
    high = Producer("video", VP8, FakeUpstream())
    router.add_producer(high)
    layered = FakeSink()
    router.attach(low, layered)
    router.attach(high, layered)
    assert router.sources_of(layered) == [low, high]
    await low.on_rtp(rtp(1, KEY))
    await high.on_rtp(rtp(50, KEY))
    router.remove_sink(layered)
    await low.on_rtp(rtp(2, INTER))
    await high.on_rtp(rtp(51, INTER))
    assert layered.packets == [(1, True), (50, True)]
    assert router.empty is False  # the producers are still published


async def test_closing_a_producer_ends_its_consumers_and_empties_the_room() -> None:
    router, producer, upstream = room()
    consumer = SimpleConsumer(producer, FakeOutput())
    other = FakeSink()
    router.attach(producer, consumer)
    router.attach(producer, other)
    await producer.on_rtp(rtp(1, INTER))  # the publisher is sending
    router.close_producer(producer)
    assert consumer.closed and other.closed
    assert producer.sinks == [] and router.sources_of(consumer) == []
    assert router.empty
    await consumer.activate(PARAMS)  # a closed consumer is not revived
    assert upstream.keyframe_requests == []
    with pytest.raises(ValueError):
        router.attach(producer, FakeSink())  # nothing attaches to a closed producer


async def test_keyframe_requests_from_consumers_reach_the_producers_publisher() -> None:
    router, producer, upstream = room()
    await producer.on_rtp(rtp(1, INTER))
    consumer = SimpleConsumer(producer, FakeOutput())
    router.attach(producer, consumer)
    await consumer.activate(PARAMS)  # video starts at a keyframe: one is asked for
    await consumer.on_keyframe_request()  # the subscriber's PLI
    assert upstream.keyframe_requests == [SSRC, SSRC]


# --- the consumer kinds on a fake source ---------------------------------------------------


def test_the_simple_consumer_is_a_consumer_and_a_sink() -> None:
    consumer: Consumer = SimpleConsumer(FakeSource(), FakeOutput())
    sink: Sink = consumer
    source: Source = FakeSource()
    assert sink is consumer and source.kind == "video"


async def test_a_simple_consumer_forwards_nothing_until_negotiated_then_starts_at_a_keyframe() -> (
    None
):
    source, output = FakeSource(), FakeOutput()
    consumer = SimpleConsumer(source, output, keyframe_retry_interval=0.0)
    consumer.forward(rtp(1, KEY), True, 0)  # attached but not negotiated yet
    assert output.written == [] and source.keyframe_requests == 0
    await consumer.activate(PARAMS)
    assert source.keyframe_requests == 1  # asked its source for a start
    consumer.forward(rtp(2, INTER), False, 0)
    assert output.written == [] and source.wanted == 1  # and again while waiting
    consumer.forward(rtp(3, KEY), True, 0)
    consumer.forward(rtp(4, INTER), False, 0)
    sent = [RtpPacket.parse(data) for data in output.written]
    assert [p.payload for p in sent] == [KEY, INTER]
    assert all(p.ssrc == PARAMS.ssrc and p.payload_type == 100 for p in sent)


async def test_a_simple_consumer_reads_the_sender_clock_and_cache_from_its_source() -> None:
    source, output = FakeSource(sender_clock=(1 << 32, 3000)), FakeOutput()
    consumer = SimpleConsumer(source, output)
    await consumer.activate(PARAMS)
    packet = rtp(10, KEY)
    source.cache.put(packet)
    consumer.forward(packet, True, 0)
    assert len(output.clocks) == 1  # the source's clock, in the subscriber's timestamps
    sent = RtpPacket.parse(output.written[0])
    await consumer.on_nack([sent.sequence_number, (sent.sequence_number + 1) & 0xFFFF])
    assert RtpPacket.parse(output.written[1]).payload == KEY  # resent from the source's cache
    assert source.retransmissions == [[11]]  # what it has not, asked of the publisher
