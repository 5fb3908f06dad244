"""`aiosfu` command line."""

from __future__ import annotations

import argparse
import sys

from aiosfu import __version__, heap, tls
from aiosfu.cluster.cli import add_cluster_parsers
from aiosfu.composite.cli import add_composite_parser
from aiosfu.config import load_config, port_range, port_range_overrides
from aiosfu.ingest_cli import add_ingest_parser
from aiosfu.log import configure
from aiosfu.peer_cli import add_peer_parser
from aiosfu.signal import http_guard
from aiosfu.token_cli import add_token_parser


def _serve(args: argparse.Namespace) -> None:
    config = load_config(
        args.config,
        overrides={
            "host": args.host,
            "port": args.port,
            "ice_ips": args.ice_ip,
            "public_ip": args.public_ip,
            **port_range_overrides(args.ice_ports),
            "keepalive_timeout": args.keepalive_timeout,
            "connect_timeout": args.connect_timeout,
            "log_level": args.log_level,
            "log_format": args.log_format,
            "record_dir": args.record_dir,
            "record_all": args.record_all,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_self_signed": args.tls_self_signed,
        },
    )
    configure(config.log_level, config.log_format)
    from aiosfu.app import build_app  # after logging is configured

    app = build_app(config)
    context, scheme = None, "http"
    if config.tls_self_signed:
        cert, key, fingerprint = tls.self_signed([config.host, *config.ice_ips])
        context, scheme = tls.server_context(cert, key), "https"
        print(f"aiosfu: self-signed certificate, SHA-256 fingerprint {fingerprint}", flush=True)
    elif config.tls_cert:
        context, scheme = tls.server_context(config.tls_cert, config.tls_key), "https"
    print(
        f"aiosfu {__version__}: open {scheme}://{config.host}:{config.port}/ in two browser tabs",
        flush=True,
    )
    heap.settle()
    http_guard.run_app(
        app, config.host, config.port, config.http_guard_limits(), context, config.event_loop
    )


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
    serve.add_argument(
        "--ice-ports", type=port_range, metavar="LOW-HIGH",
        help="bind ICE host candidates on UDP ports in this range only, e.g. 50000-59999",
    )  # fmt: skip
    serve.add_argument("--config", help="TOML config file (see config.sample.toml)")
    serve.add_argument(
        "--keepalive-timeout", type=float, help="seconds before a silent peer is removed"
    )
    serve.add_argument(
        "--connect-timeout",
        type=float,
        help="seconds a publish/subscribe transport has to connect before it is removed",
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["kv", "json"], help="key=value or JSON lines")
    serve.add_argument("--record-dir", metavar="DIR", help="where recordings are written")
    serve.add_argument(
        "--record-all",
        action="store_true",
        default=None,
        help="record every publication from the moment it is published",
    )
    serve.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS/WSS with this certificate")
    serve.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    serve.add_argument(
        "--tls-self-signed",
        action="store_true",
        default=None,
        help="serve HTTPS/WSS with a fresh self-signed certificate (a LAN trial)",
    )
    serve.set_defaults(func=_serve)
    add_peer_parser(commands)
    add_token_parser(commands)
    add_cluster_parsers(commands)
    add_ingest_parser(commands)
    add_composite_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ValueError as exc:
        print(f"aiosfu: {exc}", file=sys.stderr)
        sys.exit(2)
