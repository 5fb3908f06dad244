"""Wires one process: rooms, the embedded SFU, signaling and HTTP."""

from __future__ import annotations

from aiohttp import web

from aiosfu.config import Config
from aiosfu.ingest.workers import IngestWorkers
from aiosfu.log import get_logger
from aiosfu.room import RoomPolicy, Rooms
from aiosfu.sfu.ice import drop_unverified_datagrams, use_host_addresses, use_port_range
from aiosfu.sfu.local import LocalSfu, SfuSettings
from aiosfu.sfu.nat import nat_mapping
from aiosfu.signal import turn
from aiosfu.signal.access import AccessControl
from aiosfu.signal.api import ServerApi
from aiosfu.signal.auth import Authenticator
from aiosfu.signal.http import CONFIG_KEY, SERVICE_KEY, add_routes, authorize_admin
from aiosfu.signal.ingest_api import IngestApi
from aiosfu.signal.limits import Limits, fit_to_file_limit
from aiosfu.signal.metrics import Metrics, metrics_handler
from aiosfu.signal.relay import P2PRelay
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession
from aiosfu.signal.stage import Stage
from aiosfu.signal.webhooks import Webhooks
from aiosfu.signal.whip import add_whip_routes

log = get_logger("aiosfu.app")


def build_local_sfu(config: Config) -> tuple[LocalSfu, list[str], dict[str, str]]:
    """The media plane of this process (also an SFU node's): with its ICE addresses and
    the public address announced for each."""
    ice_addresses = use_host_addresses(config.ice_ips)
    use_port_range(config.ice_port_min, config.ice_port_max)
    announced = nat_mapping(ice_addresses, config.public_ip, config.nat_1_1_mapping)
    drop_unverified_datagrams()
    sfu = LocalSfu(
        SfuSettings(
            sfuid=config.sfu_id,
            cache_size=config.packet_cache_size,
            keyframe_request_interval=config.keyframe_request_interval,
            keyframe_retry_interval=config.keyframe_retry_interval,
            connect_timeout=config.connect_timeout,
            publisher_cap_floor=config.publisher_cap_floor,
            datachannel_max_message_bytes=config.datachannel_max_message_bytes,
            datachannel_buffer_bytes=config.datachannel_buffer_bytes,
            record_dir=config.record_dir,
            nat_mapping=announced,
        )
    )
    return sfu, ice_addresses, announced


def _own_ws_url(config: Config, secure: bool) -> str:
    """Where an ingest process started by this server joins it: its own WebSocket."""
    host = "127.0.0.1" if config.host in ("", "0.0.0.0") else config.host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    return f"{'wss' if secure else 'ws'}://{host}:{config.port}/ws"


def room_policy(config: Config) -> RoomPolicy:
    return RoomPolicy(
        default_mode=config.room_mode,
        capacities={"sfu": config.sfu_room_capacity, "p2p": config.p2p_room_capacity},
        presets={rid: (room.mode, room.capacity) for rid, room in config.rooms.items()},
        announce_members_up_to=config.announce_members_up_to,
    )


def access_control(config: Config, sockets_per_peer_connection: int) -> AccessControl:
    """Tokens and limits as configured: the same on `aiosfu serve` and every signal node."""
    auth = Authenticator({bizid: i.keys for bizid, i in config.institutions.items()})
    limits = fit_to_file_limit(
        Limits(
            requests_per_second=config.rate_limit,
            request_burst=config.rate_burst,
            publications_per_peer=config.max_publications_per_peer,
            subscriptions_per_peer=config.max_subscriptions_per_peer,
            rooms_per_peer=config.max_rooms_per_peer,
            members_per_room=config.max_room_members,
            peer_connections=config.max_peer_connections,
            connections=config.max_connections,
            offer_media_sections=config.max_offer_media,
        ),
        sockets_per_peer_connection=sockets_per_peer_connection,
    )
    return AccessControl(auth, limits)


def build_app(config: Config) -> web.Application:
    sfu, ice_addresses, announced = build_local_sfu(config)
    policy = room_policy(config)
    recorded_rooms = set(config.record_rooms)
    access = access_control(config, sockets_per_peer_connection=len(ice_addresses))
    auth = access.auth
    service = SignalService(
        Rooms(policy),
        sfu,
        config.signal_id,
        auto_record=lambda rid: config.record_all or rid in recorded_rooms,
        access=access,
        audience_count_interval=config.room_count_audience_interval,
        audience_count_rate=config.room_count_audience_rate,
    )
    if config.turn_urls and config.turn_secret:

        def turn_credentials(session: PeerSession, rid: str) -> dict[str, object]:
            servers = turn.ice_servers(
                config.ice_servers,
                config.turn_urls,
                config.turn_secret,
                session.uid,
                config.turn_ttl,
            )
            return {"iceServers": servers}

        service.join_extras.append(turn_credentials)
    P2PRelay(service)
    stage = Stage(service)
    webhooks = Webhooks(
        {
            bizid: (i.webhooks, *next(iter(i.keys.items())))
            for bizid, i in config.institutions.items()
            if i.webhooks and i.keys
        }
    )
    service.event_listeners.append(webhooks.on_event)
    service.stat_sources["webhooks"] = webhooks.stats
    secure = bool(config.tls_cert or config.tls_self_signed)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[SERVICE_KEY] = service
    add_routes(app)
    api = ServerApi(service, stage)
    api.add_routes(app)
    ingests = IngestWorkers(_own_ws_url(config, secure), ice_ips=config.ice_ips,
                            limit=config.max_ingests)  # fmt: skip
    IngestApi(api, ingests).add_routes(app)
    # After every extension has registered its methods, so all of them are counted.
    app.router.add_get("/metrics", metrics_handler(Metrics(service), authorize_admin))
    add_whip_routes(app, service)

    async def on_startup(app: web.Application) -> None:
        log.info(
            "serving",
            url=f"{'https' if secure else 'http'}://{config.host}:{config.port}/",
            ws=f"{'wss' if secure else 'ws'}://{config.host}:{config.port}/ws",
            ice=",".join(ice_addresses),
            announced=",".join(f"{k}->{v}" for k, v in announced.items()) or "-",
        )
        if auth.open:
            log.warning(
                "open-mode",
                detail="no API keys configured: anyone may join as anyone (development only)",
            )
        else:
            log.info("tokens-required", institutions=len(config.institutions), keys=len(auth.keys))

    async def on_shutdown(app: web.Application) -> None:
        for session in list(service.sessions.values()):
            await session.close(1001, "server shutting down")
        await ingests.close()
        await sfu.close()
        await webhooks.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
