"""`aiosfu sfu`: one media node of a cluster.

It runs the embedded media plane (`LocalSfu`), serves it over gRPC and registers in etcd
with its load. SIGTERM starts draining: the node says `draining` (placement skips it),
keeps its rooms until they are empty or `drain_timeout` passes, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from aiosfu import __version__
from aiosfu.app import build_local_sfu
from aiosfu.cluster.node_metrics import start_metrics_listener
from aiosfu.cluster.nodes import CpuMeter, Load, NodeInfo
from aiosfu.cluster.registry import EtcdRegistry
from aiosfu.cluster.sfu_server import start_server
from aiosfu.config import Config
from aiosfu.log import get_logger
from aiosfu.sfu.local import LocalSfu, PublisherTransport, SubscriberTransport

log = get_logger("aiosfu.cluster.sfu_node")


class LoadMeter:
    """What the node carries, for placement (nodes.Load)."""

    def __init__(self, sfu: LocalSfu) -> None:
        self.sfu = sfu
        self.cpu = CpuMeter()
        self._bytes = (time.monotonic(), 0)

    def _bytes_in(self) -> int:
        return sum(p.bytes_in for t in self.sfu.publishers.values() for p in t.producers)

    def read(self) -> Load:
        transports: list[PublisherTransport | SubscriberTransport] = [
            *self.sfu.publishers.values(),
            *self.sfu.subscribers.values(),
        ]
        now, total = time.monotonic(), self._bytes_in()
        then, was = self._bytes
        self._bytes = (now, total)
        rate = max(total - was, 0) / (now - then) if now > then else 0.0
        return Load(
            cpu=round(self.cpu.read(), 3),
            rooms=len({t.rid for t in transports}),
            peers=len({(t.rid, t.uid) for t in transports}),
            tracks=sum(len(t.producers) for t in self.sfu.publishers.values())
            + sum(len(t.consumers) for t in self.sfu.subscribers.values()),
            bytes_per_second=round(rate, 1),
        )


async def run_sfu_node(config: Config, stop: asyncio.Event | None = None) -> None:
    settings = config.sfu_node
    sfu, ice_addresses, announced = build_local_sfu(config)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    server, servicer, port = await start_server(sfu, address)
    grpc_address = f"{settings.grpc_host}:{port}"
    meter = LoadMeter(sfu)
    me = NodeInfo(
        id=config.sfu_id,
        kind="sfu",
        version=__version__,
        addresses={"grpc": grpc_address, "ice": list(announced.values()) or ice_addresses},
        region=settings.region,
        max_rooms=settings.max_rooms,
    )
    registry = EtcdRegistry(settings.etcd, me, load=meter.read)
    await registry.start()
    metrics = None
    if settings.metrics_port:
        metrics = await start_metrics_listener(
            settings.grpc_host, settings.metrics_port, lambda: registry.me
        )
    log.info("sfu-node-serving", id=config.sfu_id, grpc=grpc_address, etcd=settings.etcd)
    print(f"aiosfu sfu {config.sfu_id}: gRPC on {grpc_address}", flush=True)

    stop = stop or asyncio.Event()
    draining = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, draining.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(draining.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if draining.is_set() and not stop.is_set():
            await _drain(registry, sfu, settings.drain_timeout, stop)
    finally:
        log.info("sfu-node-stopping", id=config.sfu_id)
        if metrics is not None:
            await metrics.cleanup()
        await registry.close()
        await servicer.close()
        await server.stop(1)
        await sfu.close()


async def _drain(
    registry: EtcdRegistry, sfu: LocalSfu, timeout: float, stop: asyncio.Event
) -> None:
    await registry.set_state("draining")
    log.info("sfu-node-draining", rooms=len({t.rid for t in sfu.publishers.values()}))
    deadline = time.monotonic() + timeout
    while (sfu.publishers or sfu.subscribers) and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if stop.is_set():
            return
    log.info("sfu-node-drained", left=len(sfu.publishers) + len(sfu.subscribers))
