"""Bandwidth estimation: a GCC-like send-side estimator per subscriber, and REMB for
publishers that offer nothing else.

`SendSideBwe` estimates one subscriber's downlink from its transport-cc feedback (matched
to what we sent by `aiosfu.sfu.twcc.SendHistory`), its receiver reports and its REMB, the
way Google Congestion Control does (draft-ietf-rmcat-gcc-02; libwebrtc's goog_cc is the
reference implementation, read to learn, not copied):

- delay-based: packets are grouped into 5 ms send bursts; the growth of one-way delay
  between groups goes through a trendline filter (least-squares slope of the smoothed
  accumulated delay over the last 20 groups); an overuse detector compares the slope with
  an adaptive threshold; an AIMD controller turns normal/overuse/underuse into a rate
  (multiplicative increase of 8%/s far from the link's known capacity, additive near it,
  x0.85 of the delivered rate on overuse; never above 1.5x the delivered rate).
- loss-based: GCC's loss controller on the fraction lost (from transport-cc, or from
  receiver reports when a subscriber sends no transport-cc): below 2% grow 8% a second,
  above 10% cut by half the loss, hold in between. The SFU does not probe, and policers
  (a rate limit that drops rather than queues) give no delay signal, so three rules are
  added, explained at `_on_loss`: heavy loss (>20%) drops straight to 0.9x the delivered
  rate; loss right after growing into it returns below the last clean target; and after
  a cut, moderate loss keeps cutting while it falls with the rate.
- the estimate is the lower of the two, capped by the subscriber's REMB and by
  `max_bps`, floored at `min_bps`.

Nothing here reads a clock: callers pass times in microseconds (send times from the
egress path, the feedback's own arrival times, `now_us` from the loop). No library does
this for Python (aiortc has a receive-side estimator only, below), so it is written here.

`RembEstimator` is for publishers that offer only goog-remb: aiortc's own receive-side
estimator (`aiortc.rate.RemoteBitrateEstimator`, abs-send-time based) takes the arrival
time as an argument and reads no clock, so it is sound to reuse as long as that time is
the socket read time; the wrapper exists to make that the only way to call it.

Usage (per subscriber)::

    bwe = SendSideBwe(initial_bps=1_000_000, min_bps=100_000, max_bps=8_000_000)
    for fb in feedbacks:                                  # decoded transport-cc
        bwe.on_feedback(history.on_feedback(fb), now_us)
    bwe.on_receiver_report(report.fraction_lost, now_us)  # each RR block about our SSRC
    bwe.on_remb(remb_bps, now_us)                         # if the subscriber sends REMB
    bwe.on_rtt(rtt_us)                                    # from RR round-trip, optional
    target = bwe.estimate_bps                             # allocate subscriptions by this

Usage (publisher offering only goog-remb)::

    remb = RembEstimator()
    ext = packet.extensions
    update = remb.on_packet(arrival_us, ext.abs_send_time, len(packet.payload), packet.ssrc)
    if update is not None:
        bitrate, ssrcs = update                       # send as REMB (aiortc.rtp.pack_remb_fci)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from enum import Enum

from aiortc.rate import RemoteBitrateEstimator

from aiosfu.sfu.twcc import PacketResult


class Usage(Enum):
    """What the overuse detector concludes about the path's queue."""

    NORMAL = "normal"
    UNDERUSING = "underusing"
    OVERUSING = "overusing"


# --- delivered rate ----------------------------------------------------------------------


class RateWindow:
    """Bits per second over a sliding window, in fixed bins (no per-packet allocation).

    The window ends at the newest packet added, not at a wall clock: it measures what
    the feedback has shown, however late the feedback arrives.
    """

    def __init__(self, window_us: int = 500_000, bins: int = 10) -> None:
        self.bin_us = window_us // bins
        self._bins = [0] * bins
        self._current = -1  # index of the newest bin (absolute, not modulo)
        self._first = -1

    def add(self, t_us: int, size: int) -> None:
        b = t_us // self.bin_us
        if self._current < 0:
            self._current = self._first = b
        if b > self._current:
            n = len(self._bins)
            for k in range(self._current + 1, min(b, self._current + n) + 1):
                self._bins[k % n] = 0
            self._current = b
        elif b <= self._current - len(self._bins):
            return  # older than the window
        self._bins[b % len(self._bins)] += size

    def rate_bps(self) -> int | None:
        """The rate over the full window, or None until a window's worth has been seen."""
        n = len(self._bins)
        if self._current < 0 or self._current - self._first < n:
            return None
        # The newest bin is still filling: measure over the n-1 complete ones.
        total = sum(self._bins) - self._bins[self._current % n]
        return total * 8 * 1_000_000 // (self.bin_us * (n - 1))

    def recent_bps(self, bins: int) -> int | None:
        """The rate over the last `bins` complete bins only (a policer's bucket, emptied
        at the start of the window, no longer in it)."""
        n = len(self._bins)
        bins = max(1, min(bins, n - 1))
        if self._current < 0 or self._current - self._first < bins + 1:
            return None
        total = sum(self._bins[(self._current - k) % n] for k in range(1, bins + 1))
        return total * 8 * 1_000_000 // (self.bin_us * bins)


# --- delay-based -------------------------------------------------------------------------

_GROUP_US = 5_000  # packets sent within 5 ms form one group
_BURST_US = 5_000  # a group arriving within 5 ms of the previous one, faster, is a burst
_MAX_BURST_US = 100_000


class TrendlineFilter:
    """Slope of the smoothed accumulated one-way delay variation (GCC's trendline).

    A positive slope means queues are growing. The slope is scaled by the number of
    samples seen (up to 60) and a gain of 4 so one threshold works from the first seconds.
    """

    def __init__(self, window: int = 20, smoothing: float = 0.9, gain: float = 4.0) -> None:
        self.window = window
        self.smoothing = smoothing
        self.gain = gain
        self._history: deque[tuple[float, float]] = deque(maxlen=window)
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival_ms: float | None = None
        self.num_deltas = 0
        self.trend = 0.0

    def update(self, delay_delta_ms: float, arrival_ms: float) -> float:
        """Add one group's delay variation; returns the modified trend (ms)."""
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self.num_deltas = min(self.num_deltas + 1, 1000)
        self._accumulated += delay_delta_ms
        self._smoothed = self.smoothing * self._smoothed + (1 - self.smoothing) * self._accumulated
        self._history.append((arrival_ms - self._first_arrival_ms, self._smoothed))
        if len(self._history) == self.window:
            self.trend = _slope(self._history, self.trend)
        return min(self.num_deltas, 60) * self.trend * self.gain


def _slope(points: Iterable[tuple[float, float]], fallback: float) -> float:
    n = 0
    sx = sy = 0.0
    for x, y in points:
        sx += x
        sy += y
        n += 1
    mx, my = sx / n, sy / n
    num = den = 0.0
    for x, y in points:
        num += (x - mx) * (y - my)
        den += (x - mx) * (x - mx)
    return fallback if den == 0 else num / den


class OveruseDetector:
    """Compares the trend with a threshold that adapts to it (GCC §5.4).

    The threshold follows the trend's magnitude slowly upward and faster downward, so a
    path with steady jitter stops reading as overuse while a real queue ramp still does,
    and competing TCP flows do not starve us (a fixed threshold would).
    """

    K_UP = 0.0087
    K_DOWN = 0.039
    OVERUSE_TIME_MS = 10.0

    def __init__(self) -> None:
        self.threshold = 12.5
        self.usage = Usage.NORMAL
        self._last_update_ms: float | None = None
        self._time_over_ms = -1.0
        self._overuse_count = 0
        self._prev_trend = 0.0

    def detect(
        self, modified_trend: float, trend: float, send_delta_ms: float, now_ms: float
    ) -> Usage:
        if modified_trend > self.threshold:
            if self._time_over_ms < 0:
                self._time_over_ms = send_delta_ms / 2
            else:
                self._time_over_ms += send_delta_ms
            self._overuse_count += 1
            if (
                self._time_over_ms > self.OVERUSE_TIME_MS
                and self._overuse_count > 1
                and trend >= self._prev_trend
            ):
                self._time_over_ms = 0.0
                self._overuse_count = 0
                self.usage = Usage.OVERUSING
        elif modified_trend < -self.threshold:
            self._time_over_ms = -1.0
            self._overuse_count = 0
            self.usage = Usage.UNDERUSING
        else:
            self._time_over_ms = -1.0
            self._overuse_count = 0
            self.usage = Usage.NORMAL
        self._prev_trend = trend
        self._adapt(modified_trend, now_ms)
        return self.usage

    def _adapt(self, modified_trend: float, now_ms: float) -> None:
        if self._last_update_ms is None:
            self._last_update_ms = now_ms
        magnitude = abs(modified_trend)
        if magnitude > self.threshold + 15:
            # A spike (a route change, a big keyframe) must not drag the threshold up.
            self._last_update_ms = now_ms
            return
        k = self.K_DOWN if magnitude < self.threshold else self.K_UP
        dt = min(now_ms - self._last_update_ms, 100.0)
        self.threshold = min(
            600.0, max(6.0, self.threshold + k * (magnitude - self.threshold) * dt)
        )
        self._last_update_ms = now_ms


class _LinkCapacity:
    """Running mean and spread of the delivered rate at past overuses (kbit/s)."""

    def __init__(self) -> None:
        self.estimate: float | None = None
        self._deviation = 0.4

    def _spread(self) -> float:
        assert self.estimate is not None
        return 3 * math.sqrt(self._deviation * self.estimate)

    def upper_bps(self) -> float:
        return math.inf if self.estimate is None else (self.estimate + self._spread()) * 1000

    def lower_bps(self) -> float:
        return 0.0 if self.estimate is None else (self.estimate - self._spread()) * 1000

    def on_overuse(self, delivered_bps: float) -> None:
        sample = delivered_bps / 1000
        alpha = 0.05
        if self.estimate is None:
            self.estimate = sample
        else:
            self.estimate = (1 - alpha) * self.estimate + alpha * sample
        error = self.estimate - sample
        deviation = (1 - alpha) * self._deviation + alpha * error * error / max(self.estimate, 1.0)
        self._deviation = min(2.5, max(0.4, deviation))

    def reset(self) -> None:
        self.estimate = None


class AimdRateControl:
    """GCC's rate controller: increase while the path is normal, cut on overuse."""

    BETA = 0.85
    MULTIPLICATIVE_PER_S = 1.08

    def __init__(self, initial_bps: int) -> None:
        self.bps = float(initial_bps)
        self.initialized = False
        self.link = _LinkCapacity()
        self._increasing = False
        self._last_change_us: int | None = None
        self._in_decrease_state = False
        self.last_decrease_us: int | None = None

    def update(self, usage: Usage, delivered_bps: int | None, rtt_us: int, now_us: int) -> None:
        if self._last_change_us is None:
            self._last_change_us = now_us
        if usage is Usage.OVERUSING:
            if delivered_bps is None:
                return
            interval_us = min(200_000, max(10_000, rtt_us))
            recent = now_us - self._last_change_us < interval_us
            if self._in_decrease_state and recent and delivered_bps >= 0.5 * self.bps:
                return  # one cut per round trip: the last one has not taken effect yet
            self._decrease(delivered_bps, now_us)
            return
        self._in_decrease_state = False
        if usage is Usage.UNDERUSING:
            # Queues are draining: hold, so they can empty before we grow again.
            self._increasing = False
            self._last_change_us = now_us
            return
        if not self._increasing:
            self._increasing = True
            self._last_change_us = now_us
            return
        if not self.initialized:
            if delivered_bps is not None:
                self.bps = float(delivered_bps)
                self.initialized = True
                self._last_change_us = now_us
            return
        if delivered_bps is not None:
            if delivered_bps > self.link.upper_bps():
                self.link.reset()  # the path carries more than we thought: explore again
            # What was delivered without overuse is proof of capacity (the sender may
            # have ramped faster than we would).
            self.bps = max(self.bps, float(delivered_bps))
        dt_s = (now_us - self._last_change_us) / 1e6
        if self.link.estimate is not None:
            increase = self._additive_per_s(rtt_us) * dt_s
        else:
            increase = max(
                1000.0 * dt_s, self.bps * (self.MULTIPLICATIVE_PER_S ** min(dt_s, 1.0) - 1)
            )
        new = self.bps + increase
        if delivered_bps is not None:
            # Never run far ahead of what the path has shown it delivers.
            limit = 1.5 * delivered_bps + 10_000
            if self.bps < limit:
                new = min(new, limit)
            else:
                new = self.bps
        self.bps = new
        self._last_change_us = now_us

    def _decrease(self, delivered_bps: int, now_us: int) -> None:
        self.last_decrease_us = now_us
        decreased = self.BETA * delivered_bps
        if decreased > self.bps and self.link.estimate is not None:
            decreased = self.BETA * self.link.estimate * 1000
        if decreased < self.bps or not self.initialized:
            self.bps = decreased
        if self.initialized and delivered_bps < self.link.lower_bps():
            self.link.reset()  # the path got worse than it has ever been: relearn it
        self.link.on_overuse(delivered_bps)
        self.initialized = True
        self._increasing = False
        self._in_decrease_state = True
        self._last_change_us = now_us

    def _additive_per_s(self, rtt_us: int) -> float:
        """About one packet per response time, as GCC's near-capacity increase."""
        response_s = (rtt_us + 100_000) / 1e6
        bits_per_frame = self.bps / 30
        packets_per_frame = math.ceil(bits_per_frame / (1200 * 8))
        packet_bits = bits_per_frame / packets_per_frame
        return max(4000.0, packet_bits / response_s)


