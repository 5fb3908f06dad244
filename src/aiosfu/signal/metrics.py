"""Prometheus `/metrics`: the server's state and traffic, read from `stats()` at scrape time.

Nothing here runs per packet: the media plane already counts packets, bytes, NACKs and
keyframe requests for /stats, and a scrape turns those counts into metric families. Only
signaling requests are counted as they happen (one increment per request).

The media plane's counters live on its transports and vanish with them; a Prometheus
counter must never go down, so `_Running` keeps what ended streams had counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from aiosfu.contract import CodedError
from aiosfu.signal.service import Handler, SignalService
from aiosfu.signal.session import PeerSession

# Downlink estimates in bits per second: from a phone on a poor link to a wired desktop.
DOWNLINK_BUCKETS = (100e3, 250e3, 500e3, 1e6, 2e6, 4e6, 8e6, 16e6)
LOSS_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)

# (metric suffix, help, where: "producer" or "consumer", the stats key)
_TRAFFIC = (
    ("packets_in", "RTP packets received from publishers", "producer", "packetsIn"),
    ("bytes_in", "RTP payload bytes received from publishers", "producer", "bytesIn"),
    ("packets_out", "RTP packets forwarded to subscribers", "consumer", "packetsOut"),
    ("bytes_out", "RTP bytes forwarded to subscribers", "consumer", "bytesOut"),
    ("packets_lost", "RTP packets publishers sent that never arrived", "producer", "packetsLost"),
    ("nacks_received", "NACKs received from subscribers", "consumer", "nacksReceived"),
    ("nacks_sent", "NACKs sent to publishers", "producer", "retransmissionRequestsSent"),
    ("retransmitted_packets", "packets resent on a NACK", "consumer", "retransmitted"),
    (
        "plis_received",
        "keyframe requests (PLI/FIR) from subscribers",
        "consumer",
        "keyframeRequestsReceived",
    ),
    ("plis_sent", "keyframe requests (PLI) sent to publishers", "producer", "keyframeRequestsSent"),
)


class _Running:
    """A monotonic total over counters that belong to objects which come and go."""

    def __init__(self) -> None:
        self.retired = 0.0
        self.last: dict[tuple[str, ...], float] = {}

    def update(self, current: dict[tuple[str, ...], float]) -> float:
        for key in self.last.keys() - current.keys():
            self.retired += self.last[key]
        self.last = current
        return self.retired + sum(current.values())


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class ServerCollector(Collector):
    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.running = {(name, kind): _Running() for name, *_ in _TRAFFIC for kind in KINDS}
        # The media plane's stats, read (asynchronously: in a cluster it is a gRPC call)
        # just before each scrape renders; prometheus-client collects synchronously.
        self.sfu_stats: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        signal = self.service.stats()
        sfu = self.sfu_stats
        rooms: dict[str, Any] = signal.get("rooms", {})
        yield _gauge("aiosfu_rooms", "rooms open", len(rooms))
        yield _gauge(
            "aiosfu_participants",
            "members of rooms",
            sum(len(r.get("members", ())) for r in rooms.values()),
        )
        yield _gauge("aiosfu_connections", "signaling connections open", signal.get("peers", 0))
        yield _gauge(
            "aiosfu_publications",
            "publications in rooms",
            sum(len(r.get("publications", ())) for r in rooms.values()),
        )
        yield _gauge(
            "aiosfu_subscriptions",
            "subscriptions in rooms",
            sum(r.get("subscriptions", 0) for r in rooms.values()),
        )
        yield _gauge("aiosfu_recordings", "recordings running", len(sfu.get("recordings", {})))
        yield from self._traffic(sfu)
        subscriptions = list(sfu.get("subscriptions", {}).values())
        downstream = [s.get("downstream") or {} for s in subscriptions]
        yield _gauge_histogram(
            "aiosfu_downlink_estimate_bps",
            "subscribers' estimated downlink bandwidth, bits per second",
            DOWNLINK_BUCKETS,
            [v for d in downstream if (v := _number(d.get("estimateBps"))) is not None],
        )
        yield _gauge_histogram(
            "aiosfu_downlink_loss_ratio",
            "fraction of packets lost on the way to each subscriber (receiver reports)",
            LOSS_BUCKETS,
            [v for d in downstream if (v := _number(d.get("fractionLost"))) is not None],
        )

    def _traffic(self, sfu: dict[str, Any]) -> Iterator[Metric]:
        sources: dict[str, list[tuple[tuple[str, ...], dict[str, Any]]]] = {
            "producer": [
                ((mid, str(i)), p)
                for mid, t in sfu.get("publications", {}).items()
                for i, p in enumerate(t.get("producers", ()))
            ],
            "consumer": [
                ((sid, str(i)), c)
                for sid, t in sfu.get("subscriptions", {}).items()
                for i, c in enumerate(t.get("consumers", ()))
            ],
        }
        for name, help_text, where, key in _TRAFFIC:
            family = CounterMetricFamily(f"aiosfu_{name}", help_text, labels=["kind"])
            for kind in KINDS:
                current = {
                    ident: value
                    for ident, stats in sources[where]
                    if stats.get("kind") == kind and (value := _number(stats.get(key))) is not None
                }
                family.add_metric([kind], self.running[(name, kind)].update(current))
            yield family


KINDS = ("audio", "video")


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def _gauge_histogram(
    name: str, help_text: str, bounds: Iterable[float], values: list[float]
) -> GaugeHistogramMetricFamily:
    buckets = [(_bound(b), float(sum(1 for v in values if v <= b))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    return GaugeHistogramMetricFamily(name, help_text, buckets=buckets, gsum_value=sum(values))


def _bound(b: float) -> str:
    return str(int(b)) if b >= 1 else str(b)


class Metrics:
    """The registry one server exports; `count_requests` wraps the signaling handlers."""

    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self.collector = ServerCollector(service)
        self.registry.register(self.collector)
        self.requests = Counter(
            "aiosfu_signaling_requests",
            "signaling requests handled, by method and result (ok or the error code)",
            ["method", "result"],
            registry=self.registry,
        )
        for method, (model, handler) in list(service.handlers.items()):
            service.handlers[method] = (model, self._counted(method, handler))

    def _counted(self, method: str, handler: Handler) -> Handler:
        requests = self.requests
        ok = requests.labels(method, "ok")  # looked up once: most requests succeed

        async def counted(session: PeerSession, data: Any) -> dict[str, Any]:
            try:
                result = await handler(session, data)
            except CodedError as exc:
                requests.labels(method, str(exc.code)).inc()
                raise
            except Exception:
                requests.labels(method, "error").inc()
                raise
            ok.inc()
            return result

        return counted

    async def render(self) -> bytes:
        self.collector.sfu_stats = media_plane(await self.service.sfu.stats())
        return generate_latest(self.registry)


def media_plane(stats: dict[str, Any]) -> dict[str, Any]:
    """One media plane's stats; a cluster's (`{"nodes": {sfuid: stats}}`) as one, since
    stream and subscription ids are unique across its nodes."""
    nodes = stats.get("nodes")
    if not isinstance(nodes, dict):
        return stats
    merged: dict[str, Any] = {"publications": {}, "subscriptions": {}, "recordings": {}}
    for node in nodes.values():
        for key, into in merged.items():
            part = node.get(key) if isinstance(node, dict) else None
            if isinstance(part, dict):
                into.update(part)
    return merged


def metrics_handler(
    metrics: Metrics, authorize: Callable[[web.Request], None]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        authorize(request)
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler
