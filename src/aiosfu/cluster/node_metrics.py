"""Per-node load in Prometheus: what each node writes into its etcd registry record.

Every node exports its own record (the load it last wrote, not a fresh reading: CPU and
bytes/s are rates between two reads, and a scrape must not shorten the registry's
interval); a signal node adds every other fresh node it knows from the registry, so one
scrape of any signal node shows the whole cluster as placement sees it. The series carry
`node` (its id) and `kind` (`signal` or `sfu`); several signal nodes report the same
node, so a dashboard takes `max by (node, kind)`.

An SFU node serves gRPC only; `--metrics-port` gives it a small HTTP listener for
`/metrics` (on its gRPC host, an internal address like the gRPC port: unauthenticated,
as it shows load and no room or participant).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aiosfu.cluster.nodes import NodeInfo

# (metric, help, the Load field)
_LOAD = (
    ("aiosfu_node_cpu", "CPU in use, as a share of one core", "cpu"),
    ("aiosfu_node_rooms", "rooms on the node", "rooms"),
    ("aiosfu_node_peers", "peers on the node (connections, or media transports' owners)", "peers"),
    ("aiosfu_node_tracks", "tracks the node forwards (received and sent)", "tracks"),
    ("aiosfu_node_bytes_per_second", "media bytes per second received", "bytes_per_second"),
)
LABELS = ["node", "kind"]


class NodeLoadCollector(Collector):
    def __init__(
        self,
        own: Callable[[], NodeInfo | None],
        known: Callable[[], Iterable[NodeInfo]] = tuple,
    ) -> None:
        self.own = own
        self.known = known

    def nodes(self) -> list[NodeInfo]:
        found = {n.id: n for n in self.known()}
        me = self.own()
        if me is not None:
            found[me.id] = me  # our own record is the freshest copy of it
        return sorted(found.values(), key=lambda n: (n.kind, n.id))

    def collect(self) -> Iterator[Metric]:
        nodes = self.nodes()
        now = time.time()
        for name, help_text, field in _LOAD:
            family = GaugeMetricFamily(name, help_text, labels=LABELS)
            for node in nodes:
                family.add_metric([node.id, node.kind], float(getattr(node.load, field)))
            yield family
        draining = GaugeMetricFamily(
            "aiosfu_node_draining", "1 while the node drains (takes no new room)", labels=LABELS
        )
        age = GaugeMetricFamily(
            "aiosfu_node_load_age_seconds", "seconds since the node wrote its load", labels=LABELS
        )
        info = GaugeMetricFamily(
            "aiosfu_node_info", "its version and region", labels=[*LABELS, "version", "region"]
        )
        for node in nodes:
            draining.add_metric([node.id, node.kind], 1.0 if node.state == "draining" else 0.0)
            age.add_metric([node.id, node.kind], max(now - node.updated_at, 0.0))
            info.add_metric([node.id, node.kind, node.version, node.region], 1.0)
        yield from (draining, age, info)


async def start_metrics_listener(
    host: str, port: int, own: Callable[[], NodeInfo | None]
) -> web.AppRunner:
    """An SFU node's `/metrics`: its own load."""
    registry = CollectorRegistry()
    registry.register(NodeLoadCollector(own))

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