class DelayBasedBwe:
    """Groups packet results, runs the trendline and detector, drives the AIMD."""

    def __init__(self, initial_bps: int) -> None:
        self.trendline = TrendlineFilter()
        self.detector = OveruseDetector()
        self.rate = AimdRateControl(initial_bps)
        self._group_first_send = -1
        self._group_last_send = -1
        self._group_first_arrival = -1
        self._group_last_arrival = -1
        self._prev_last_send = -1
        self._prev_last_arrival = -1
        self._reordered = 0

    @property
    def usage(self) -> Usage:
        return self.detector.usage

    def on_received(self, send_us: int, arrival_us: int) -> None:
        """One received packet, in send order."""
        if self._group_first_send < 0:
            self._start_group(send_us, arrival_us)
            return
        if send_us < self._group_first_send:
            return  # sent before the current group: reordered on our side, ignore
        if send_us - self._group_first_send <= _GROUP_US:
            self._extend(send_us, arrival_us)
            return
        arrival_delta = arrival_us - self._group_last_arrival
        if (
            arrival_delta - (send_us - self._group_last_send) < 0
            and arrival_delta <= _BURST_US
            and arrival_us - self._group_first_arrival < _MAX_BURST_US
        ):
            self._extend(send_us, arrival_us)  # a burst: queued together, arrived together
            return
        self._close_group()
        self._start_group(send_us, arrival_us)

    def _start_group(self, send_us: int, arrival_us: int) -> None:
        self._group_first_send = self._group_last_send = send_us
        self._group_first_arrival = self._group_last_arrival = arrival_us

    def _extend(self, send_us: int, arrival_us: int) -> None:
        if send_us > self._group_last_send:
            self._group_last_send = send_us
        if arrival_us > self._group_last_arrival:
            self._group_last_arrival = arrival_us

    def _close_group(self) -> None:
        if self._prev_last_send >= 0:
            send_delta = self._group_last_send - self._prev_last_send
            arrival_delta = self._group_last_arrival - self._prev_last_arrival
            if arrival_delta < 0:
                self._reordered += 1
                if self._reordered >= 3:  # the remote clock jumped: start over
                    self.trendline = TrendlineFilter()
                    self._reordered = 0
                return
            self._reordered = 0
            arrival_ms = self._group_last_arrival / 1000
            modified = self.trendline.update((arrival_delta - send_delta) / 1000, arrival_ms)
            self.detector.detect(modified, self.trendline.trend, send_delta / 1000, arrival_ms)
        self._prev_last_send = self._group_last_send
        self._prev_last_arrival = self._group_last_arrival

    def update(self, delivered_bps: int | None, rtt_us: int, now_us: int) -> None:
        self.rate.update(self.detector.usage, delivered_bps, rtt_us, now_us)

    def estimate_bps(self) -> float | None:
        """None until the controller has a delivered rate to start from."""
        return self.rate.bps if self.rate.initialized else None


