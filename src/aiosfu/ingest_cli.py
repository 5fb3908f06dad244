"""`aiosfu ingest rtsp://...`: publish a camera into a room (docs/rtsp.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

DEFAULT_SERVER = "ws://127.0.0.1:8080/ws"
# The environment, unlike the command line, is not shown to every user by `ps`.
TOKEN_ENV = "AIOSFU_INGEST_TOKEN"
URL_ENV = "AIOSFU_INGEST_URL"


def add_ingest_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ingest = commands.add_parser(
        "ingest",
        help="pull an RTSP camera and publish it into a room (H264 as is, AAC to Opus)",
    )
    ingest.add_argument(
        "url", nargs="?", default=os.environ.get(URL_ENV),
        help=f"the camera, rtsp://[user:password@]host[:port]/path (default ${URL_ENV})",
    )  # fmt: skip
    ingest.add_argument("--room", required=True, help="the room (rid) to publish into")
    ingest.add_argument("--server", default=DEFAULT_SERVER, help=f"default {DEFAULT_SERVER}")
    ingest.add_argument("--uid", default="camera", help="the camera's uid in the room")
    ingest.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV) or None,
        help=f"access token (when the server requires tokens; default ${TOKEN_ENV})",
    )  # fmt: skip
    ingest.add_argument(
        "--rtsp-transport", choices=["tcp", "udp"], default="tcp",
        help="RTP over the RTSP connection (default, crosses firewalls) or over UDP",
    )  # fmt: skip
    ingest.add_argument("--no-audio", action="store_true", help="publish the video only")
    ingest.add_argument(
        "--ice-ip", action="append", metavar="IP", help="ICE host address (repeatable)"
    )
    ingest.add_argument(
        "--while-stdin-open", action="store_true",
        help="unpublish and exit when standard input closes (a supervising parent died)",
    )  # fmt: skip
    ingest.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    ingest.add_argument("--log-format", choices=["kv", "json"], default="kv")
    ingest.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from aiosfu.log import configure

    if not args.url:
        raise ValueError(f"ingest: give the camera's URL (or set {URL_ENV})")

    configure(args.log_level or "info", args.log_format)
    try:
        asyncio.run(_ingest(args))
    except KeyboardInterrupt:
        pass


async def _ingest(args: argparse.Namespace) -> None:
    from aiosfu.client import SignalingError
    from aiosfu.ingest.publisher import CameraIngest
    from aiosfu.ingest.rtsp import IngestError
    from aiosfu.log import get_logger

    job = CameraIngest(
        args.url, args.server, args.room, args.uid, token=args.token, ice_ips=args.ice_ip,
        transport=args.rtsp_transport, audio=not args.no_audio,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(job.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    if args.while_stdin_open:
        stdin = sys.stdin.fileno()

        def readable() -> None:
            if not os.read(stdin, 4096):  # EOF: the parent's end closed, with the parent
                loop.remove_reader(stdin)
                task.cancel()

        loop.add_reader(stdin, readable)
    try:
        await task
    except asyncio.CancelledError:
        pass
    except IngestError as exc:
        get_logger("aiosfu.ingest").error("ingest-refused", reason=str(exc))
        print(f"aiosfu ingest: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except (SignalingError, OSError) as exc:
        print(f"aiosfu ingest: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
