"""A small network simulator for the bandwidth estimators: a sender that paces packets at
the estimate, a link that queues or polices, and the real transport-cc path (generator,
wire format, history) between. Simulated time: every figure repeats exactly.

`python -m tests.bwe_sim` prints the figures quoted in docs/congestion-control.md.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosfu.sfu.bwe import SendSideBwe, Usage
from aiosfu.sfu.twcc import FeedbackGenerator, SendHistory, decode

PACKET = 1200  # bytes
MS = 1_000


@dataclass
class Link:
    """A bottleneck: a FIFO of `queue_ms` at `capacity_bps`, or (policer) a token bucket
    that drops what exceeds the rate, as nftables' `limit rate over` does. Random loss and
    per-packet jitter on top; `delay_us` one-way propagation."""

    capacity_bps: float
    queue_ms: float = 200
    policer: bool = False
    loss: float = 0.0
    jitter_us: int = 0
    delay_us: int = 20 * MS
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    _busy_until: float = 0.0
    _tokens: float = 0.0
    _last: float = 0.0

    def transmit(self, send_us: int, size: int) -> int | None:
        if self.loss and self.rng.random() < self.loss:
            return None
        if self.policer:
            burst = 4 * PACKET
            self._tokens = min(
                burst, self._tokens + (send_us - self._last) * self.capacity_bps / 8e6
            )
            self._last = send_us
            if self._tokens < size:
                return None
            self._tokens -= size
            out = float(send_us)
        else:
            start = max(float(send_us), self._busy_until)
            if start - send_us > self.queue_ms * MS:
                return None  # tail drop: the buffer is full
            out = start + size * 8e6 / self.capacity_bps
            self._busy_until = out
        jitter = self.rng.randint(0, self.jitter_us) if self.jitter_us else 0
        return int(out) + self.delay_us + jitter


@dataclass
class Trace:
    t_us: list[int] = field(default_factory=list)
    estimate: list[int] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    usage: list[Usage] = field(default_factory=list)
    lost_after: dict[int, int] = field(default_factory=dict)
    last_cut_us: int | None = None

    def at(self, t_s: float) -> int:
        for t, e in zip(self.t_us, self.estimate, strict=True):
            if t >= t_s * 1e6:
                return e
        return self.estimate[-1]

    def mean(self, start_s: float, end_s: float) -> float:
        vals = [
            e
            for t, e in zip(self.t_us, self.estimate, strict=True)
            if start_s * 1e6 <= t < end_s * 1e6
        ]
        return sum(vals) / len(vals)

    def first_below(self, bps: float, after_s: float) -> float | None:
        for t, e in zip(self.t_us, self.estimate, strict=True):
            if t >= after_s * 1e6 and e < bps:
                return t / 1e6 - after_s
        return None

    def first_above(self, bps: float, after_s: float) -> float | None:
        for t, e in zip(self.t_us, self.estimate, strict=True):
            if t >= after_s * 1e6 and e > bps:
                return t / 1e6 - after_s
        return None


def simulate(
    duration_s: float,
    link_at: Callable[[float], Link],
    *,
    source_bps: float = 5_000_000,
    initial_bps: int = 1_000_000,
    fixed_rate_bps: float | None = None,
) -> Trace:
    """A sender pacing 1200-byte packets at min(estimate, source), or at a fixed rate."""
    bwe = SendSideBwe(initial_bps=initial_bps, min_bps=50_000, max_bps=20_000_000)
    history = SendHistory()
    gen = FeedbackGenerator(sender_ssrc=1, media_ssrc=2)
    arrivals: list[tuple[int, int]] = []
    feedback: deque[tuple[int, bytes]] = deque()
    trace = Trace()
    seq = 0
    next_send = 0.0
    now = 0
    end = int(duration_s * 1e6)
    gen.poll(0)
    while now < end:
        now += MS
        link = link_at(now / 1e6)
        rate = fixed_rate_bps or min(bwe.estimate_bps, source_bps)
        while next_send <= now:
            t = int(next_send)
            history.on_sent(seq & 0xFFFF, t, PACKET)
            arrival = link.transmit(t, PACKET)
            trace.sent += 1
            if arrival is None:
                trace.lost += 1
                trace.lost_after[t // 1_000_000] = trace.lost_after.get(t // 1_000_000, 0) + 1
            else:
                heapq.heappush(arrivals, (arrival, seq & 0xFFFF))
            seq += 1
            next_send += PACKET * 8e6 / rate
        while arrivals and arrivals[0][0] <= now:
            arrival, s = heapq.heappop(arrivals)
            gen.record(s, arrival, PACKET)
        if now % (10 * MS) == 0:
            for packet in gen.poll(now):
                feedback.append((now + 20 * MS, packet))
        while feedback and feedback[0][0] <= now:
            _, packet = feedback.popleft()
            bwe.on_feedback(history.on_feedback(decode(packet)), now)
            trace.t_us.append(now)
            trace.estimate.append(bwe.estimate_bps)
            trace.usage.append(bwe.delay.usage)
    trace.last_cut_us = bwe.last_cut_us
    return trace


def loss_fraction(trace: Trace, start_s: int, end_s: int, rate_bps: float) -> float:
    lost = sum(trace.lost_after.get(s, 0) for s in range(start_s, end_s))
    sent = (end_s - start_s) * rate_bps / (PACKET * 8)
    return lost / sent


def between(start_s: float, end_s: float, inside: Link, outside: Link) -> Callable[[float], Link]:
    """A link schedule: `inside` from start_s to end_s, `outside` otherwise."""
    return lambda t: inside if start_s <= t < end_s else outside


def main() -> None:
    for c in (800_000, 1_500_000, 3_000_000):
        link = Link(c)
        trace = simulate(60, between(0, 60, link, link), initial_bps=300_000)
        mean = trace.mean(40, 60)
        print(f"steady {c}: mean/C {mean / c:.3f} loss {loss_fraction(trace, 40, 60, mean):.4f}")
    for policer in (False, True):
        for c in (300_000, 600_000, 1_000_000):
            bottleneck = between(30, 70, Link(c, policer=policer), Link(5_000_000))
            trace = simulate(90, bottleneck, source_bps=2_000_000)
            mean = trace.mean(40, 70)
            kind = "policer" if policer else "queue"
            print(
                f"{kind} {c}: below C after {trace.first_below(c, 30):.2f} s,"
                f" mean/C {mean / c:.3f}, loss {loss_fraction(trace, 40, 70, mean):.4f},"
                f" above 1.5 C {trace.first_above(1.5 * c, 70):.2f} s after lifting"
            )
    for seed in range(5):
        lossy = Link(1_500_000, loss=0.05, rng=random.Random(seed))
        trace = simulate(80, between(30, 80, lossy, Link(1_500_000)))
        print(f"5% loss seed {seed}: after/before {trace.mean(50, 80) / trace.mean(20, 30):.3f}")


if __name__ == "__main__":
    main()
