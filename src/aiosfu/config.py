"""Configuration: defaults here, then a TOML file, then `AIOSFU_*` env vars, then flags.

`config.sample.toml` next to this module documents every setting with its default;
`tests/test_config.py` keeps the two in step.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiosfu.eventloop import EventLoop
from aiosfu.signal.http_guard import GuardLimits

SAMPLE_PATH = Path(__file__).with_name("config.sample.toml")


class RoomPreset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["sfu", "p2p"] = "sfu"
    capacity: int = Field(0, ge=0)


class Institution(BaseModel):
    """A customer of the deployment (`bizid`): its API keys, each with its secret."""

    model_config = ConfigDict(extra="forbid")

    keys: dict[str, str] = Field(default_factory=dict)
    # Where its rooms' events are POSTed, signed with its first key (docs/security.md).
    webhooks: list[str] = Field(default_factory=list)


class SignalNodeConfig(BaseModel):
    """`aiosfu signal` (docs/cluster.md): a signaling node of a cluster."""

    model_config = ConfigDict(extra="forbid")

    etcd: str = "http://127.0.0.1:2379"
    nats: str = "nats://127.0.0.1:4222"
    redis: str = "redis://127.0.0.1:6379/0"
    region: str = ""
    state_ttl: float = Field(default=30.0, ge=3)
    peer_grace: float = Field(default=20.0, ge=0)
    sweep_interval: float = Field(default=30.0, gt=0)


class SfuNodeConfig(BaseModel):
    """`aiosfu sfu` (docs/cluster.md): a media node of a cluster."""

    model_config = ConfigDict(extra="forbid")

    etcd: str = "http://127.0.0.1:2379"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    region: str = ""
    max_rooms: int = Field(default=0, ge=0)
    drain_timeout: float = Field(default=600.0, ge=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: no /metrics listener


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    ice_ips: list[str] = Field(default_factory=list)
    public_ip: str = ""
    nat_1_1_mapping: dict[str, str] = Field(default_factory=dict)
    ice_port_min: int = Field(0, ge=0, le=65535)
    ice_port_max: int = Field(0, ge=0, le=65535)
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    signal_id: str = "signal-1"
    sfu_id: str = "sfu-1"
    keepalive_timeout: float = Field(30.0, gt=0)
    event_loop: EventLoop = "uvloop"
    lean_upgrade: bool = True
    max_frame_bytes: int = Field(262_144, ge=1024)
    keyframe_request_interval: float = Field(0.5, ge=0)
    keyframe_retry_interval: float = Field(1.0, gt=0)
    connect_timeout: float = Field(15.0, gt=0)
    packet_cache_size: int = Field(512, ge=16)
    publisher_cap_floor: int = Field(300_000, ge=0)
    room_mode: Literal["sfu", "p2p"] = "sfu"
    sfu_room_capacity: int = Field(0, ge=0)
    p2p_room_capacity: int = Field(6, ge=0)
    rooms: dict[str, RoomPreset] = Field(default_factory=dict)
    announce_members_up_to: int = Field(100, ge=0)
    room_count_audience_interval: float = Field(5.0, ge=1.0)
    room_count_audience_rate: float = Field(200.0, gt=0)
    datachannel_max_message_bytes: int = Field(16384, ge=256, le=262_144)
    datachannel_buffer_bytes: int = Field(1_048_576, ge=4096)
    record_dir: str = "recordings"
    record_all: bool = False
    record_rooms: list[str] = Field(default_factory=list)
    # Access control (docs/security.md).
    institutions: dict[str, Institution] = Field(default_factory=dict)
    allowed_origins: list[str] = Field(default_factory=list)
    rate_limit: float = Field(50.0, gt=0)
    rate_burst: int = Field(200, ge=1)
    max_publications_per_peer: int = Field(8, ge=1)
    max_subscriptions_per_peer: int = Field(500, ge=1)
    max_rooms_per_peer: int = Field(8, ge=1)
    max_room_members: int = Field(2000, ge=1)
    max_peer_connections: int = Field(4000, ge=1)
    max_connections: int = Field(4000, ge=1)
    max_offer_media: int = Field(16, ge=1, le=256)
    max_ingests: int = Field(16, ge=0)
    http_header_timeout: float = Field(10.0, gt=0)
    http_max_pending: int = Field(512, ge=1)
    http_max_pending_per_ip: int = Field(64, ge=1)
    turn_urls: list[str] = Field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = Field(86400, ge=60)
    tls_cert: str = ""
    tls_key: str = ""
    tls_self_signed: bool = False
    log_level: str = "info"
    signal_node: SignalNodeConfig = Field(default_factory=lambda: SignalNodeConfig())
    sfu_node: SfuNodeConfig = Field(default_factory=lambda: SfuNodeConfig())

    log_format: Literal["kv", "json"] = "kv"

    @model_validator(mode="after")
    def _tls_pair(self) -> Config:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @model_validator(mode="after")
    def _ice_ports(self) -> Config:
        low, high = self.ice_port_min, self.ice_port_max
        if (low or high) and not 1 <= low <= high:
            raise ValueError(
                f"ice_port_min..ice_port_max must be 1 <= min <= max, not {low}..{high}"
            )
        return self

    def http_guard_limits(self) -> GuardLimits:
        return GuardLimits(
            header_timeout=self.http_header_timeout,
            max_pending=self.http_max_pending,
            max_pending_per_ip=self.http_max_pending_per_ip,
        )


# Env vars taken as they are, never parsed as JSON (a room directory named "2024" stays text).
_PLAIN_STRINGS = (
    "host",
    "public_ip",
    "signal_id",
    "sfu_id",
    "record_dir",
    "turn_secret",
    "tls_cert",
    "tls_key",
)


def port_range(text: str) -> tuple[int, int]:
    """`50000-50100` (both ends included) as (50000, 50100); ValueError otherwise."""
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"an ICE port range is LOW-HIGH, e.g. 50000-50100, not {text!r}")
    return int(low), int(high)


def port_range_overrides(ports: tuple[int, int] | None) -> dict[str, int | None]:
    """`--ice-ports` as config overrides (None: leave the config's)."""
    low, high = ports if ports is not None else (None, None)
    return {"ice_port_min": low, "ice_port_max": high}


def _env_value(raw: str) -> Any:
    """Env vars carry strings; lists and dicts are given as JSON (`'["127.0.0.1"]'`)."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def load_config(
    path: str | Path | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            values.update(tomllib.load(f))
    environ = os.environ if env is None else env
    for name in Config.model_fields:
        raw = environ.get(f"AIOSFU_{name.upper()}")
        if raw is not None:
            values[name] = _env_value(raw) if name not in _PLAIN_STRINGS else raw
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Config(**values)
