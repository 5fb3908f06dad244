"""Probing a subscriber's downlink: short bursts above the estimate, to learn whether the
link carries more than the traffic it has carried.

An SFU forwards what publishers send, and a publisher capped to a subscriber's downlink
(sfu/follow.py) sends no more than the cap: without probing, an estimate cut by
congestion learns that the congestion is gone only by growing a few percent a second.
GCC's probe controller (libwebrtc's probe_controller and probe_bitrate_estimator, read
to learn) answers that with probe clusters, and so does this module:

- **When** (`ProbeController`): once at the start, at 3x the estimate; again, exponentially
  (at 2x the result), while a probe shows the link carried at least 70% of what it was
  sent at; and while congestion limits the estimate, once it has gone
  `LIMITED_INTERVAL_US` (8 s) without a cut or a probe, its last loss window clean (the
  limit may have lifted). A limited
  probe misleads on a policer (a token bucket passes a short burst at any rate): when
  congestion cuts the estimate within `MISLED_WITHIN_US` of a probe that raised it, the
  interval doubles, up to `MAX_LIMITED_INTERVAL_US`, so a lasting policer costs one short
  loss episode per interval. A probe the link refused is tried again after the same
  interval (it cost a few dropped packets). While probing is possible, only a probe
  releases the publisher from a limited estimate (sfu/downstream.py).
- **What** (`ProbeCluster`): at least 5 packets and 30 ms at the cluster's rate, media
  sent meanwhile included; the padding goes out as padding-only RTP on a video track's
  RTX stream (`RtpRewriter.padding`), each packet with the subscriber's transport-wide
  sequence number, so its feedback reports it.
- **The result** (`estimate`): from the transport-cc results of the cluster's
  packets, the rate they were sent at and the rate they arrived at; the lower of the two,
  and 0.95x the arrival rate when that is clearly below the send rate (the link is full).
  A cluster with more than half its packets lost, or too few reported, gives no result.

Nothing here reads a clock or a socket: times are passed in (µs), and the caller sends
what `Prober.due` says (sfu/downstream.py). No library does this for Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosfu.sfu.twcc import PacketResult

INITIAL_FACTOR = 3.0
FURTHER_FACTOR = 2.0
LIMITED_FACTOR = 2.0
FURTHER_IF = 0.7  # of the cluster's rate: a result this good probes on
MIN_PACKETS = 5
MIN_DURATION_US = 30_000
MAX_DURATION_US = 100_000  # a cluster that could not send its bytes in this long ends
RESULT_TIMEOUT_US = 1_000_000  # no result this long after a cluster's end: it failed
LIMITED_INTERVAL_US = 8_000_000
MAX_LIMITED_INTERVAL_US = 64_000_000
MISLED_WITHIN_US = 6_000_000
# Probing beyond this would measure rates no stream of a classroom uses.
MAX_PROBE_BPS = 6_000_000
# A padding-only packet carries at most 255 padding bytes (RFC 3550's one-byte count).
PADDING_BYTES = 255
# The send and arrival spans of a cluster are measured from its first to its last
# packet; spans shorter than this are taken as this (a burst sent at once).
MIN_SPAN_US = 1_000
LOSS_FAILS = 0.5
RECEIVE_BELOW_SEND = 0.9  # arrival rate this far below the send rate: the link is full
FULL_LINK_SHARE = 0.95


@dataclass
class ProbeCluster:
    """One burst at `target_bps`: the packets sent for it, matched by transport sequence."""

    id: int
    target_bps: int
    started_us: int
    min_bytes: int
    sent_bytes: int = 0
    sent_packets: int = 0
    ended_us: int | None = None
    sequences: set[int] = field(default_factory=set)  # the cluster's transport sequences
    # what feedback said of each (a loss later found received is replaced)
    results: dict[int, PacketResult] = field(default_factory=dict)

    def padding_due(self, now_us: int) -> int:
        """Bytes to send now to keep to the cluster's rate (media counts toward it)."""
        elapsed = max(0, now_us - self.started_us)
        on_schedule = self.target_bps * elapsed // 8_000_000
        return max(0, min(on_schedule, self.min_bytes) - self.sent_bytes)

    def complete(self, now_us: int) -> bool:
        return (
            self.sent_bytes >= self.min_bytes and self.sent_packets >= MIN_PACKETS
        ) or now_us - self.started_us >= MAX_DURATION_US


