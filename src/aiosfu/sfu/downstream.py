"""One subscriber connection's downlink: what we sent it, what it says arrived, and the
bandwidth that leaves.

Every track a subscriber receives shares one transport (BUNDLE), so one `Downstream`
per subscriber connection numbers all its packets with one transport-wide sequence,
reads its transport-cc feedback, receiver-report loss and REMB, and keeps one estimate
for all its subscriptions. Who acts on the estimate is decided elsewhere (`sfu/follow.py`
for the publisher; simulcast layer choice later).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiosfu.sfu.bwe import SendSideBwe
from aiosfu.sfu.probe import PADDING_BYTES, Prober
from aiosfu.sfu.twcc import SendHistory, TransportFeedback

# What a packet costs on the wire beyond its payload: RTP header and extensions, SRTP
# tag, UDP and IPv4 headers. The estimator compares rates, so an even overhead is enough.
PACKET_OVERHEAD = 60
# How long a change of this estimate takes to show in what the subscriber receives: it
# travels to the publisher as REMB (sfu/follow.py), its encoder and pacer adapt, and the
# packets come through us. The estimator must not cut again before a cut can have acted
# (its round-trip time is that loop's), or it spirals far below the link.
FOLLOW_RESPONSE_US = 600_000
# The estimate limits the publisher from the time congestion cut it until it has gone
# this long without a cut and reached this much above the most the link delivered in
# the second after any cut (the capacity it showed while dropping the rest): an
# estimate that merely trails what is sent (the SFU does not probe) must not hold the
# sender back, and one that met a policer must not let go before it has been past that
# policer's rate unharmed.
CONGESTION_MEMORY_US = 3_000_000
RELEASE_ABOVE_CAPACITY = 1.25
CAPACITY_WINDOW_US = 1_000_000
# Retransmissions may take this share of the estimate, with half a second of burst: on
# a link that drops, repair must not become most of what is sent (libwebrtc caps it too).
RETRANSMISSION_SHARE = 0.3
RETRANSMISSION_BURST_S = 0.5
# A probe cluster's padding goes out in slots this far apart, each with what is due.
PROBE_SLOT_S = 0.005

# send_padding(size) -> whether a padding-only packet of `size` bytes went out
SendPadding = Callable[[int], bool]


def now_us() -> int:
    return int(time.monotonic() * 1_000_000)


class Downstream:
    def __init__(self, *, initial_bps: int = 1_000_000) -> None:
        self.history = SendHistory()
        self.estimator = SendSideBwe(initial_bps=initial_bps)
        self.estimator.on_rtt(FOLLOW_RESPONSE_US)
        self._rtx_tokens = 0.0  # bytes
        self._rtx_refilled_us = now_us()
        self.retransmissions_refused = 0
        self._sequence = 1
        self.packets_sent = 0
        self.feedbacks = 0
        self.remb_bps: int | None = None
        self.fraction_lost = 0.0  # from the subscriber's last receiver report
        self.closed = False
        self._cut_seen: int | None = None
        self._released_cut: int | None = None
        self._capacity = 0  # the most the link showed it carries, since limiting began
        self.prober = Prober()
        self._send_padding: SendPadding | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._probed: tuple[int, int] | None = None  # (when, bps) of the last probe result

    def attach_padding(self, send_padding: SendPadding) -> None:
        """A video track with RTX offers to carry the probes' padding (the first one kept)."""
        if self._send_padding is None:
            self._send_padding = send_padding

    def next_transport_sequence(self, payload_size: int) -> int:
        """The transport-wide sequence number for the packet about to go out; remembered
        with its send time for the feedback that will tell when it arrived."""
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        self.packets_sent += 1
        now = now_us()
        self.history.on_sent(sequence, now, payload_size + PACKET_OVERHEAD)
        if self.prober.active is not None:
            self.prober.on_sent(sequence, payload_size + PACKET_OVERHEAD, now)
        return sequence

    def allow_retransmission(self, payload_size: int) -> bool:
        """Take `payload_size` from the retransmission budget, if it has that much."""
        now = now_us()
        rate = self.estimator.estimate_bps * RETRANSMISSION_SHARE / 8  # bytes/s
        elapsed = (now - self._rtx_refilled_us) / 1e6
        self._rtx_refilled_us = now
        self._rtx_tokens = min(rate * RETRANSMISSION_BURST_S, self._rtx_tokens + rate * elapsed)
        size = payload_size + PACKET_OVERHEAD
        if self._rtx_tokens < size:
            self.retransmissions_refused += 1
            return False
        self._rtx_tokens -= size
        return True

    def on_transport_feedback(self, feedback: TransportFeedback) -> None:
        self.feedbacks += 1
        results = self.history.on_feedback(feedback)
        if results:
            now = now_us()
            estimator = self.estimator
            estimator.on_feedback(results, now)
            for cluster_bps, result in self.prober.on_results(results, now):
                # limited as the probe found it: the result may release it at once
                limited = self.limiting_bps is not None
                if result is not None:
                    self._probed = (now, result)
                raised = result is not None and estimator.on_probe_result(result, now)
                self.prober.controller.on_result(cluster_bps, result, raised, limited, now)
            self._probe(now)

    def _probe(self, now: int) -> None:
        """Start a probe cluster if one is due (sfu/probe.py), and send its padding."""
        if self._send_padding is None or self.closed or self._probe_timer is not None:
            return
        estimator = self.estimator
        cluster = self.prober.start(
            estimator.estimate_bps,
            self.limiting_bps is not None,
            estimator.last_cut_us,
            estimator.loss_clean,
            now,
        )
        if cluster is not None:
            self._send_probe_slot()

    def _send_probe_slot(self) -> None:
        self._probe_timer = None
        send_padding, prober = self._send_padding, self.prober
        if send_padding is None or self.closed:
            return
        due = prober.due(now_us())
        while due > 0:
            size = min(PADDING_BYTES, due)
            if not send_padding(size):
                prober.active = None  # nothing can carry it: give the cluster up
                prober.controller.on_abandoned()
                return
            prober.padding_packets += 1
            prober.padding_bytes += size
            due -= size + PACKET_OVERHEAD
            if prober.active is None:
                return  # that packet completed the cluster
        if prober.active is not None:
            self._probe_timer = asyncio.get_running_loop().call_later(
                PROBE_SLOT_S, self._send_probe_slot
            )

    def on_receiver_report(self, fraction_lost: int) -> None:
        """`fraction_lost` as on the wire (1/256 units), for one of our streams."""
        self.fraction_lost = fraction_lost / 256
        now = now_us()
        self.estimator.on_receiver_report(fraction_lost, now)

    def on_remb(self, bitrate: int) -> None:
        """A subscriber without transport-cc still says what it can take."""
        self.remb_bps = bitrate
        now = now_us()
        self.estimator.on_remb(bitrate, now)

    @property
    def estimate_bps(self) -> int | None:
        """The downlink's estimate; None until the subscriber has said anything."""
        if not self.feedbacks and self.remb_bps is None:
            return None
        return self.estimator.estimate_bps

    @property
    def limiting_bps(self) -> int | None:
        """The estimate when it is what limits this subscriber (it saw congestion lately),
        else None: an estimate that merely trails what is sent must not cap the sender."""
        estimate = self.estimate_bps
        if estimate is None:
            return None
        if self.estimator.limited_by == "remb":
            return estimate  # the subscriber said so itself
        cut = self.estimator.last_cut_us
        if cut is None or cut == self._released_cut:
            return None
        now = now_us()
        delivered = self.estimator.delivered.rate_bps() or 0
        if cut != self._cut_seen:
            self._cut_seen = cut
            self._capacity = max(self._capacity, delivered or estimate)
        elif now - cut < CAPACITY_WINDOW_US:
            # the most the link carried around a cut, while it was dropping the rest
            self._capacity = max(self._capacity, delivered)
        if (
            now - cut >= CONGESTION_MEMORY_US
            and estimate >= RELEASE_ABOVE_CAPACITY * self._capacity
            and (self._send_padding is None or self._probed_past(cut))
        ):
            self._released_cut, self._capacity = cut, 0
            return None
        return estimate

    def _probed_past(self, cut: int) -> bool:
        """A probe since the cut carried well past the capacity the link showed then.

        An estimate that grew while the publisher kept below it (Chromium sends well
        under a REMB ceiling) proves nothing about the link; a probe does. Where no
        track can carry probes, growth alone releases the publisher."""
        probed = self._probed
        return (
            probed is not None
            and probed[0] > cut
            and probed[1] >= RELEASE_ABOVE_CAPACITY * self._capacity
        )

    def stats(self) -> dict[str, object]:
        return {
            "estimateBps": self.estimate_bps,
            "limitingBps": self.limiting_bps,
            "rembBps": self.remb_bps,
            "fractionLost": round(self.fraction_lost, 4),
            "transportCcPacketsSent": self.packets_sent,
            "transportCcFeedbacks": self.feedbacks,
            "retransmissionsRefused": self.retransmissions_refused,
            **self.prober.stats(),
            **self.estimator.stats(),
        }