def _fraction(windows: deque[tuple[int, int]], last: int) -> float:
    """Loss over the `last` windows (lost, expected) of `windows`."""
    lost = expected = 0
    for k in range(max(0, len(windows) - last), len(windows)):
        lost += windows[k][0]
        expected += windows[k][1]
    return lost / expected if expected else 0.0


# --- the per-subscriber estimator ----------------------------------------------------------

_LOSS_WINDOW_US = 500_000
_LONG_WINDOWS = 4
_LOSS_MIN_PACKETS = 20
_LOW_LOSS = 0.02
_HIGH_LOSS = 0.10
_HEAVY_LOSS = 0.20
_BACKOFF = 0.97  # of the last clean target
_STEP_UP = 1.02  # a target this much above the last clean one is "we grew into it"
_IN_USE = 0.85  # a sender using this much of the target is following it
_DECREASE_INTERVAL_US = 300_000
_CLEAN_MEMORY_US = 10_000_000
_BACKOFF_HOLD_US = 2_000_000
_RR_AFTER_TWCC_US = 2_000_000
_NEAR_CEILING_GROWTH = 1.04  # per second, within _CEILING_SPAN of the last loss ceiling
_CEILING_SPAN = 1.1
# After a cut, loss must fall below 70% of what it was, and by more than the 1.5 points
# a second of packets measures it to, for the cut to count as having helped.
_BETTER = 0.7
_NOISE = 0.015
_DELIVERED_FLOOR = 0.85
_RECENT_US = 250_000