def estimate(results: list[PacketResult]) -> int | None:
    """What a cluster's packets show the link carries (bit/s), or None if they show
    nothing: too few arrived, or too many were lost."""
    received = [r for r in results if r.arrival_us is not None]
    if len(received) < MIN_PACKETS or len(received) < (1 - LOSS_FAILS) * len(results):
        return None
    by_send = sorted(results, key=lambda r: r.send_us)
    send_span = max(MIN_SPAN_US, by_send[-1].send_us - by_send[0].send_us)
    # The last packet sent took no time to send: the rate is the bytes before it.
    send_bps = sum(r.size for r in by_send[:-1]) * 8_000_000 / send_span
    by_arrival = sorted(received, key=lambda r: r.arrival_us or 0)
    first, last = by_arrival[0].arrival_us or 0, by_arrival[-1].arrival_us or 0
    receive_span = max(MIN_SPAN_US, last - first)
    # The first packet to arrive arrived at the start of the span: the rate is after it.
    receive_bps = sum(r.size for r in by_arrival[1:]) * 8_000_000 / receive_span
    if receive_bps < RECEIVE_BELOW_SEND * send_bps:
        return int(FULL_LINK_SHARE * receive_bps)
    return int(min(send_bps, receive_bps))


class ProbeController:
    """When to probe, and at what rate (see the module docstring)."""

    def __init__(self, *, max_bps: int = MAX_PROBE_BPS) -> None:
        self.max_bps = max_bps
        self.started = False
        self._further_bps: int | None = None  # the next exponential step, if due
        self._limited_interval_us = LIMITED_INTERVAL_US
        self._last_probe_us: int | None = None
        self._raised_at_us: int | None = None  # a limited probe raised the estimate then
        self._seen_cut_us: int | None = None
        self.misled = 0
        self._results = 0

    def next_target(
        self, estimate_bps: int, limited: bool, last_cut_us: int | None, clean: bool, now_us: int
    ) -> int | None:
        """The rate of the cluster to send now, or None. `limited`: congestion limits the
        estimate; `last_cut_us`: when congestion last cut it; `clean`: its last loss
        window had no loss to speak of."""
        if last_cut_us is not None and last_cut_us != self._seen_cut_us:
            self._seen_cut_us = last_cut_us
            self._further_bps = None  # congestion answered: stop climbing
            raised = self._raised_at_us
            if raised is not None and last_cut_us - raised < MISLED_WITHIN_US:
                # A probe passed but the rate it allowed did not: a policer's bucket.
                self.misled += 1
                self._limited_interval_us = min(
                    MAX_LIMITED_INTERVAL_US, 2 * self._limited_interval_us
                )
            self._raised_at_us = None
        if not self.started:
            self.started = True
            return self._target(INITIAL_FACTOR * estimate_bps, now_us)
        if self._further_bps is not None:
            target, self._further_bps = self._further_bps, None
            return self._target(target, now_us)
        if not limited or not clean or last_cut_us is None:
            return None
        quiet_since = max(last_cut_us, self._last_probe_us or 0)
        if now_us - quiet_since < self._limited_interval_us:
            return None
        return self._target(LIMITED_FACTOR * estimate_bps, now_us)

    def on_abandoned(self) -> None:
        """The cluster could not be sent (no track could carry padding yet): the
        initial probe is owed again."""
        if not self._results:
            self.started = False

    def _target(self, bps: float, now_us: int) -> int | None:
        self._last_probe_us = now_us
        target = int(min(bps, self.max_bps))
        return target if target > 0 else None

    def on_result(
        self, cluster_bps: int, result_bps: int | None, raised: bool, limited: bool, now_us: int
    ) -> None:
        """A cluster's result (None: it failed); `raised`: it lifted the estimate."""
        self._results += 1
        if result_bps is not None and result_bps >= FURTHER_IF * cluster_bps:
            further = int(FURTHER_FACTOR * result_bps)
            if further > cluster_bps and cluster_bps < self.max_bps:
                self._further_bps = min(further, self.max_bps)
        # A probe the link refused costs a few dropped packets and is tried again after
        # the same interval; one that passed and misled (see next_target) costs a loss
        # episode, and doubles it.
        if raised and limited:
            self._raised_at_us = now_us
        if raised and not limited:
            self._limited_interval_us = LIMITED_INTERVAL_US


