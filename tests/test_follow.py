"""Who the publisher is asked to follow: its subscribers' downlinks, within limits."""

from __future__ import annotations

import pytest

from aiosfu.sfu import downstream as downstream_module
from aiosfu.sfu.downstream import CONGESTION_MEMORY_US, Downstream
from aiosfu.sfu.follow import publisher_cap
from aiosfu.sfu.twcc import PacketResult


def test_one_subscriber_is_followed_all_the_way_down() -> None:
    assert publisher_cap([None], floor=300_000) is None
    assert publisher_cap([450_000], floor=300_000) == 450_000
    assert publisher_cap([100_000], floor=300_000) == 100_000


def test_one_weak_subscriber_of_many_cannot_pull_the_publisher_below_the_floor() -> None:
    assert publisher_cap([None, None, None], floor=300_000) is None
    assert publisher_cap([None, 800_000, 1_200_000], floor=300_000) == 800_000
    assert publisher_cap([100_000, None, 1_200_000], floor=300_000) == 300_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(downstream_module, "now_us", fake)
    return fake


class FakeEstimator:
    """What Downstream reads of the estimator (sfu/bwe.py's SendSideBwe)."""

    def __init__(self) -> None:
        self.estimate_bps = 1_000_000
        self.limited_by = "loss"
        self.last_cut_us: int | None = None

        class Delivered:
            bps: int | None = None

            def rate_bps(self) -> int | None:
                return self.bps

        self.delivered = Delivered()


def congested_downstream(clock: FakeClock) -> tuple[Downstream, FakeEstimator]:
    downstream = Downstream()
    estimator = FakeEstimator()
    downstream.estimator = estimator  # type: ignore[assignment]
    downstream.feedbacks = 1  # the subscriber has reported
    return downstream, estimator


def test_an_estimate_that_never_met_congestion_limits_nobody(clock: FakeClock) -> None:
    downstream, _ = congested_downstream(clock)
    assert downstream.estimate_bps == 1_000_000
    assert downstream.limiting_bps is None  # it only trails what was sent
    assert Downstream().limiting_bps is None  # nothing heard yet


def test_the_limit_holds_until_the_estimate_is_well_past_where_it_was_cut(
    clock: FakeClock,
) -> None:
    downstream, estimator = congested_downstream(clock)
    estimator.last_cut_us, estimator.delivered.bps = clock.now, 600_000
    estimator.estimate_bps = 540_000
    assert downstream.limiting_bps == 540_000
    clock.now += CONGESTION_MEMORY_US + 1
    estimator.estimate_bps = 700_000  # grown, but not past the policer's rate by enough
    assert downstream.limiting_bps == 700_000
    estimator.estimate_bps = 800_000
    assert downstream.limiting_bps is None  # past it unharmed: the link grew
    estimator.last_cut_us, estimator.delivered.bps = clock.now, 900_000  # cut again
    estimator.estimate_bps = 765_000
    assert downstream.limiting_bps == 765_000


def test_where_probes_can_go_only_a_probe_releases_the_limit(clock: FakeClock) -> None:
    # Chromium keeps well under a REMB ceiling, so an estimate that grew meanwhile says
    # nothing about the link; a probe cluster that came through does.
    downstream, estimator = congested_downstream(clock)
    downstream.attach_padding(lambda size: True)
    estimator.last_cut_us, estimator.delivered.bps = clock.now, 600_000
    estimator.estimate_bps = 540_000
    assert downstream.limiting_bps == 540_000
    clock.now += CONGESTION_MEMORY_US + 1
    estimator.estimate_bps = 900_000
    assert downstream.limiting_bps == 900_000  # grown, not proven
    downstream._probed = (clock.now, 700_000)  # a probe the link held to 700 kbit/s
    assert downstream.limiting_bps == 900_000
    downstream._probed = (clock.now, 2_000_000)
    assert downstream.limiting_bps is None


def test_a_probe_that_released_a_limit_is_remembered_as_one_that_may_mislead(
    clock: FakeClock,
) -> None:
    # The probe's result releases the limit at once; whether the probe found the
    # estimate limited must be read before that, or a policer that let the probe
    # through would never back the next probe off.
    downstream, estimator = congested_downstream(clock)
    downstream.attach_padding(lambda size: True)
    downstream.prober.controller.started = True  # past the initial probes
    estimator.last_cut_us, estimator.delivered.bps = clock.now, 600_000
    estimator.estimate_bps = 540_000
    assert downstream.limiting_bps == 540_000
    clock.now += CONGESTION_MEMORY_US + 1

    def on_probe_result(bps: int, now_us: int) -> bool:
        estimator.estimate_bps = bps
        return True

    estimator.on_feedback = lambda results, now_us: None  # type: ignore[attr-defined]
    estimator.on_probe_result = on_probe_result  # type: ignore[attr-defined]
    estimator.loss_clean = True  # type: ignore[attr-defined]
    result = PacketResult(1, clock.now, 300, clock.now)
    downstream.history.on_feedback = lambda feedback: [result]  # type: ignore[method-assign]
    downstream.prober.on_results = lambda results, now: [(1_080_000, 2_000_000)]  # type: ignore[method-assign]
    downstream.on_transport_feedback(None)  # type: ignore[arg-type]
    assert downstream.limiting_bps is None  # released by the probe
    controller = downstream.prober.controller
    recut = clock.now + 2_000_000  # the policer is still there: cut again soon after
    assert controller.next_target(540_000, True, recut, True, recut + 1) is None
    assert controller.misled == 1


def test_a_subscriber_remb_limits_at_once(clock: FakeClock) -> None:
    downstream, estimator = congested_downstream(clock)
    estimator.limited_by, estimator.estimate_bps = "remb", 400_000
    assert downstream.limiting_bps == 400_000


def test_retransmissions_get_a_share_of_the_estimate(clock: FakeClock) -> None:
    downstream, estimator = congested_downstream(clock)
    estimator.estimate_bps = 800_000  # 30%: 30 kB/s, 15 kB of burst
    clock.now += 10_000_000
    allowed = sum(downstream.allow_retransmission(1000) for _ in range(100))
    assert 10 <= allowed <= 15
    clock.now += 1_000_000
    assert sum(downstream.allow_retransmission(1000) for _ in range(100)) >= 10
