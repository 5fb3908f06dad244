"""The bandwidth estimators on synthetic links: a sender that follows the estimate, a link
that queues or polices, and the real transport-cc path (generator, wire, history) between.

Times are simulated, so nothing here depends on the machine's speed."""

from __future__ import annotations

import random

import pytest

from aiosfu.sfu.bwe import (
    OveruseDetector,
    RateWindow,
    RembEstimator,
    SendSideBwe,
    TrendlineFilter,
    Usage,
)
from aiosfu.sfu.twcc import PacketResult
from tests.bwe_sim import MS, PACKET, Link, between, loss_fraction, simulate

# --- closed loop on synthetic links -----------------------------------------------------------


@pytest.mark.parametrize("capacity", [800_000, 1_500_000, 3_000_000])
def test_steady_link_converges_near_capacity(capacity: int) -> None:
    link = Link(capacity)
    trace = simulate(60, lambda t: link, initial_bps=300_000)
    mean = trace.mean(40, 60)
    assert 0.75 * capacity <= mean <= 1.1 * capacity, mean


def test_bottleneck_at_600k_is_found_within_seconds_and_lifting_it_recovers() -> None:
    open_link = Link(5_000_000)
    bottleneck = Link(600_000, queue_ms=200)

    def link_at(t: float) -> Link:
        return bottleneck if 30 <= t < 60 else open_link

    trace = simulate(80, link_at, source_bps=2_000_000)
    assert trace.at(29) >= 1_800_000  # the source rate, before the bottleneck
    below = trace.first_below(600_000, after_s=30)
    assert below is not None and below < 3, below
    assert trace.mean(40, 60) <= 620_000
    assert trace.mean(40, 60) >= 400_000
    recovered = trace.first_above(900_000, after_s=60)
    assert recovered is not None and recovered < 10, recovered


def test_policer_at_600k_is_found_and_loss_stays_low() -> None:
    open_link = Link(5_000_000)
    policer = Link(600_000, policer=True)

    def link_at(t: float) -> Link:
        return policer if 30 <= t < 70 else open_link

    trace = simulate(90, link_at, source_bps=2_000_000)
    below = trace.first_below(600_000, after_s=30)
    assert below is not None and below < 5, below
    assert trace.mean(40, 70) <= 620_000
    assert trace.mean(40, 70) >= 450_000
    assert loss_fraction(trace, 40, 70, trace.mean(40, 70)) < 0.02
    recovered = trace.first_above(900_000, after_s=70)
    assert recovered is not None and recovered < 10, recovered


def test_a_sender_below_the_estimate_is_never_held_back() -> None:
    # An SFU forwards what the publisher sends: on an open path the estimate stays ahead
    # of it (1.5x the delivered rate + 10 kbit/s), so a REMB built from it caps nothing.
    link = Link(50_000_000)
    trace = simulate(30, lambda t: link, source_bps=1_000_000)
    assert min(trace.estimate) >= 0.97 * 1_000_000  # the delivered rate's measure, ±2%
    assert 1_450_000 <= trace.mean(20, 30) <= 1_600_000
    assert trace.last_cut_us is None


def test_random_loss_of_5_percent_holds_the_estimate() -> None:
    clean = Link(5_000_000)
    lossy = Link(5_000_000, loss=0.05, rng=random.Random(7))

    def link_at(t: float) -> Link:
        return lossy if t >= 20 else clean

    trace = simulate(60, link_at, source_bps=1_500_000)
    before = trace.mean(15, 20)
    assert before >= 1_400_000
    assert trace.mean(40, 60) >= 0.8 * before
    assert (
        min(e for t, e in zip(trace.t_us, trace.estimate, strict=True) if t > 20e6) >= 0.6 * before
    )


def test_random_loss_of_5_percent_on_a_bottleneck_the_estimate_limits() -> None:
    # Closed loop: the sender follows the estimate into a 1.5 Mbit/s queue, then 5% of
    # packets are lost at random on top.
    clean = Link(1_500_000)
    lossy = Link(1_500_000, loss=0.05, rng=random.Random(11))
    trace = simulate(80, lambda t: lossy if t >= 30 else clean)
    before = trace.mean(20, 30)
    assert before >= 1_100_000
    assert trace.mean(50, 80) >= 0.7 * before


