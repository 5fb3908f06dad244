"""`aiosfu signal` and `aiosfu sfu`: the two kinds of cluster node (docs/cluster.md)."""

from __future__ import annotations

import argparse
from typing import Any

from aiosfu import __version__, eventloop, heap
from aiosfu.config import Config, load_config, port_range, port_range_overrides
from aiosfu.log import configure
from aiosfu.signal import http_guard


def _load(args: argparse.Namespace, top: dict[str, Any], section: str) -> Config:
    config = load_config(args.config, overrides={**top, "log_level": args.log_level})
    values = {k: v for k, v in vars(args).items() if k.startswith("node_") and v is not None}
    if values:
        merged = getattr(config, section).model_dump() | {k[5:]: v for k, v in values.items()}
        config = config.model_copy(update={section: type(getattr(config, section))(**merged)})
    configure(config.log_level)
    return config


def _signal(args: argparse.Namespace) -> None:
    config = _load(
        args, {"host": args.host, "port": args.port, "signal_id": args.id}, "signal_node"
    )
    from aiosfu.cluster.signal_node import build_signal_app  # after logging is configured

    app = build_signal_app(config)
    print(
        f"aiosfu signal {config.signal_id} ({__version__}): ws://{config.host}:{config.port}/ws",
        flush=True,
    )
    heap.settle()
    http_guard.run_app(
        app, config.host, config.port, config.http_guard_limits(), loop=config.event_loop
    )


def _sfu(args: argparse.Namespace) -> None:
    overrides = {"sfu_id": args.id, "ice_ips": args.ice_ip, **port_range_overrides(args.ice_ports)}
    config = _load(args, overrides, "sfu_node")
    from aiosfu.cluster.sfu_node import run_sfu_node

    heap.settle()
    eventloop.run(run_sfu_node(config), config.event_loop)


def _up(args: argparse.Namespace) -> None:
    from aiosfu.cluster.up import up

    up(base_port=args.port)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (see config.sample.toml)")
    parser.add_argument("--id", help="this node's id, unique in the cluster")
    parser.add_argument("--etcd", dest="node_etcd", metavar="URL", help="etcd client URL")
    parser.add_argument("--region", dest="node_region", help="where this node runs")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def add_cluster_parsers(commands: Any) -> None:
    signal = commands.add_parser(
        "signal", help="a cluster's signaling node: WebSocket at /ws, SFU nodes over gRPC"
    )
    _common(signal)
    signal.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    signal.add_argument("--port", type=int, help="HTTP listen port (default 8080)")
    signal.add_argument("--nats", dest="node_nats", metavar="URL", help="NATS server URL")
    signal.add_argument("--redis", dest="node_redis", metavar="URL", help="Redis URL")
    signal.set_defaults(func=_signal)

    sfu = commands.add_parser("sfu", help="a cluster's media node: the SFU served over gRPC")
    _common(sfu)
    sfu.add_argument("--grpc-host", dest="node_grpc_host", help="gRPC listen address")
    sfu.add_argument("--grpc-port", dest="node_grpc_port", type=int, help="gRPC port (0: any)")
    sfu.add_argument(
        "--ice-ip", action="append", metavar="IP", help="offer ICE host candidates on this address"
    )
    sfu.add_argument(
        "--ice-ports", type=port_range, metavar="LOW-HIGH",
        help="bind ICE host candidates on UDP ports in this range only, e.g. 50000-59999",
    )  # fmt: skip
    sfu.add_argument(
        "--metrics-port", dest="node_metrics_port", type=int,
        help="serve this node's load as Prometheus /metrics on this port (default: off)",
    )  # fmt: skip
    sfu.add_argument("--max-rooms", dest="node_max_rooms", type=int, help="rooms at most")
    sfu.add_argument(
        "--drain-timeout", dest="node_drain_timeout", type=float,
        help="seconds a draining node keeps its rooms before it exits",
    )  # fmt: skip
    sfu.set_defaults(func=_sfu)

    cluster = commands.add_parser("cluster", help="a whole cluster on this machine")
    actions = cluster.add_subparsers(dest="action", required=True)
    up = actions.add_parser(
        "up", help="start etcd, NATS, Redis, two SFU and two signal nodes; Ctrl-C stops them"
    )
    up.add_argument("--port", type=int, default=8080, help="first signal node's HTTP port")
    up.set_defaults(func=_up)
