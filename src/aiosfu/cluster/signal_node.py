"""`aiosfu signal`: one signaling node of a cluster.

The same HTTP/WebSocket front and seed-002 service as `aiosfu serve`, with the media plane
behind `ClusterSfu` (gRPC to the room's SFU node), rooms kept in step through Redis and
NATS (`RoomSync`), the classroom stage across nodes (`ClusterStage`), and the node itself
registered in etcd. Tokens and limits are checked as on `aiosfu serve`.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from aiosfu import __version__
from aiosfu.app import access_control, room_policy
from aiosfu.cluster.bus import NatsBus
from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.node_metrics import NodeLoadCollector
from aiosfu.cluster.nodes import CpuMeter, Load, NodeInfo
from aiosfu.cluster.registry import EtcdRegistry
from aiosfu.cluster.relay import ClusterRelay
from aiosfu.cluster.router import ClusterSfu
from aiosfu.cluster.stage_sync import ClusterStage
from aiosfu.cluster.store import RedisStore
from aiosfu.cluster.sync import RoomSync
from aiosfu.config import Config
from aiosfu.log import get_logger
from aiosfu.room import Rooms
from aiosfu.signal.http import CONFIG_KEY, SERVICE_KEY, add_routes, authorize_admin
from aiosfu.signal.metrics import Metrics, metrics_handler
from aiosfu.signal.relay import P2PRelay
from aiosfu.signal.service import SignalService
from aiosfu.signal.stage import Stage

log = get_logger("aiosfu.cluster.signal_node")


def build_signal_app(config: Config) -> web.Application:
    settings = config.signal_node
    ws = f"ws://{config.host}:{config.port}/ws"
    cpu = CpuMeter()
    service_box: list[SignalService] = []

    def load() -> Load:
        if not service_box:
            return Load()
        service = service_box[0]
        return Load(cpu=round(cpu.read(), 3), rooms=len(service.rooms), peers=len(service.sessions))

    me = NodeInfo(
        id=config.signal_id, kind="signal", version=__version__, addresses={"ws": ws},
        region=settings.region,
    )  # fmt: skip
    registry = EtcdRegistry(settings.etcd, me, load=load)
    sfu = ClusterSfu(registry, config.signal_id)
    recorded_rooms = set(config.record_rooms)
    service = SignalService(
        Rooms(room_policy(config)),
        sfu,
        config.signal_id,
        auto_record=lambda rid: config.record_all or rid in recorded_rooms,
        # Tokens are checked here as on `aiosfu serve`; the media sockets are the SFU's.
        access=access_control(config, sockets_per_peer_connection=0),
        audience_count_interval=config.room_count_audience_interval,
        audience_count_rate=config.room_count_audience_rate,
    )
    service.serves_sfu = sfu.serves
    relay = P2PRelay(service)
    stage = Stage(service)
    service_box.append(service)
    store = RedisStore(settings.redis, ttl=settings.state_ttl)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[SERVICE_KEY] = service
    add_routes(app)
    metrics = Metrics(service)
    metrics.registry.register(
        NodeLoadCollector(
            lambda: registry.me, lambda: [*registry.nodes("signal"), *registry.nodes("sfu")]
        )
    )
    app.router.add_get("/metrics", metrics_handler(metrics, authorize_admin))
    parts: dict[str, object] = {}

    async def sweep_forever() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval)
            owned = {room.rid for room in service.rooms} | registry.owned_rooms()
            try:
                await store.sweep(owned)
            except ClusterError as exc:
                log.warning("sweep-failed", reason=exc.reason)

    async def on_startup(app: web.Application) -> None:
        await registry.start()
        bus = await NatsBus.connect(settings.nats, name=config.signal_id)
        sync = RoomSync(
            service, store, bus, registry,
            refresh_every=settings.state_ttl / 3, peer_grace=settings.peer_grace,
        )  # fmt: skip
        sync.start()
        await ClusterRelay(service, relay, bus).start()
        await ClusterStage(stage, sync, bus).start()
        sfu.start()
        parts.update(bus=bus, sync=sync, sweeper=asyncio.ensure_future(sweep_forever()))
        log.info("signal-node-serving", id=config.signal_id, ws=ws, etcd=settings.etcd,
                 nats=settings.nats, redis=settings.redis)  # fmt: skip

    async def on_shutdown(app: web.Application) -> None:
        for session in list(service.sessions.values()):
            await session.close(1001, "server shutting down")
        sweeper = parts.get("sweeper")
        if isinstance(sweeper, asyncio.Task):
            sweeper.cancel()
        sync = parts.get("sync")
        if isinstance(sync, RoomSync):
            await sync.close()
        await sfu.close()
        bus = parts.get("bus")
        if isinstance(bus, NatsBus):
            with contextlib.suppress(Exception):
                await bus.close()
        await store.close()
        await registry.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