def test_random_loss_does_not_ratchet_the_estimate_down_over_minutes() -> None:
    # Each loss-driven experiment that does not help must be given back: otherwise luck
    # (a clean window, growth, loss again) cuts a few percent each time, for ever.
    lossy = Link(1_500_000, loss=0.05, rng=random.Random(2))
    trace = simulate(240, between(30, 240, lossy, Link(1_500_000)))
    assert trace.mean(210, 240) >= 0.75 * trace.mean(20, 30)


def test_heavy_random_loss_brings_the_estimate_down() -> None:
    # 30% loss is congestion by any reading of GCC: the estimate must yield.
    lossy = Link(5_000_000, loss=0.3, rng=random.Random(3))
    trace = simulate(30, lambda t: lossy, source_bps=2_000_000, initial_bps=2_000_000)
    assert trace.at(10) < 1_000_000


def test_queueing_delay_ramp_triggers_overuse() -> None:
    # 1 Mbit/s sent into 900 kbit/s with a deep buffer: the queue grows 100 ms a second.
    link = Link(900_000, queue_ms=5_000)
    trace = simulate(6, lambda t: link, fixed_rate_bps=1_000_000)
    assert trace.last_cut_us is not None
    overuse_at = next(
        t for t, u in zip(trace.t_us, trace.usage, strict=True) if u is Usage.OVERUSING
    )
    assert overuse_at < 2e6
    assert trace.at(3) < 900_000


def test_jittery_arrivals_without_a_queue_are_not_overuse() -> None:
    link = Link(50_000_000, jitter_us=20 * MS, rng=random.Random(5))
    trace = simulate(30, link_at=lambda t: link, fixed_rate_bps=1_000_000)
    overusing = sum(u is Usage.OVERUSING for u in trace.usage) / len(trace.usage)
    assert overusing < 0.02, overusing
    assert trace.mean(10, 30) >= 1_000_000


