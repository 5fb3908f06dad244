"""`aiosfu` command line."""

from __future__ import annotations

import argparse
import sys

from aiohttp import web

from aiosfu import __version__
from aiosfu.cluster.cli import add_cluster_parsers
from aiosfu.config import load_config
from aiosfu.log import configure
from aiosfu.peer_cli import add_peer_parser


def _serve(args: argparse.Namespace) -> None:
    config = load_config(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "ice_ips": args.ice_ip,
            "public_ip": args.public_ip,
            "keepalive_timeout": args.keepalive_timeout,
            "log_level": args.log_level,
            "record_dir": args.record_dir,
            "record_all": args.record_all,
        },
    )
    configure(config.log_level)
    from aiosfu.app import build_app  # after logging is configured

    app = build_app(config)
    print(
        f"aiosfu {__version__}: open http://{config.host}:{config.port}/ in two browser tabs",
        flush=True,
    )
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiosfu", description=__doc__)
    parser.add_argument("--version", action="version", version=f"aiosfu {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="serve HTTP, WebSocket signaling at /ws and media on UDP, in one process"
    )
    serve.add_argument("--host", help="HTTP listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP listen port (default 8080)")
    serve.add_argument(
        "--ice-ip",
        action="append",
        metavar="IP",
        help="offer ICE host candidates on this address only (repeatable; loopback allowed)",
    )
    serve.add_argument(
        "--public-ip",
        metavar="IP",
        help="behind 1:1 NAT: bind the ICE addresses, announce this public one in candidates",
    )
    serve.add_argument("--config", help="TOML config file (see config.sample.toml)")
    serve.add_argument(
        "--keepalive-timeout", type=float, help="seconds before a silent peer is removed"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--record-dir", metavar="DIR", help="where recordings are written")
    serve.add_argument(
        "--record-all",
        action="store_true",
        default=None,
        help="record every publication from the moment it is published",
    )
    serve.set_defaults(func=_serve)
    add_peer_parser(commands)
    add_cluster_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:
        print(f"aiosfu: {exc}", file=sys.stderr)
        sys.exit(2)