class SendSideBwe:
    """One subscriber's downlink estimate from its feedback (see the module docstring)."""

    def __init__(
        self,
        *,
        initial_bps: int = 1_000_000,
        min_bps: int = 50_000,
        max_bps: int = 10_000_000,
    ) -> None:
        if not 0 < min_bps <= initial_bps <= max_bps:
            raise ValueError("need 0 < min_bps <= initial_bps <= max_bps")
        self.min_bps = min_bps
        self.max_bps = max_bps
        self.delay = DelayBasedBwe(initial_bps)
        # 1 s windows: at 300 kbit/s a packet is 3% of a second's bytes.
        self.delivered = RateWindow(1_000_000, 20)  # by arrival time: what the path carried
        self.sent = RateWindow(1_000_000, 20)  # by send time, lost included: what we offered
        self.rtt_us = 100_000
        self.remb_bps: int | None = None
        self._target = float(initial_bps)
        self._last_update_us: int | None = None
        self._last_decrease_us: int | None = None
        # consecutive loss reports under 2%; -1 before the first (GCC starts by growing)
        self._low_streak = -1
        # (when, target) at the last loss report under 2%
        self._clean: tuple[int, float] | None = None
        self._hold_until_us = 0
        # the loss at our last loss-driven decrease, until a clean stretch or a hold
        self._congestion_loss: float | None = None
        self._last_cut_us = 0
        self._lost = 0
        self._expected = 0
        self._loss_window_start: int | None = None
        self._loss_windows: deque[tuple[int, int]] = deque(maxlen=_LONG_WINDOWS)
        self._windows_since_cut = _LONG_WINDOWS
        self._last_twcc_us: int | None = None
        self._last_loss_cut_us: int | None = None
        self._undo_to: float | None = None  # the target before an experimental cut
        # the target just before the last loss-driven cuts (the lowest of a series)
        self._loss_ceiling: float | None = None
        self.loss_fraction = 0.0
        self.limited_by = "initial"
        self.estimate_bps = initial_bps

    # inputs

    def on_feedback(self, results: Iterable[PacketResult], now_us: int) -> None:
        """The results of one transport-cc feedback, as `SendHistory.on_feedback` gives."""
        self._last_twcc_us = now_us
        lost = received = 0
        for r in results:
            self.sent.add(r.send_us, r.size)
            if r.arrival_us is None:
                lost += 1
                continue
            received += 1
            self.delivered.add(r.arrival_us, r.size)
            self.delay.on_received(r.send_us, r.arrival_us)
        self.delay.update(self.delivered.rate_bps(), self.rtt_us, now_us)
        if self._loss_window_start is None:
            self._loss_window_start = now_us
        self._lost += lost
        self._expected += lost + received
        if (
            self._expected >= _LOSS_MIN_PACKETS
            and now_us - self._loss_window_start >= _LOSS_WINDOW_US
        ):
            windows = self._loss_windows
            windows.append((self._lost, self._expected))
            self._windows_since_cut += 1
            long = _fraction(windows, len(windows))
            since = self._windows_since_cut
            after_cut = _fraction(windows, since) if since >= 2 else None
            # Loss from before the last cut acted is no reason to cut again: within four
            # windows of a cut, only the windows after the first one since it count (the
            # first still carries what was in flight at the old rate).
            settled = long
            if since < _LONG_WINDOWS:
                settled = _fraction(windows, since - 1) if since >= 2 else 0.0
            self._on_loss(self._lost / self._expected, long, after_cut, settled, now_us)
            self._lost = self._expected = 0
            self._loss_window_start = now_us
        self._update(now_us)

    def on_receiver_report(self, fraction_lost: int, now_us: int) -> None:
        """An RR block's 8-bit fraction lost; used only without recent transport-cc
        (which sees the same losses sooner and per packet)."""
        if self._last_twcc_us is not None and now_us - self._last_twcc_us < _RR_AFTER_TWCC_US:
            return
        fraction = fraction_lost / 256  # an RR covers about a second: short and long
        after_cut = fraction if now_us - self._last_cut_us >= 2 * _LOSS_WINDOW_US else None
        settled = 0.0 if after_cut is None else fraction
        self._on_loss(fraction, fraction, after_cut, settled, now_us)
        self._update(now_us)

    def on_remb(self, bitrate_bps: int, now_us: int) -> None:
        """The subscriber's own receive-side estimate caps ours."""
        self.remb_bps = bitrate_bps
        self._update(now_us)

    def on_rtt(self, rtt_us: int) -> None:
        self.rtt_us = max(1_000, rtt_us)

    def on_probe_result(self, bps: int, now_us: int) -> bool:
        """A probe cluster showed the link carries `bps` (sfu/probe.py): the estimate
        rises to it at once, delay- and loss-based alike (GCC does the same); never
        lowers it. True if the estimate rose."""
        before = self.estimate_bps
        bps = min(bps, self.max_bps)
        rate = self.delay.rate
        if not rate.initialized or rate.bps < bps:
            if bps > rate.link.upper_bps():
                rate.link.reset()  # more than the capacity it knew: explore again
            rate.bps = float(bps)
            rate.initialized = True
        if bps > self._target:
            self._target = float(bps)
            ceiling = self._loss_ceiling
            if ceiling is not None and bps > _CEILING_SPAN * ceiling:
                self._loss_ceiling = None
        self._update(now_us)
        return self.estimate_bps > before

    @property
    def loss_clean(self) -> bool:
        """The last loss window had under 2% loss (or there has been none yet)."""
        return self._low_streak != 0

    # the loss controller

    def _on_loss(
        self, short: float, long: float, after_cut: float | None, settled: float, now_us: int
    ) -> None:
        """GCC's loss controller, plus rules for a server that does not probe.

        `short` is the loss of the last window (0.5 s), `long` of the last four (2 s):
        decisions that random loss could fake use the long one, reactions that must be
        quick the short one. `after_cut` covers the windows since the last cut (up to
        four, None until two): it judges whether that cut helped. `settled` is the long
        loss without what the last cut could not yet have prevented (the in-flight
        window after it): GCC's cut above 10% loss uses it, never going below 0.85x the
        delivered rate, so losses still arriving from before a cut do not spiral the
        estimate far below the link.

        Policers give loss and no delay, and GCC alone holds anywhere between 2% and 10%
        loss: at 1.1x a policed rate it would lose 9% for ever. So:
        - heavy loss (short > 20%, which random loss does not reach) drops to 0.9x the
          delivered rate at once;
        - loss right after we grew (short >= 2%, the target 2% above the one at the last
          clean window within 10 s, the sender using 85% of it) goes back to 0.97x the
          lower of that clean target and the delivered rate;
        - after such a cut, moderate loss keeps cutting while it clearly falls with the
          rate (a policer); as soon as it does not (the path's own loss) those cuts are
          given back, so random loss cannot ratchet the estimate down.
        Random loss at a steady rate, or while the sender is below the estimate (an SFU
        forwards what publishers send), still holds, as in GCC. Every cut holds growth
        for 2 s; growth resumes after two clean windows in a row, at 4% a second within
        10% of the rate that was cut (where the limit most likely is), 8% beyond.
        """
        self.loss_fraction = long
        self._low_streak = max(self._low_streak, 0) + 1 if short < _LOW_LOSS else 0
        delivered = self.delivered.rate_bps()
        sent = self.sent.rate_bps()
        can_decrease = (
            self._last_decrease_us is None
            or now_us - self._last_decrease_us >= _DECREASE_INTERVAL_US + self.rtt_us
        )
        if short > _HEAVY_LOSS and can_decrease:
            new = self._target * (1 - 0.5 * short)
            # What arrived over the end of the lossy window: over a whole second, or the
            # window's start, a policer's bucket emptying reads as capacity it does not have.
            recent = self.delivered.recent_bps(_RECENT_US // self.delivered.bin_us)
            if delivered is not None:
                new = min(new, 0.9 * min(delivered, recent or delivered))
            self._decrease_to(new, max(short, long), now_us)
            return
        if short < _LOW_LOSS:
            self._clean = (now_us, self._target)
            if self._low_streak >= 2:
                self._congestion_loss = None
                self._undo_to = None  # clean again at the lower rate: the cuts stand
            return
        clean = self._clean
        if (
            clean is not None
            and sent is not None
            and now_us - clean[0] < _CLEAN_MEMORY_US
            and self._target > _STEP_UP * clean[1]
            and sent >= _IN_USE * self._target
        ):
            # We grew since the last clean window, the sender used it, and now we lose:
            # congestion, most likely. Back to a little below where it was clean; the
            # next judgement undoes this if the loss does not fall.
            back = min(clean[1], delivered or math.inf)
            self._decrease_to(_BACKOFF * back, max(short, long), now_us, undoable=True)
            return
        if not can_decrease:
            return
        if settled > _HIGH_LOSS:
            # Never below what the link delivered meanwhile: it carried that much while
            # dropping the rest (a policer's rate, a full queue's drain).
            new = self._target * (1 - 0.5 * settled)
            if delivered is not None:
                new = max(new, _DELIVERED_FLOOR * delivered)
            if new < self._target:
                self._decrease_to(new, settled, now_us)
        elif self._congestion_loss is not None and after_cut is not None:
            before = self._congestion_loss
            if after_cut < _BETTER * before and before - after_cut > _NOISE:
                # Clearly less loss at a lower rate: the rate causes it, keep going down.
                new = self._target * (1 - 0.5 * after_cut)
                if delivered is not None:
                    new = max(new, _DELIVERED_FLOOR * delivered)
                if new < self._target:
                    self._decrease_to(new, after_cut, now_us, undoable=True)
            else:
                # No better at a lower rate: the loss is the path's own. Hold, and give
                # back the cuts that were only experiments.
                if self._undo_to is not None:
                    self._target = max(self._target, self._undo_to)
                self._congestion_loss = None
                self._undo_to = None

    def _decrease_to(
        self, target: float, fraction: float, now_us: int, undoable: bool = False
    ) -> None:
        self._last_loss_cut_us = now_us
        if not undoable:
            self._undo_to = None
        elif self._undo_to is None:
            self._undo_to = self._target  # the episode's first experiment: undo to here
        if self._loss_ceiling is None or self._target < self._loss_ceiling:
            self._loss_ceiling = self._target
        self._target = target
        self._last_decrease_us = now_us
        self._hold_until_us = now_us + _BACKOFF_HOLD_US
        self._clean = None
        self._congestion_loss = fraction
        self._last_cut_us = now_us
        self._windows_since_cut = 0

    def _update(self, now_us: int) -> None:
        target = self._target
        dt_s = 0.0 if self._last_update_us is None else (now_us - self._last_update_us) / 1e6
        self._last_update_us = now_us
        growing = self._low_streak < 0 or self._low_streak >= 2
        if growing and now_us >= self._hold_until_us:
            # 8% a second, compounded smoothly per update so a policed path is entered
            # gently rather than with one 8% step after each flat second; slower near
            # the rate where loss last cut us, which is where the limit most likely is.
            dt_s = min(dt_s, 1.0)
            ceiling = self._loss_ceiling
            if ceiling is not None and target > _CEILING_SPAN * ceiling:
                ceiling = self._loss_ceiling = None  # well past it: the path got better
            growth = _NEAR_CEILING_GROWTH if ceiling is not None else 1.08
            target = target * growth**dt_s + 1000 * dt_s
            delivered = self.delivered.rate_bps()
            if delivered is not None:
                target = max(target, float(delivered))
        limited_by = "loss"
        delay = self.delay.estimate_bps()
        if delay is not None and delay < target:
            target, limited_by = delay, "delay"
        if self.remb_bps is not None and self.remb_bps < target:
            target, limited_by = float(self.remb_bps), "remb"
        if target > self.max_bps:
            target, limited_by = float(self.max_bps), "max"
        if target < self.min_bps:
            target, limited_by = float(self.min_bps), "min"
        self._target = target
        self.limited_by = limited_by
        self.estimate_bps = int(target)

    @property
    def last_cut_us(self) -> int | None:
        """When congestion (delay or loss) last cut the estimate; None if never.

        Without probing, the estimate learns capacity only from traffic: until it has
        seen congestion it is a guess that grows 8% a second from `initial_bps` (or
        follows a faster sender), so a cap built from it is best applied once this is
        set, or with `initial_bps` at what the publisher is expected to send.
        """
        cuts = [t for t in (self._last_loss_cut_us, self.delay.rate.last_decrease_us) if t]
        return max(cuts) if cuts else None

    def stats(self) -> dict[str, object]:
        """For /stats: the estimate and what limits it."""
        delay = self.delay.estimate_bps()
        return {
            "estimateBps": self.estimate_bps,
            "limitedBy": self.limited_by,
            "delayBasedBps": None if delay is None else int(delay),
            "usage": self.delay.usage.value,
            "lossFraction": round(self.loss_fraction, 4),
            "deliveredBps": self.delivered.rate_bps(),
            "rembBps": self.remb_bps,
            "rttMs": self.rtt_us // 1000,
            "lastCutUs": self.last_cut_us,
        }


# --- receive side, REMB ----------------------------------------------------------------------


class RembEstimator:
    """aiortc's receive-side estimator, fed with socket arrival times.

    aiortc calls it with the time its own receiver task sees the packet, after the event
    loop has queued it: a busy loop then looks like a growing queue and the publisher is
    told to slow down. Passing the socket read time instead leaves only the network in it.
    """

    def __init__(self) -> None:
        self._estimator = RemoteBitrateEstimator()

    def on_packet(
        self, arrival_us: int, abs_send_time: int, payload_size: int, ssrc: int
    ) -> tuple[int, list[int]] | None:
        """(bitrate, SSRCs) when a REMB is due, else None."""
        return self._estimator.add(
            arrival_time_ms=arrival_us // 1000,
            abs_send_time=abs_send_time,
            payload_size=payload_size,
            ssrc=ssrc,
        )
