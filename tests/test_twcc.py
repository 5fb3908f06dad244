"""Transport-cc feedback: the wire format against published vectors, the receive-side
generator, and the send-side history that turns a subscriber's feedback into results."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiosfu.sfu.twcc import (
    DELTA_TICK_US,
    REFERENCE_TICK_US,
    FeedbackGenerator,
    PacketResult,
    SendHistory,
    TransportFeedback,
    decode,
    encode,
    split_compound,
)


def unpadded_size(packet: bytes) -> int:
    return len(packet) - (packet[-1] if packet[0] & 0x20 else 0)


def quantized(arrival_us: int) -> int:
    return (arrival_us + DELTA_TICK_US // 2) // DELTA_TICK_US * DELTA_TICK_US


# --- pion/rtcp's vectors (transport_layer_cc_test.go), re-expressed in wire units --------
# Deltas are in 250 µs ticks: pion's 37000 µs is 148 ticks, and so on.

PION_ONE_SMALL = bytes.fromhex("afcd0005 fa17fa17 43032fa0 00990001 3de80217 20019401")
PION_RUN_OF_SEVEN = bytes.fromhex(
    "afcd0007 fa17fa17 193dd8bb 00040007 10636e01 20074c24 24100c0c 10000003"
)
# A capture from Chrome: a 2-bit vector (with a large delta) then a run of losses.
PION_CHROME = bytes.fromhex(
    "afcd0007 9b74f61f 9371dcbc 853c0009 63f916b3 d5520030 9baa6aaa 7b010901"
)
PION_ONE_BIT_VECTOR = bytes.fromhex(
    "afcd0006 fa17fa17 193dd8bb 0001000e 10636d00 ba00100c 0c100002"
)
PION_ONE_BIT_VECTOR_12 = bytes.fromhex(
    "afcd0007 fa17fa17 43032fa0 9c14000c 75842000 bec0c13f 3b3f5390 3b000003"
)
PION_EMPTY = bytes.fromhex("8fcd0004 9acb0442 00000000 00000000 00000000")
PION_TRUNCATED_RUN = bytes.fromhex("afcd0005 fa17fa17 43032fa0 00990003 3de80217 20039401")
PION_TRUNCATED_LARGE = bytes.fromhex("afcd0005 fa17fa17 43032fa0 00990002 3de80217 40029401")

L = None  # a lost packet, to keep the vectors readable

PION_DECODED = [
    (PION_ONE_SMALL, TransportFeedback(4195875351, 1124282272, 153, 4057090, 23, [148])),
    (
        PION_RUN_OF_SEVEN,
        TransportFeedback(4195875351, 423483579, 4, 1074030, 1, [76, 36, 36, 16, 12, 12, 16]),
    ),
    (
        PION_CHROME,
        TransportFeedback(
            2608133663, 2473712828, 34108, 6551830, 179, [155, 170, 106, 170, 123, L, 265, L, L]
        ),
    ),
    (
        PION_ONE_BIT_VECTOR,
        TransportFeedback(
            4195875351, 423483579, 1, 1074029, 0, [16, 12, 12, L, 16, L, L, L, L, L, L, L, L, L]
        ),
    ),
    (
        PION_ONE_BIT_VECTOR_12,
        TransportFeedback(
            4195875351, 1124282272, 39956, 7701536, 0, [193, 63, 59, 63, 83, L, 144, 59, L, L, L, L]
        ),
    ),
]


PION_IDS = ["one-small", "run-of-seven", "chrome", "one-bit-vector", "one-bit-vector-12"]


@pytest.mark.parametrize(("wire", "expected"), PION_DECODED, ids=PION_IDS)
def test_decodes_pion_vectors(wire: bytes, expected: TransportFeedback) -> None:
    assert decode(wire) == expected


@pytest.mark.parametrize(
    ("wire", "fb"),
    [(w, f) for w, f in PION_DECODED if w is not PION_CHROME],
    ids=[i for i in PION_IDS if i != "chrome"],
)
def test_encodes_pion_vectors_byte_for_byte(wire: bytes, fb: TransportFeedback) -> None:
    # pion built these with the same chunk choice as libwebrtc's encoder; so do we.
    assert encode(fb) == wire


def test_chrome_capture_round_trips() -> None:
    fb = decode(PION_CHROME)
    assert decode(encode(fb)) == fb


def test_decodes_pion_empty_feedback_as_no_statuses() -> None:
    fb = decode(PION_EMPTY)
    assert fb.sender_ssrc == 2596996162 and fb.deltas == []


@pytest.mark.parametrize("wire", [PION_TRUNCATED_RUN, PION_TRUNCATED_LARGE], ids=["run", "large"])
def test_rejects_pion_truncated_vectors(wire: bytes) -> None:
    with pytest.raises(ValueError, match="ends inside"):
        decode(wire)


def test_arrivals_use_the_pion_microsecond_values() -> None:
    arrivals = list(decode(PION_CHROME).arrivals())
    base = 6551830 * REFERENCE_TICK_US
    assert arrivals[0] == (34108, base + 38750)
    assert arrivals[5] == (34113, None)
    assert arrivals[6] == (34114, base + 38750 + 42500 + 26500 + 42500 + 30750 + 66250)
    assert [seq for seq, _ in arrivals] == list(range(34108, 34117))


# --- hand-built from the draft's chunk examples (§3.1.3, §3.1.4) --------------------------


def test_draft_run_length_example_221_not_received() -> None:
    # "0 00 0000011011101": a run of 221 lost packets; then one received at +1 ms.
    fb = TransportFeedback(1, 2, 1000, 5, 7, [L] * 221 + [4])
    wire = encode(fb)
    assert wire[20:24] == bytes.fromhex("00dd 2001")
    assert wire[24] == 4
    assert decode(wire) == fb


def test_draft_one_bit_vector_example() -> None:
    # "1 0 0 1 1 1 1 1 0 0 0 1 1 1 0 0": 14 one-bit symbols in one chunk.
    received = [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0]
    fb = TransportFeedback(1, 2, 65530, 0, 0, [10 if r else L for r in received])
    wire = encode(fb)
    assert wire[20:22] == bytes.fromhex("9f1c")
    assert decode(wire) == fb


def test_two_bit_vector_carries_large_and_negative_deltas() -> None:
    fb = TransportFeedback(1, 2, 7, 0, 0, [L, 300, 1, -4, L, 2, -32768])
    wire = encode(fb)
    # "1 1 00 10 01 10 00 01 10"
    assert wire[20:22] == bytes.fromhex("c986")
    assert decode(wire) == fb


# --- libwebrtc's cases (transport_feedback_unittest.cc): sizes and round trips ------------
# libwebrtc asserts the size of what it builds for a set of received sequence numbers with
# given receive times; the same inputs must give the same size here.


def feedback_for(received: list[int], times_ticks: list[int]) -> TransportFeedback:
    base = received[0]
    n = ((received[-1] - base) & 0xFFFF) + 1
    deltas: list[int | None] = [None] * n
    reference = times_ticks[0] // 256
    prev = reference * 256
    for seq, ticks in zip(received, times_ticks, strict=True):
        deltas[(seq - base) & 0xFFFF] = ticks - prev
        prev = ticks
    return TransportFeedback(0, 0, base, reference, 0, deltas)


ONE_MS = 4  # ticks


@pytest.mark.parametrize(
    ("received", "default_delta", "size"),
    [
        ([1, 2, 7, 8, 9, 10, 13], ONE_MS, 20 + 2 + 7),  # OneBitVector
        ([1, 2, 7, 8, 9, 10, 13, 14], ONE_MS, 20 + 2 + 8),  # FullOneBitVector
        ([65533, 65534, 65535, 0, 1, 2], ONE_MS, 20 + 2 + 6),  # OneBitVectorWrapReceived
        ([65533, 65534, 1, 2], ONE_MS, 20 + 2 + 4),  # OneBitVectorWrapMissing
        ([1, 2, 6, 7], 256, 20 + 2 + 8),  # TwoBitVector
        ([1, 2, 6, 7, 8], 256, 20 + 4 + 10),  # TwoBitVectorFull
    ],
)
def test_libwebrtc_sizes_for_regular_arrivals(
    received: list[int], default_delta: int, size: int
) -> None:
    # libwebrtc's tester: receive time = sequence number x default delta (unwrapped).
    unwrapped = [s if s >= received[0] else s + 0x10000 for s in received]
    fb = feedback_for(received, [s * default_delta for s in unwrapped])
    wire = encode(fb)
    assert len(wire) == (size + 3) // 4 * 4
    assert decode(wire) == fb


@pytest.mark.parametrize(
    ("received", "times_ms", "size"),
    [
        ([0, (1 << 13) - 1 + 14], [1, 2], 20 + 3 * 2 + 2),  # MaxRle: vector, run 8191, vector
        ([0, 14 * 2 + 1], [1, 2], 20 + 3 * 2 + 2),  # MinRle: vector, run 15, vector
    ],
)
def test_libwebrtc_run_length_limits(received: list[int], times_ms: list[int], size: int) -> None:
    fb = feedback_for(received, [t * ONE_MS for t in times_ms])
    wire = encode(fb)
    assert unpadded_size(wire) == size
    assert decode(wire) == fb


def test_libwebrtc_one_to_two_bit_vector() -> None:
    # One large delta within 7 symbols: a single 2-bit vector.
    fb = feedback_for([0, 6], [0, 256])
    assert unpadded_size(encode(fb)) == 20 + 2 + 1 + 2
    # At the 8th symbol it takes a second chunk.
    fb = feedback_for([0, 7], [0, 256])
    assert unpadded_size(encode(fb)) == 20 + 4 + 1 + 2


def test_libwebrtc_one_to_two_bit_vector_split() -> None:
    # SSSSSSSSLSSSSSSSSSSSSS: three chunks.
    times = [ONE_MS]
    for i in range(1, 22):
        times.append(times[-1] + (256 if i == 8 else ONE_MS))
    fb = feedback_for(list(range(22)), times)
    wire = encode(fb)
    assert unpadded_size(wire) == 20 + 3 * 2 + 21 + 2
    assert decode(wire) == fb


def test_libwebrtc_large_and_negative_deltas() -> None:
    fb = feedback_for([1, 2, 6, 7, 8], [2 * ONE_MS, 1 * ONE_MS, 4 * ONE_MS, 3 * ONE_MS, 268])
    assert fb.deltas == [8, -4, None, None, None, 12, -4, 256]
    wire = encode(fb)
    assert len(wire) == 32
    assert decode(wire) == fb


def test_libwebrtc_delta_limits() -> None:
    encode(TransportFeedback(0, 0, 0, 0, 0, [0, 0x7FFF]))
    encode(TransportFeedback(0, 0, 0, 0, 0, [0, -0x8000]))
    with pytest.raises(ValueError, match="16 bits"):
        encode(TransportFeedback(0, 0, 0, 0, 0, [0, 0x8000]))
    with pytest.raises(ValueError, match="16 bits"):
        encode(TransportFeedback(0, 0, 0, 0, 0, [0, -0x8001]))


def test_libwebrtc_maximum_number_of_negative_deltas() -> None:
    fb = TransportFeedback(0, 0, 0, 1 << 20, 0, [-0x8000] * 400)
    assert decode(encode(fb)) == fb


def test_libwebrtc_padding() -> None:
    wire = encode(TransportFeedback(0, 0, 0, 0, 0, [0]))
    assert len(wire) == 24 and wire[0] & 0x20
    assert wire[23] == 1  # one byte of padding: the count itself
    # Extra padding a sender may add is honoured.
    padded = bytearray(wire[:23]) + bytes(4) + bytes([5])
    padded[3] += 1
    assert decode(bytes(padded)) == decode(wire)
    # Old senders zero-padded without the padding bit.
    unflagged = bytearray(wire)
    unflagged[0] &= ~0x20
    unflagged[23] = 0
    assert decode(bytes(unflagged)) == decode(wire)


def test_reference_time_and_feedback_count_fields() -> None:
    fb = TransportFeedback(0xDEADBEEF, 0x01020304, 0xFFFF, 0xFFFFFF, 0xFF, [1])
    wire = encode(fb)
    assert wire[16:20] == bytes.fromhex("ffffffff")
    assert decode(wire) == fb


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"", "shorter"),
        (bytes.fromhex("4fcd0004") + bytes(16), "version"),
        (bytes.fromhex("8fc90004") + bytes(16), "FMT=15"),
        (bytes.fromhex("81cd0004") + bytes(16), "FMT=15"),
        (bytes.fromhex("8fcd0009") + bytes(16), "truncated"),
        (bytes.fromhex("afcd0004") + bytes(16), "padding"),
        (bytes.fromhex("8fcd0005 00000000 00000000 00000001 00000000 60010000"), "reserved"),
    ],
    ids=["empty", "version", "not-rtpfb", "not-fmt-15", "length", "padding", "symbol-3"],
)
def test_malformed_feedback_is_refused_with_a_reason(wire: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode(wire)


def test_encode_refuses_empty_feedback() -> None:
    with pytest.raises(ValueError, match="at least one"):
        encode(TransportFeedback(0, 0, 0, 0, 0, []))


deltas_strategy = st.lists(
    st.one_of(
        st.none(),
        st.integers(min_value=0, max_value=255),
        st.integers(min_value=-0x8000, max_value=0x7FFF),
    ),
    min_size=1,
    max_size=600,
)


@settings(max_examples=300, deadline=None)
@given(
    deltas=deltas_strategy,
    base=st.integers(0, 0xFFFF),
    ref=st.integers(0, 0xFFFFFF),
    count=st.integers(0, 0xFF),
)
def test_round_trip_of_any_feedback(
    deltas: list[int | None], base: int, ref: int, count: int
) -> None:
    fb = TransportFeedback(0x11223344, 0x55667788, base, ref, count, deltas)
    wire = encode(fb)
    assert len(wire) % 4 == 0
    assert decode(wire) == fb


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_decoding_garbage_only_ever_raises_value_error(data: bytes) -> None:
    wire = bytes([0x8F, 0xCD]) + data
    try:
        decode(wire)
    except ValueError:
        pass


def test_split_compound_takes_out_transport_cc_and_keeps_the_rest() -> None:
    rr = bytes.fromhex("81c90007 00000001 00000002 00000000 00000000 00000000 00000000 00000000")
    remb = bytes.fromhex("8fce0005 00000001 00000000 52454d42 01000fa0 00000002")
    feedbacks, rest = split_compound(rr + PION_CHROME + remb + PION_ONE_SMALL)
    assert feedbacks == [decode(PION_CHROME), decode(PION_ONE_SMALL)]
    assert rest == rr + remb
    assert split_compound(rr) == ([], rr)
    with pytest.raises(ValueError, match="truncated"):
        split_compound(rr[:-4])


# --- FeedbackGenerator ---------------------------------------------------------------------


def decode_all(packets: list[bytes]) -> list[tuple[int, int | None]]:
    out: list[tuple[int, int | None]] = []
    for packet in packets:
        out.extend(decode(packet).arrivals())
    return out


def test_generator_reports_every_packet_with_its_quantized_arrival() -> None:
    gen = FeedbackGenerator(sender_ssrc=1, media_ssrc=2)
    arrivals = {seq: 5_000_000 + seq * 3_333 for seq in range(40)}
    for seq, t in arrivals.items():
        gen.record(seq, t, 1200)
    reported = decode_all(gen.flush())
    assert reported == [(seq, quantized(t)) for seq, t in arrivals.items()]
    assert gen.flush() == []


def test_generator_quantization_does_not_drift() -> None:
    # libwebrtc's aliasing case: arrivals a third of a tick apart, 100 of them.
    gen = FeedbackGenerator(1, 2)
    for i in range(100):
        gen.record(i, 1_000_000 + i * DELTA_TICK_US // 3)
    for i, (_, t) in enumerate(decode_all(gen.flush())):
        assert t is not None
        assert abs(t - (1_000_000 + i * DELTA_TICK_US // 3)) <= DELTA_TICK_US // 2


def test_generator_reports_gaps_as_lost() -> None:
    gen = FeedbackGenerator(1, 2)
    gen.record(1000, 10_000)
    gen.record(1003, 12_000)
    assert [t is not None for _, t in decode_all(gen.flush())] == [True, False, False, True]


def test_generator_handles_reordering_and_duplicates() -> None:
    gen = FeedbackGenerator(1, 2)
    gen.record(10, 1_000)
    gen.record(12, 2_000)
    gen.record(11, 3_000)  # reordered: arrives after 12
    gen.record(12, 9_000)  # duplicate: first arrival counts
    gen.record(13, 4_000)
    assert decode_all(gen.flush()) == [(10, 1_000), (11, 3_000), (12, 2_000), (13, 4_000)]
    assert gen.duplicates == 1


def test_generator_re_reports_a_packet_that_arrives_after_being_reported_lost() -> None:
    gen = FeedbackGenerator(1, 2)
    for seq in (0, 1, 3):
        gen.record(seq, seq * 1000)
    assert [t is None for _, t in decode_all(gen.flush())] == [False, False, True, False]
    gen.record(2, 9_000)
    gen.record(4, 9_500)
    assert decode_all(gen.flush()) == [(2, 9_000), (3, 3_000), (4, 9_500)]


def test_generator_reports_losses_at_the_start_of_a_window() -> None:
    gen = FeedbackGenerator(1, 2)
    gen.record(5, 1_000)
    gen.flush()
    gen.record(8, 2_000)  # 6 and 7 never arrive
    assert decode_all(gen.flush()) == [(6, None), (7, None), (8, 2_000)]


def test_generator_across_sequence_wrap() -> None:
    gen = FeedbackGenerator(1, 2)
    seqs = [*range(65530, 65536), *range(0, 6)]
    for i, seq in enumerate(seqs):
        if seq != 65535:
            gen.record(seq, 100_000 + i * 1000)
    packets = gen.flush()
    assert len(packets) == 1
    fb = decode(packets[0])
    assert fb.base_seq == 65530 and len(fb.deltas) == 12
    assert [s for s, _ in fb.arrivals()] == seqs
    assert fb.deltas[5] is None


def test_generator_splits_many_packets_and_counts_feedback() -> None:
    gen = FeedbackGenerator(1, 2)
    for seq in range(1000):
        gen.record(seq, seq * 1_000)
    packets = gen.flush()
    assert len(packets) == 4
    assert all(len(p) <= 1200 for p in packets)
    assert [decode(p).fb_count for p in packets] == [0, 1, 2, 3]
    assert decode_all(packets) == [(seq, seq * 1_000) for seq in range(1000)]
    gen.record(1000, 1_000_000)
    assert decode(gen.flush()[0]).fb_count == 4


def test_generator_keeps_packets_small_under_scattered_loss() -> None:
    # One packet in 15 arrives, each with a large delta: the worst case for chunk count.
    gen = FeedbackGenerator(1, 2, size=8192)
    for k in range(300):
        gen.record(k * 15, k * 100_000)
    packets = gen.flush()
    assert len(packets) > 1
    assert all(len(p) <= 1200 for p in packets)
    reported = decode_all(packets)
    assert [s for s, t in reported if t is not None] == [k * 15 for k in range(300)]
    assert len(reported) == 299 * 15 + 1


def test_generator_splits_when_a_delta_does_not_fit_16_bits() -> None:
    gen = FeedbackGenerator(1, 2)
    gen.record(0, 0)
    gen.record(1, 10_000_000)  # 10 s later: beyond the 8.19 s a delta can say
    packets = gen.flush()
    assert len(packets) == 2
    assert decode_all(packets) == [(0, 0), (1, 10_000_000)]


def test_generator_cadence_follows_the_incoming_rate() -> None:
    gen = FeedbackGenerator(1, 2)
    assert gen.poll(0) == []  # starts the clock
    t = 0
    seq = 0
    sent: list[bytes] = []
    # 1.2 Mbit/s: 100 packets of 1500 bytes a second, for 2 s, polled every 10 ms.
    while t < 2_000_000:
        t += 10_000
        gen.record(seq, t, 1500)
        seq += 1
        sent.extend(gen.poll(t))
    assert gen.interval_us == 50_000
    assert 35 <= len(sent) <= 41
    # 24 kbit/s: 5% of it is less than one report per 250 ms, so the ceiling.
    for _ in range(200):
        t += 100_000
        gen.record(seq, t, 300)
        seq += 1
        gen.poll(t)
    assert gen.interval_us == 250_000
    assert gen.poll(t + 1000) == []


def test_generator_with_fixed_interval() -> None:
    gen = FeedbackGenerator(1, 2, interval_us=100_000)
    gen.poll(0)
    gen.record(0, 10)
    assert gen.poll(99_999) == []
    assert len(gen.poll(100_000)) == 1
    assert gen.poll(200_000) == []  # nothing new to report


def test_generator_drops_packets_older_than_its_ring() -> None:
    gen = FeedbackGenerator(1, 2, size=64)
    for seq in range(200):
        gen.record(seq, seq)
    gen.flush()
    gen.record(100, 5)
    assert gen.too_late == 1
    assert gen.pending == 0


# --- SendHistory, and both ends together ----------------------------------------------------


def test_history_matches_feedback_to_what_was_sent() -> None:
    history = SendHistory()
    for seq in range(5):
        history.on_sent(seq, 1_000 * seq, 100 + seq)
    fb = TransportFeedback(1, 2, 0, 10, 0, [4, 4, None, 8, 4])
    base = 10 * REFERENCE_TICK_US
    assert history.on_feedback(fb) == [
        PacketResult(0, 0, 100, base + 1_000),
        PacketResult(1, 1_000, 101, base + 2_000),
        PacketResult(2, 2_000, 102, None),
        PacketResult(3, 3_000, 103, base + 4_000),
        PacketResult(4, 4_000, 104, base + 5_000),
    ]
    # Reported again (a late re-report): only the now-received packet is news.
    fb2 = TransportFeedback(1, 2, 2, 10, 1, [20, 1, 1])
    assert history.on_feedback(fb2) == [PacketResult(2, 2_000, 102, base + 5_000)]
    assert history.on_feedback(fb2) == []


def test_history_allocates_sequence_numbers_across_the_wrap() -> None:
    history = SendHistory()
    seqs = [history.send(i * 1000, 100) for i in range(70_000)]
    assert seqs[:3] == [0, 1, 2] and seqs[65535] == 65535 and seqs[65536] == 0
    fb = TransportFeedback(1, 2, 65534, 0, 0, [4, 4, 4, 4])
    assert [(r.seq, r.send_us) for r in history.on_feedback(fb)] == [
        (65534, 65534 * 1000),
        (65535, 65535 * 1000),
        (0, 65536 * 1000),
        (1, 65537 * 1000),
    ]


def test_history_counts_statuses_it_does_not_know() -> None:
    history = SendHistory(size=16)
    for seq in range(100):
        history.on_sent(seq, seq, 1)
    results = history.on_feedback(TransportFeedback(1, 2, 80, 0, 0, [1] * 20))
    assert [r.seq for r in results] == list(range(84, 100))
    assert history.unknown == 4


def test_history_unwraps_the_reference_time() -> None:
    history = SendHistory()
    history.on_sent(0, 0, 1)
    history.on_sent(1, 0, 1)
    (first,) = history.on_feedback(TransportFeedback(1, 2, 0, 0xFFFFFF, 0, [0]))
    (second,) = history.on_feedback(TransportFeedback(1, 2, 1, 0, 1, [0]))
    assert first.arrival_us is not None and second.arrival_us is not None
    assert second.arrival_us - first.arrival_us == REFERENCE_TICK_US


def test_history_across_sequence_wrap() -> None:
    history = SendHistory()
    for i in range(10):
        history.on_sent((65530 + i) & 0xFFFF, i, 1)
    results = history.on_feedback(TransportFeedback(1, 2, 65530, 0, 0, [1] * 10))
    assert [r.send_us for r in results] == list(range(10))
    assert [r.seq for r in results] == [*range(65530, 65536), *range(0, 4)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), start=st.integers(0, 0xFFFF))
def test_generator_to_history_end_to_end(seed: int, start: int) -> None:
    """Random loss, jitter, reordering and duplicates across the wrap: the sender learns
    each packet that arrived as received at its quantized arrival (one clock offset for
    all), and each lost one as lost, except losses before the first arrival or after the
    last (nothing shows them to the receiver)."""
    rng = random.Random(seed)
    gen = FeedbackGenerator(1, 2)
    history = SendHistory()
    events: list[tuple[int, int]] = []  # (arrival, index)
    send = 1_000_000
    for i in range(1500):
        send += rng.randint(0, 3_000)
        history.on_sent((start + i) & 0xFFFF, send, 1000)
        if rng.random() < 0.05:
            continue
        arrival = send + 20_000 + rng.randint(0, 15_000)  # enough jitter to reorder
        events.append((arrival, i))
        if rng.random() < 0.01:
            events.append((arrival + rng.randint(1, 5_000), i))  # a duplicate
    events.sort()
    first_arrival: dict[int, int] = {}
    learned: dict[int, PacketResult] = {}

    def learn(packets: list[bytes]) -> None:
        for packet in packets:
            for result in history.on_feedback(decode(packet)):
                index = (result.seq - start) & 0xFFFF
                if index in learned:  # only a loss may be revised, and only to received
                    assert learned[index].arrival_us is None
                    assert result.arrival_us is not None
                learned[index] = result

    gen.poll(events[0][0])
    for arrival, i in events:
        first_arrival.setdefault(i, arrival)
        gen.record((start + i) & 0xFFFF, arrival, 1000)
        learn(gen.poll(arrival))
    learn(gen.flush())

    first_received, last_received = min(first_arrival), max(first_arrival)
    offset = None
    for i in range(1500):
        if i in first_arrival:
            got = learned[i].arrival_us
            assert got is not None
            if offset is None:
                offset = got - quantized(first_arrival[i])
            assert got - quantized(first_arrival[i]) == offset
        elif first_received < i < last_received:
            assert learned[i].arrival_us is None
        else:
            assert i not in learned


def test_generator_packet_reordered_before_the_first_one_across_the_wrap() -> None:
    gen = FeedbackGenerator(1, 2)
    gen.record(1, 5_000)
    gen.record(65535, 6_000)  # sent before 1, arrived after it
    assert decode_all(gen.flush()) == [(65535, 6_000), (0, None), (1, 5_000)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), max_size=5))
def test_split_compound_of_garbage_only_ever_raises_value_error(chunks: list[bytes]) -> None:
    # RTCP-looking framing (version 2, a length that may or may not fit) around noise.
    data = b"".join(
        bytes([0x8F, 0xCD if i % 2 else 0xC9, 0, len(c) // 4]) + c for i, c in enumerate(chunks)
    )
    try:
        split_compound(data)
    except ValueError:
        pass
