"""Downlink probing (sfu/probe.py) on synthetic feedback: when clusters start, what their
feedback says the link carries, and what a result does to the estimate."""

from __future__ import annotations

from aiosfu.sfu.bwe import SendSideBwe
from aiosfu.sfu.probe import (
    LIMITED_INTERVAL_US,
    MIN_PACKETS,
    ProbeController,
    Prober,
    estimate,
)
from aiosfu.sfu.twcc import PacketResult

S = 1_000_000  # µs


def cluster_results(
    send_bps: float, link_bps: float | None, packets: int = 10, size: int = 300, lost: int = 0
) -> list[PacketResult]:
    """A cluster sent at `send_bps` through a link that serialises at `link_bps` (None:
    faster than the sender), the last `lost` packets dropped."""
    out = []
    free_at = 0.0
    for k in range(packets):
        send = int(k * size * 8 * S / send_bps)
        arrival = float(send) if link_bps is None else max(float(send), free_at)
        if link_bps is not None:
            arrival += size * 8 * S / link_bps
            free_at = arrival
        gone = k >= packets - lost
        out.append(PacketResult(k, 10 * S + send, size, None if gone else 50 * S + int(arrival)))
    return out


def test_a_cluster_through_an_open_link_measures_its_send_rate() -> None:
    result = estimate(cluster_results(2_000_000, None))
    assert result is not None and 1_900_000 <= result <= 2_100_000, result


def test_a_cluster_through_a_narrower_link_measures_the_link() -> None:
    # Sent at 2 Mbit/s into a 1 Mbit/s queue: the packets arrive at the link's pace.
    result = estimate(cluster_results(2_000_000, 1_000_000, packets=20))
    assert result is not None and 0.85 * 1_000_000 <= result <= 1_000_000, result


def test_a_cluster_mostly_lost_or_too_small_gives_no_result() -> None:
    assert estimate(cluster_results(2_000_000, None, packets=10, lost=6)) is None
    assert estimate(cluster_results(2_000_000, None, packets=MIN_PACKETS - 1)) is None


def test_probing_starts_at_three_times_the_estimate_and_climbs_while_it_succeeds() -> None:
    controller = ProbeController(max_bps=20_000_000)
    assert controller.next_target(1_000_000, False, None, True, 0) == 3_000_000
    assert controller.next_target(1_000_000, False, None, True, S // 10) is None  # one at a time
    controller.on_result(3_000_000, 2_900_000, True, False, S // 5)
    assert controller.next_target(2_900_000, False, None, True, S // 4) == 5_800_000
    controller.on_result(5_800_000, 2_000_000, False, False, S // 2)  # the link said no
    assert controller.next_target(2_900_000, False, None, True, S) is None


def test_a_refused_limited_probe_is_tried_again_after_the_same_interval() -> None:
    controller = ProbeController()
    controller.next_target(1_000_000, False, None, True, 0)
    controller.on_result(3_000_000, 600_000, False, False, S // 5)
    cut = 2 * S
    first = cut + LIMITED_INTERVAL_US
    assert controller.next_target(500_000, True, cut, True, first) == 1_000_000
    controller.on_result(1_000_000, 450_000, False, True, first + S // 5)  # refused
    assert controller.next_target(500_000, True, cut, True, first + S) is None
    assert controller.next_target(500_000, True, cut, True, first + LIMITED_INTERVAL_US)


def test_probing_never_exceeds_its_ceiling() -> None:
    controller = ProbeController(max_bps=4_000_000)
    assert controller.next_target(2_000_000, False, None, True, 0) == 4_000_000
    controller.on_result(4_000_000, 4_000_000, True, False, S // 5)
    assert controller.next_target(4_000_000, False, None, True, S // 4) is None


def test_a_limited_estimate_is_probed_after_a_quiet_interval_and_only_when_clean() -> None:
    controller = ProbeController()
    controller.next_target(1_000_000, False, None, True, 0)  # the initial probe
    controller.on_result(3_000_000, 600_000, False, False, S // 5)
    cut = 2 * S
    assert controller.next_target(500_000, True, cut, True, cut + S) is None
    quiet = cut + LIMITED_INTERVAL_US
    assert controller.next_target(500_000, True, cut, False, quiet) is None  # loss: not now
    assert controller.next_target(500_000, False, cut, True, quiet) is None  # not limited
    assert controller.next_target(500_000, True, cut, True, quiet) == 1_000_000


def test_a_probe_a_policer_passed_backs_the_next_one_off() -> None:
    # The policer's bucket let the probe through; the rate it allowed met loss soon
    # after: the next limited probe waits twice as long.
    controller = ProbeController()
    controller.next_target(1_000_000, False, None, True, 0)
    controller.on_result(3_000_000, 700_000, False, False, S // 5)
    cut = 2 * S
    first = cut + LIMITED_INTERVAL_US
    assert controller.next_target(500_000, True, cut, True, first) == 1_000_000
    controller.on_result(1_000_000, 1_000_000, True, True, first + S // 5)
    controller._further_bps = None  # (the exponential step is not what this is about)
    recut = first + 2 * S
    assert controller.next_target(540_000, True, recut, True, recut + S) is None
    assert controller.misled == 1
    assert controller.next_target(540_000, True, recut, True, recut + LIMITED_INTERVAL_US) is None
    assert controller.next_target(540_000, True, recut, True, recut + 2 * LIMITED_INTERVAL_US)


def test_the_prober_sends_a_cluster_and_reads_its_result_from_feedback() -> None:
    prober = Prober(ProbeController(max_bps=3_000_000))
    cluster = prober.start(1_000_000, False, None, True, 0)
    assert cluster is not None and cluster.target_bps == 3_000_000
    assert prober.start(1_000_000, False, None, True, 0) is None  # one at a time
    sent: list[PacketResult] = []
    now, seq = 0, 100
    while prober.active is not None:
        due = prober.due(now)
        while due > 0 and prober.active is not None:
            size = min(315, due)
            prober.on_sent(seq, size, now)
            # an open link, 20 ms away
            sent.append(PacketResult(seq, now, size, now + 20_000))
            seq += 1
            due -= size
        now += 5_000
    assert len(sent) >= MIN_PACKETS
    # feedback arrives in two parts, with an unrelated packet in it
    assert prober.on_results([*sent[:3], PacketResult(7, 0, 1000, 1)], now) == []
    done = prober.on_results(sent[3:], now + 50_000)
    assert len(done) == 1
    target, result = done[0]
    assert target == 3_000_000
    assert result is not None and 2_400_000 <= result <= 3_600_000, result  # 5 ms slots


def test_a_probe_result_raises_the_estimate_and_never_lowers_it() -> None:
    bwe = SendSideBwe(initial_bps=500_000)
    assert bwe.on_probe_result(2_000_000, S)
    assert bwe.estimate_bps == 2_000_000
    assert not bwe.on_probe_result(1_000_000, 2 * S)
    assert bwe.estimate_bps >= 2_000_000