def test_jitter_on_top_of_a_queue_ramp_still_reads_as_overuse() -> None:
    link = Link(900_000, queue_ms=5_000, jitter_us=10 * MS, rng=random.Random(9))
    trace = simulate(6, lambda t: link, fixed_rate_bps=1_000_000)
    assert Usage.OVERUSING in trace.usage[: len(trace.usage) // 2]


# --- the pieces --------------------------------------------------------------------------------


def results(
    send_arrivals: list[tuple[int, int | None]], start_seq: int = 0, size: int = PACKET
) -> list[PacketResult]:
    return [PacketResult(start_seq + i, s, size, a) for i, (s, a) in enumerate(send_arrivals)]


def test_remb_caps_the_estimate_and_is_reported_as_the_limit() -> None:
    bwe = SendSideBwe(initial_bps=1_000_000)
    bwe.on_remb(400_000, 0)
    assert bwe.estimate_bps == 400_000
    assert bwe.stats()["limitedBy"] == "remb"


def test_min_and_max_bound_the_estimate() -> None:
    bwe = SendSideBwe(initial_bps=100_000, min_bps=100_000, max_bps=200_000)
    bwe.on_remb(10_000, 0)
    assert bwe.estimate_bps == 100_000
    with pytest.raises(ValueError):
        SendSideBwe(initial_bps=10, min_bps=100)


def test_receiver_report_loss_drives_the_estimate_without_transport_cc() -> None:
    bwe = SendSideBwe(initial_bps=1_000_000)
    bwe.on_receiver_report(64, 1_000_000)  # 25% lost
    assert bwe.estimate_bps == 875_000
    bwe.on_receiver_report(64, 1_100_000)  # within 300 ms + rtt: one cut per interval
    assert bwe.estimate_bps == 875_000
    bwe.on_receiver_report(0, 4_000_000)  # one clean report could be luck: hold
    assert bwe.estimate_bps == 875_000
    bwe.on_receiver_report(0, 5_000_000)  # two in a row: grow, 4% a second near the cut
    assert bwe.estimate_bps == int(875_000 * 1.04 + 1000)
    for t in range(6, 12):
        bwe.on_receiver_report(0, t * 1_000_000)
    assert bwe.estimate_bps > 1_100_000  # 10% past the rate that was cut...
    before = bwe.estimate_bps
    bwe.on_receiver_report(0, 12_000_000)
    assert bwe.estimate_bps == int(before * 1.08 + 1000)  # ...8% a second again


def test_receiver_report_loss_is_ignored_while_transport_cc_flows() -> None:
    bwe = SendSideBwe(initial_bps=1_000_000)
    bwe.on_feedback(results([(0, 1000)]), 1_000_000)
    bwe.on_receiver_report(128, 1_500_000)
    assert bwe.estimate_bps == 1_000_000
    bwe.on_receiver_report(128, 4_000_000)  # transport-cc stopped two seconds ago
    assert bwe.estimate_bps < 1_000_000


def test_stats_say_what_the_estimate_is_made_of() -> None:
    stats = SendSideBwe().stats()
    assert set(stats) == {
        "estimateBps",
        "limitedBy",
        "delayBasedBps",
        "usage",
        "lossFraction",
        "deliveredBps",
        "rembBps",
        "rttMs",
        "lastCutUs",
    }
    assert stats["estimateBps"] == 1_000_000 and stats["usage"] == "normal"


def test_rate_window() -> None:
    w = RateWindow(window_us=500_000, bins=10)
    for i in range(100):  # 1200 bytes every 10 ms: 960 kbit/s
        w.add(i * 10_000, PACKET)
        if i < 50:
            assert w.rate_bps() is None
    assert w.rate_bps() == 960_000
    w.add(5_000_000, PACKET)  # after a silence the old bins are gone
    w.add(5_060_000, PACKET)
    assert w.rate_bps() == PACKET * 8 * 1_000_000 // 450_000


def test_trendline_slope_of_a_linear_ramp() -> None:
    f = TrendlineFilter()
    modified = 0.0
    for i in range(100):
        modified = f.update(1.0, i * 10.0)  # +1 ms delay every 10 ms: slope 0.1
    assert f.trend == pytest.approx(0.1, rel=0.05)
    assert modified == pytest.approx(60 * 0.1 * 4, rel=0.05)


def test_detector_threshold_adapts_to_steady_noise() -> None:
    d = OveruseDetector()
    for i in range(2000):
        d.detect(20.0 if i % 2 else -20.0, 0.0, 5.0, i * 5.0)
    assert d.threshold > 19  # followed the noise up, so it no longer flags it
    d2 = OveruseDetector()
    for i in range(2000):
        d2.detect(1.0, 0.0, 5.0, i * 5.0)
    assert d2.threshold == 6.0  # and down to its floor on a quiet path


# --- REMB for publishers without transport-cc ---------------------------------------------------


def abs_send_time(t_us: int) -> int:
    """24-bit 6.18 fixed-point seconds, as the abs-send-time extension carries."""
    return (t_us * (1 << 18) // 1_000_000) & 0xFFFFFF


def remb_trace(queue_us_per_packet: int) -> list[int]:
    """REMB values for 30 s of a 960 kbit/s stream (1200 bytes every 10 ms, 50 ms away);
    after 10 s a network queue grows by `queue_us_per_packet` per packet."""
    remb = RembEstimator()
    values = []
    t = 0
    for i in range(3000):
        t += 10_000
        queued = max(0, i - 1000) * queue_us_per_packet
        out = remb.on_packet(t + 50_000 + queued, abs_send_time(t), PACKET, 1234)
        if out is not None and t > 10_000_000:
            assert out[1] == [1234]
            values.append(out[0])
    return values


def test_remb_estimator_with_socket_arrival_times_keeps_the_rate() -> None:
    assert min(remb_trace(0)) >= 960_000


def test_remb_estimator_sees_a_queue_in_the_arrival_times_it_is_given() -> None:
    # +0.2 ms per packet: the path carries 2% less than is sent.
    assert min(remb_trace(200)) < 960_000
