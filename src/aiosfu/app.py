"""Wires one process: rooms, the embedded SFU, signaling and HTTP."""

from __future__ import annotations

from aiohttp import web

from aiosfu.config import Config
from aiosfu.log import get_logger
from aiosfu.room import RoomPolicy, Rooms
from aiosfu.sfu.ice import drop_unverified_datagrams, use_host_addresses
from aiosfu.sfu.local import LocalSfu, SfuSettings
from aiosfu.sfu.nat import nat_mapping
from aiosfu.signal.http import CONFIG_KEY, SERVICE_KEY, add_routes
from aiosfu.signal.relay import P2PRelay
from aiosfu.signal.service import SignalService

log = get_logger("aiosfu.app")


def build_local_sfu(config: Config) -> tuple[LocalSfu, list[str], dict[str, str]]:
    """The media plane of this process (also an SFU node's): with its ICE addresses and
    the public address announced for each."""
    ice_addresses = use_host_addresses(config.ice_ips)
    announced = nat_mapping(ice_addresses, config.public_ip, config.nat_1_1_mapping)
    drop_unverified_datagrams()
    sfu = LocalSfu(
        SfuSettings(
            sfuid=config.sfu_id,
            cache_size=config.packet_cache_size,
            keyframe_request_interval=config.keyframe_request_interval,
            keyframe_retry_interval=config.keyframe_retry_interval,
            datachannel_max_message_bytes=config.datachannel_max_message_bytes,
            datachannel_buffer_bytes=config.datachannel_buffer_bytes,
            record_dir=config.record_dir,
            nat_mapping=announced,
        )
    )
    return sfu, ice_addresses, announced


def room_policy(config: Config) -> RoomPolicy:
    return RoomPolicy(
        default_mode=config.room_mode,
        capacities={"sfu": config.sfu_room_capacity, "p2p": config.p2p_room_capacity},
        presets={rid: (room.mode, room.capacity) for rid, room in config.rooms.items()},
        announce_members_up_to=config.announce_members_up_to,
    )


def build_app(config: Config) -> web.Application:
    sfu, ice_addresses, announced = build_local_sfu(config)
    policy = room_policy(config)
    recorded_rooms = set(config.record_rooms)
    service = SignalService(
        Rooms(policy),
        sfu,
        config.signal_id,
        auto_record=lambda rid: config.record_all or rid in recorded_rooms,
    )
    P2PRelay(service)
    app = web.Application()
    app[CONFIG_KEY] = config
    app[SERVICE_KEY] = service
    add_routes(app)

    async def on_startup(app: web.Application) -> None:
        log.info(
            "serving",
            url=f"http://{config.host}:{config.port}/",
            ws=f"ws://{config.host}:{config.port}/ws",
            ice=",".join(ice_addresses),
            announced=",".join(f"{k}->{v}" for k, v in announced.items()) or "-",
        )

    async def on_shutdown(app: web.Application) -> None:
        for session in list(service.sessions.values()):
            await session.close(1001, "server shutting down")
        await sfu.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app