class Prober:
    """One subscriber's probing: the cluster being sent, and the ones awaiting feedback.

    The caller asks `start(...)` whenever it has fresh feedback, sends `due(now)` bytes of
    padding (numbering each packet through `on_sent`, as media is), and hands every
    feedback's results to `on_results`, which returns finished clusters' estimates."""

    def __init__(self, controller: ProbeController | None = None) -> None:
        self.controller = controller or ProbeController()
        self.active: ProbeCluster | None = None
        self._waiting: list[ProbeCluster] = []
        self._next_id = 1
        self.clusters = 0
        self.padding_packets = 0
        self.padding_bytes = 0
        self.last_result_bps: int | None = None

    def start(
        self, estimate_bps: int, limited: bool, last_cut_us: int | None, clean: bool, now_us: int
    ) -> ProbeCluster | None:
        if self.active is not None or self._waiting:
            return None
        target = self.controller.next_target(estimate_bps, limited, last_cut_us, clean, now_us)
        if target is None:
            return None
        min_bytes = max(MIN_PACKETS * PADDING_BYTES, target * MIN_DURATION_US // 8_000_000)
        self.active = ProbeCluster(self._next_id, target, now_us, min_bytes)
        self._next_id += 1
        self.clusters += 1
        return self.active

    def on_sent(self, sequence: int, size: int, now_us: int) -> None:
        """Any packet numbered while a cluster is being sent (media or padding)."""
        cluster = self.active
        if cluster is None:
            return
        cluster.sequences.add(sequence)
        cluster.sent_bytes += size
        cluster.sent_packets += 1
        if cluster.complete(now_us):
            cluster.ended_us = now_us
            self._waiting.append(cluster)
            self.active = None

    def due(self, now_us: int) -> int:
        """Padding bytes to send now for the active cluster (0 if none)."""
        cluster = self.active
        if cluster is None:
            return 0
        if cluster.complete(now_us):
            cluster.ended_us = now_us
            self._waiting.append(cluster)
            self.active = None
            return 0
        due = cluster.padding_due(now_us)
        if due <= 0 and cluster.sent_bytes >= cluster.min_bytes:
            due = PADDING_BYTES  # enough bytes, too few packets
        return due

    def on_results(self, results: list[PacketResult], now_us: int) -> list[tuple[int, int | None]]:
        """Feed one feedback's results; (cluster rate, estimate or None) per cluster done."""
        done: list[tuple[int, int | None]] = []
        waiting = self._waiting
        if not waiting:
            return done
        for cluster in waiting:
            sequences, fates = cluster.sequences, cluster.results
            for r in results:
                if r.seq in sequences:
                    fates[r.seq] = r
        kept = []
        for cluster in waiting:
            ended = cluster.ended_us
            timed_out = ended is not None and now_us - ended > RESULT_TIMEOUT_US
            if len(cluster.results) >= len(cluster.sequences) or timed_out:
                result = estimate(list(cluster.results.values()))
                self.last_result_bps = result
                done.append((cluster.target_bps, result))
            else:
                kept.append(cluster)
        self._waiting = kept
        return done

    def stats(self) -> dict[str, object]:
        return {
            "probeClusters": self.clusters,
            "probePaddingPackets": self.padding_packets,
            "probePaddingBytes": self.padding_bytes,
            "probeResultBps": self.last_result_bps,
            "probeMisled": self.controller.misled,
        }
