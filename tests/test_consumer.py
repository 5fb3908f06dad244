"""Producer → Router → SimpleConsumer forwarding with hand-written fakes for both ends
(no WebRTC)."""

from __future__ import annotations

import struct
import weakref
from dataclasses import dataclass, field

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.consumer import NACK_ATTEMPTS, RESEND_GUARD, SimpleConsumer
from aiosfu.sfu.producer import Producer
from aiosfu.sfu.rewrite import OutputParams
from aiosfu.sfu.router import Router

PUB_SSRC = 0xAAAA0001
SUB_SSRC = 0xBBBB0001
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)

KEY = b"\x10\x50\x2a\x00\x9d\x01\x2a"  # VP8 descriptor S=1, frame tag P=0
INTER = b"\x10\x31\x2a\x00"  # S=1, P=1
CONT = b"\x00\x11\x22\x33"  # continuation of a frame (S=0)


class Clock:
    """Stands in for the `time` module of producer.py and consumer.py."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("aiosfu.sfu.producer.time", fake)
    monkeypatch.setattr("aiosfu.sfu.consumer.time", fake)
    return fake


@dataclass
class FakeUpstream:
    keyframe_requests: list[int] = field(default_factory=list)
    retransmissions: list[tuple[int, list[int]]] = field(default_factory=list)

    async def request_keyframe(self, ssrc: int) -> None:
        self.keyframe_requests.append(ssrc)

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None:
        self.retransmissions.append((ssrc, list(sequence_numbers)))


@dataclass
class FakeOutput:
    written: list[tuple[bytes, int, int]] = field(default_factory=list)
    resent: list[bytes] = field(default_factory=list)
    clocks: list[tuple[int, int]] = field(default_factory=list)
    fail: bool = False

    def write_rtp(self, data: bytes, payload_size: int, timestamp: int) -> None:
        if self.fail:
            raise ConnectionError("transport closed")
        self.written.append((data, payload_size, timestamp))

    async def resend(self, data: bytes) -> None:
        self.resent.append(data)

    def set_sender_clock(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.clocks.append((ntp_timestamp, rtp_timestamp))

    @property
    def packets(self) -> list[RtpPacket]:
        return [RtpPacket.parse(data) for data, _, _ in self.written]


def rtp(seq: int, payload: bytes, ts: int | None = None, ssrc: int = PUB_SSRC) -> RtpPacket:
    return RtpPacket(
        payload_type=VP8.payloadType,
        sequence_number=seq & 0xFFFF,
        timestamp=(seq * 3000 if ts is None else ts) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
    )


def out_params(**kwargs: object) -> OutputParams:
    values: dict[str, object] = {"ssrc": SUB_SSRC, "payload_type": 100, "clock_rate": 90000}
    values.update(kwargs)
    return OutputParams(**values)  # type: ignore[arg-type]


ROUTERS: weakref.WeakKeyDictionary[Producer, Router] = weakref.WeakKeyDictionary()


def routed(producer: Producer) -> Producer:
    """The producer on a Router of its own, as LocalSfu puts it on its room's."""
    router = ROUTERS[producer] = Router("class")
    router.add_producer(producer)
    return producer


def router_of(producer: Producer) -> Router:
    return ROUTERS[producer]


def consumer_of(producer: Producer, output: FakeOutput, **kwargs: object) -> SimpleConsumer:
    """A consumer of `producer`, attached as LocalSfu.subscribe attaches it."""
    consumer = SimpleConsumer(producer, output, **kwargs)  # type: ignore[arg-type]
    router_of(producer).attach(producer, consumer)
    return consumer


def video_producer(upstream: FakeUpstream, interval: float = 0.5) -> Producer:
    return routed(
        Producer("video", VP8, upstream, cache_size=64, keyframe_request_interval=interval)
    )


async def started_consumer(
    producer: Producer, first_seq: int = 100, **params: object
) -> tuple[SimpleConsumer, FakeOutput]:
    """A consumer that has received keyframe `first_seq` (the producer saw it too)."""
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    await consumer.activate(out_params(**params))
    await producer.on_rtp(rtp(first_seq, KEY))
    assert len(output.written) == 1
    return consumer, output


# --- starting at a keyframe ------------------------------------------------------------


async def test_video_consumer_skips_until_keyframe(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    await consumer.activate(out_params())
    assert consumer.waiting_for_keyframe
    for seq, payload in ((10, INTER), (11, CONT), (12, CONT)):
        await producer.on_rtp(rtp(seq, payload))
    assert output.written == []
    assert consumer.packets_skipped == 3

    for seq, payload in ((13, KEY), (14, CONT), (15, INTER), (16, CONT)):
        await producer.on_rtp(rtp(seq, payload))
    packets = output.packets
    assert [p.payload for p in packets] == [KEY, CONT, INTER, CONT]
    first = packets[0].sequence_number
    assert [p.sequence_number for p in packets] == [(first + i) & 0xFFFF for i in range(4)]
    assert first < 32768
    assert all(p.ssrc == SUB_SSRC and p.payload_type == 100 for p in packets)
    ts = [p.timestamp for p in packets]
    assert [(t - ts[0]) % 2**32 for t in ts] == [0, 3000, 6000, 9000]
    # write_rtp gets the payload size and the rewritten timestamp
    assert [(size, t) for _, size, t in output.written] == [
        (len(KEY), ts[0]),
        (len(CONT), ts[1]),
        (len(INTER), ts[2]),
        (len(CONT), ts[3]),
    ]
    assert not consumer.waiting_for_keyframe
    assert consumer.packets_out == 4


async def test_activation_asks_upstream_for_a_keyframe(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    await producer.on_rtp(rtp(1, INTER))  # the publisher is sending
    consumer = consumer_of(producer, FakeOutput())
    await consumer.activate(out_params())
    assert upstream.keyframe_requests == [PUB_SSRC]
    assert producer.sinks == [consumer]
    await consumer.activate(out_params())  # activating twice changes nothing
    assert producer.sinks == [consumer] and upstream.keyframe_requests == [PUB_SSRC]


async def test_waiting_consumer_asks_again_after_the_retry_interval(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream, interval=0.5)
    await producer.on_rtp(rtp(1, INTER))
    consumer = consumer_of(producer, FakeOutput(), keyframe_retry_interval=1.0)
    await consumer.activate(out_params())
    assert len(upstream.keyframe_requests) == 1
    clock.now += 0.9
    await producer.on_rtp(rtp(2, INTER))
    assert len(upstream.keyframe_requests) == 1
    clock.now += 0.2
    await producer.on_rtp(rtp(3, INTER))
    assert len(upstream.keyframe_requests) == 2
    await producer.on_rtp(rtp(4, KEY))
    clock.now += 5
    await producer.on_rtp(rtp(5, INTER))  # started: no more asking
    assert len(upstream.keyframe_requests) == 2


async def test_keyframe_requests_are_rate_limited(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream, interval=0.5)
    await producer.on_rtp(rtp(1, KEY))
    consumers = [consumer_of(producer, FakeOutput()) for _ in range(10)]
    for consumer in consumers:
        await consumer.activate(out_params())
    for _ in range(3):
        for consumer in consumers:
            await consumer.on_keyframe_request()  # PLI/FIR from every subscriber
        clock.now += 0.1
    assert upstream.keyframe_requests == [PUB_SSRC]
    assert producer.keyframe_requests_sent == 1
    assert producer.keyframe_requests_suppressed == 39
    assert consumers[0].keyframe_requests_received == 3

    clock.now += 0.25  # 0.55 s after the first request
    await consumers[3].on_keyframe_request()
    await consumers[4].on_keyframe_request()
    assert upstream.keyframe_requests == [PUB_SSRC, PUB_SSRC]


async def test_audio_never_requests_keyframes(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = routed(Producer("audio", OPUS, upstream))
    await producer.on_rtp(rtp(1, b"\x10\x00"))
    consumer = consumer_of(producer, FakeOutput())
    await consumer.activate(out_params(payload_type=111, clock_rate=48000))
    await consumer.on_keyframe_request()
    assert upstream.keyframe_requests == []


# --- loss repair ------------------------------------------------------------------


async def test_nack_of_cached_packet_is_answered_with_a_resend(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    consumer, output = await started_consumer(producer, first_seq=200)
    for seq in range(201, 205):
        await producer.on_rtp(rtp(seq, CONT + bytes([seq & 0xFF])))
    sent = output.packets
    wanted = [sent[2].sequence_number, sent[4].sequence_number]
    await consumer.on_nack(wanted)
    assert upstream.retransmissions == []
    again = [RtpPacket.parse(d) for d in output.resent]
    assert [p.sequence_number for p in again] == wanted
    assert [p.payload for p in again] == [sent[2].payload, sent[4].payload]
    assert all(p.ssrc == SUB_SSRC for p in again)
    assert consumer.retransmitted == 2 and consumer.nacks_received == 1


async def test_nack_is_answered_with_rtx_when_negotiated(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    consumer, output = await started_consumer(
        producer, first_seq=65535, rtx_ssrc=0xCCCC, rtx_payload_type=101
    )
    await producer.on_rtp(rtp(0, CONT))  # the publisher wraps
    lost = output.packets[1].sequence_number
    await consumer.on_nack([lost])
    rtx = RtpPacket.parse(output.resent[0])
    assert (rtx.ssrc, rtx.payload_type) == (0xCCCC, 101)
    assert rtx.payload == struct.pack("!H", lost) + CONT


async def test_nack_of_uncached_packet_goes_upstream_as_original_sequence(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    consumer, output = await started_consumer(producer, first_seq=65534)
    await producer.on_rtp(rtp(65535, CONT))
    # publisher packet 0 never arrived; 1 did
    await producer.on_rtp(rtp(1, CONT))
    start = output.packets[0].sequence_number
    assert [p.sequence_number for p in output.packets] == [start, start + 1, start + 3]
    await consumer.on_nack([start + 1, start + 2])
    assert len(output.resent) == 1  # the cached one
    assert RtpPacket.parse(output.resent[0]).sequence_number == start + 1
    assert upstream.retransmissions == [(PUB_SSRC, [0])]


async def test_nack_of_evicted_packet_goes_upstream(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)  # cache of 64
    consumer, output = await started_consumer(producer, first_seq=1000)
    for seq in range(1001, 1100):
        await producer.on_rtp(rtp(seq, CONT))
    first = output.packets[0].sequence_number
    await consumer.on_nack([first])
    assert output.resent == []
    assert upstream.retransmissions == [(PUB_SSRC, [1000])]


async def test_nack_before_start_is_ignored(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    await producer.on_rtp(rtp(1, INTER))
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    await consumer.on_nack([1])  # not activated
    await consumer.activate(out_params())
    await consumer.on_nack([1])  # activated, no keyframe yet
    assert output.resent == [] and upstream.retransmissions == []


# --- lip sync ---------------------------------------------------------------------


async def test_sender_report_reaches_output_in_subscriber_timestamps(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    consumer_a, output_a = await started_consumer(producer, first_seq=10)
    consumer_b, output_b = await started_consumer(producer, first_seq=11)
    assert consumer_a.rewriter is not None and consumer_b.rewriter is not None
    ntp, rtp_ts = 0x1234567890ABCDEF, 0xFFFFFF00
    producer.on_sender_report(PUB_SSRC, ntp, rtp_ts)
    offset_a = consumer_a.rewriter.timestamp_offset
    offset_b = consumer_b.rewriter.timestamp_offset
    assert output_a.clocks == [(ntp, (rtp_ts + offset_a) % 2**32)]
    assert output_b.clocks == [(ntp, (rtp_ts + offset_b) % 2**32)]
    # consistent with the timestamps of the packets it forwarded
    sent = output_a.packets[0]
    assert (sent.timestamp - 10 * 3000) % 2**32 == offset_a
    # a report about another SSRC is not this track's clock
    producer.on_sender_report(0xDEAD, 1, 2)
    assert len(output_a.clocks) == 1


async def test_sender_report_before_start_is_applied_at_start(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    await producer.on_rtp(rtp(1, INTER))
    producer.on_sender_report(PUB_SSRC, 555, 3000)
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    await consumer.activate(out_params())
    assert output.clocks == []  # no timestamp mapping yet
    await producer.on_rtp(rtp(2, KEY))
    assert consumer.rewriter is not None
    assert output.clocks == [(555, consumer.rewriter.timestamp(3000))]
    assert consumer.rewriter.timestamp(3000) == (output.packets[0].timestamp - 3000) % 2**32


# --- audio, closing, padding ---------------------------------------------------------


async def test_audio_consumer_starts_immediately(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = routed(Producer("audio", OPUS, upstream))
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    assert not consumer.waiting_for_keyframe
    await consumer.activate(out_params(payload_type=111, clock_rate=48000))
    for seq in (500, 501, 502):
        await producer.on_rtp(rtp(seq, b"\xfc\xff\xfe", ts=seq * 960))
    packets = output.packets
    assert len(packets) == 3
    start = packets[0].sequence_number
    assert [p.sequence_number for p in packets] == [start, start + 1, start + 2]
    assert all(p.payload_type == 111 for p in packets)
    assert upstream.keyframe_requests == []


async def test_inactive_consumer_receives_nothing(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    output = FakeOutput()
    consumer = consumer_of(producer, output)
    await producer.on_rtp(rtp(1, KEY))
    await consumer.send(rtp(2, KEY), True, 0)
    assert output.written == []


async def test_closed_consumer_receives_nothing(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    consumer, output = await started_consumer(producer)
    _, other_output = await started_consumer(producer, first_seq=101)
    consumer.close()  # still attached (the Router detaches it): it forwards nothing
    assert consumer.closed and consumer in producer.sinks
    await producer.on_rtp(rtp(102, KEY))
    await producer.on_rtp(rtp(103, CONT))
    assert len(output.written) == 2  # what it had before closing (100, 101)
    assert len(other_output.written) == 3
    await consumer.activate(out_params())  # cannot be revived
    await producer.on_rtp(rtp(104, KEY))
    assert len(output.written) == 2
    consumer.close()  # idempotent
    router_of(producer).remove_sink(consumer)
    assert consumer not in producer.sinks


async def test_closing_the_producer_closes_consumers_and_stops_requests(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    consumer, _ = await started_consumer(producer)
    router_of(producer).close_producer(producer)
    assert consumer.closed and producer.sinks == []
    clock.now += 10
    assert await producer.request_keyframe() is False
    await producer.request_retransmission([1])
    assert upstream.keyframe_requests == [] and upstream.retransmissions == []


async def test_write_failure_does_not_break_the_fan_out(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    _, broken = await started_consumer(producer, first_seq=1)
    _, healthy = await started_consumer(producer, first_seq=2)
    broken.fail = True
    await producer.on_rtp(rtp(3, CONT))
    assert len(healthy.written) == 2


async def test_padding_only_packets_keep_the_sequence_gap_free(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream)
    consumer, output = await started_consumer(producer, first_seq=10)
    await producer.on_rtp(rtp(11, b""))  # padding (e.g. a bandwidth probe)
    await producer.on_rtp(rtp(12, INTER))
    seqs = [p.sequence_number for p in output.packets]
    assert seqs == [seqs[0], (seqs[0] + 1) & 0xFFFF, (seqs[0] + 2) & 0xFFFF]
    assert producer.packets_in == 2  # padding is not media
    # a NACK for the padding is answered from the cache, not sent upstream
    await consumer.on_nack([(seqs[0] + 1) & 0xFFFF])
    assert upstream.retransmissions == []
    # padding before any media is not the publisher's stream
    fresh = video_producer(FakeUpstream())
    await fresh.on_rtp(rtp(1, b"", ssrc=0x999))
    assert fresh.ssrc is None and fresh.packets_in == 0


def test_stats_are_plain_values() -> None:
    producer = video_producer(FakeUpstream())
    consumer = consumer_of(producer, FakeOutput())
    assert producer.stats()["codec"] == "video/VP8"
    assert consumer.stats()["waitingForKeyframe"] is True
    assert consumer.stats()["startDelayMs"] is None


@dataclass
class FakeSink:
    packets: list[tuple[int, bool]] = field(default_factory=list)
    reports: list[tuple[int, int]] = field(default_factory=list)

    def on_rtp(self, packet: RtpPacket, keyframe: bool) -> None:
        self.packets.append((packet.sequence_number, keyframe))

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports.append((ntp_timestamp, rtp_timestamp))


async def test_sinks_get_every_media_packet_with_its_keyframe_flag(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    sink = FakeSink()
    track = router_of(producer).recordable(producer)  # what a recording is given
    track.add_sink(sink)
    for seq, payload in ((1, INTER), (2, KEY), (3, b""), (4, CONT)):
        await producer.on_rtp(rtp(seq, payload))  # no consumers needed
    producer.on_sender_report(PUB_SSRC, 77, 88)
    assert sink.packets == [(1, False), (2, True), (4, False)]
    assert sink.reports == [(77, 88)]
    assert track.sender_clock == (77, 88) and track.kind == "video"
    track.remove_sink(sink)
    track.remove_sink(sink)  # idempotent
    await producer.on_rtp(rtp(5, CONT))
    assert len(sink.packets) == 3


async def test_closing_the_producer_drops_its_sinks(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    sink = FakeSink()
    router_of(producer).recordable(producer).add_sink(sink)
    router_of(producer).close_producer(producer)
    await producer.on_rtp(rtp(1, KEY))
    assert sink.packets == []


# --- loss repair under a NACK storm --------------------------------------------------------


async def test_a_packet_nacked_again_within_the_guard_is_resent_once(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    consumer, output = await started_consumer(producer, first_seq=300)
    await producer.on_rtp(rtp(301, CONT))
    wanted = output.packets[1].sequence_number
    for _ in range(5):  # the subscriber re-NACKs every few ms while the link drops
        await consumer.on_nack([wanted])
        clock.now += RESEND_GUARD / 10
    assert len(output.resent) == 1 and consumer.resends_suppressed == 4
    clock.now += RESEND_GUARD
    await consumer.on_nack([wanted])
    assert len(output.resent) == 2


async def test_a_packet_nobody_can_resend_ends_in_a_keyframe_request(clock: Clock) -> None:
    upstream = FakeUpstream()
    producer = video_producer(upstream, interval=0.0)
    consumer, output = await started_consumer(producer, first_seq=400)
    await producer.on_rtp(rtp(402, CONT))  # 401 never reached the SFU
    start = output.packets[0].sequence_number
    requests = len(upstream.keyframe_requests)
    for attempt in range(NACK_ATTEMPTS):
        assert len(upstream.keyframe_requests) == requests, attempt
        await consumer.on_nack([start + 1])
    assert upstream.retransmissions == [(PUB_SSRC, [401])] * NACK_ATTEMPTS
    assert len(upstream.keyframe_requests) == requests + 1
    assert consumer.keyframe_escalations == 1


class BudgetedDownstream:
    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.sequence = 0

    def next_transport_sequence(self, payload_size: int) -> int:
        self.sequence += 1
        return self.sequence

    def allow_retransmission(self, payload_size: int) -> bool:
        self.allowed -= 1
        return self.allowed >= 0


async def test_retransmissions_stay_within_the_downlink_budget(clock: Clock) -> None:
    producer = video_producer(FakeUpstream())
    output = FakeOutput()
    consumer = consumer_of(producer, output, downstream=BudgetedDownstream(allowed=2))
    await consumer.activate(out_params())
    for seq in range(500, 505):
        await producer.on_rtp(rtp(seq, KEY if seq == 500 else CONT))
    await consumer.on_nack([p.sequence_number for p in output.packets])
    assert len(output.resent) == 2 and consumer.resends_suppressed == 3
