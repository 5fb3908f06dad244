"""`aiosfu composite --room R --rtmp URL | --hls DIR | --mp4 FILE` (docs/composite.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

DEFAULT_SERVER = "ws://127.0.0.1:8080/ws"


def _bitrate(text: str) -> int:
    """`2500k`, `2.5M` or plain bits per second."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a bitrate: {text!r} (e.g. 2500k)") from None
    if value < 8_000:
        raise argparse.ArgumentTypeError(f"bitrate {text!r} is below 8k")
    return int(value)


def _fps(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 60 or 48000 % value:
        raise argparse.ArgumentTypeError(
            f"{text} fps: choose a rate that divides 48000 (24, 25, 30, 50, 60...)"
        )
    return value


def add_composite_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    composite = commands.add_parser(
        "composite",
        help="mix a room (audio summed, video tiled) and push it to RTMP or write HLS/MP4",
    )
    composite.add_argument("--room", required=True, help="the room (rid) to mix")
    out = composite.add_mutually_exclusive_group(required=True)
    out.add_argument("--rtmp", metavar="URL", help="push to rtmp://host[:port]/app/stream")
    out.add_argument("--hls", metavar="DIR", help="write DIR/index.m3u8 and its segments")
    out.add_argument("--mp4", metavar="FILE", help="write a (fragmented) MP4 file")
    composite.add_argument("--server", default=DEFAULT_SERVER, help=f"default {DEFAULT_SERVER}")
    composite.add_argument("--uid", default="composite", help="the worker's uid in the room")
    composite.add_argument("--token", help="access token (when the server requires tokens)")
    composite.add_argument("--fps", type=_fps, default=30, help="output frame rate (default 30)")
    composite.add_argument(
        "--video-bitrate", type=_bitrate, default="2500k", help="H264 bitrate (default 2500k)"
    )
    composite.add_argument(
        "--audio-bitrate", type=_bitrate, default="128k", help="AAC bitrate (default 128k)"
    )
    composite.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this long (default: run on)"
    )
    composite.add_argument(
        "--ice-ip", action="append", metavar="IP", help="ICE host address (repeatable)"
    )
    composite.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    composite.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from aiosfu.log import configure

    configure(args.log_level or "info")
    try:
        asyncio.run(_composite(args))
    except KeyboardInterrupt:
        pass


async def _composite(args: argparse.Namespace) -> None:
    from aiosfu.client import SignalingError
    from aiosfu.composite.output import OutputError, Settings, Target
    from aiosfu.composite.worker import CompositeError, CompositeWorker

    if args.rtmp:
        target = Target("rtmp", args.rtmp)
    elif args.hls:
        target = Target("hls", args.hls)
    else:
        target = Target("mp4", args.mp4)
    worker = CompositeWorker(
        args.server, args.room, target, uid=args.uid, token=args.token, ice_ips=args.ice_ip,
        settings=Settings(fps=args.fps, video_bitrate=args.video_bitrate,
                          audio_bitrate=args.audio_bitrate),
        duration=args.duration,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    except (CompositeError, OutputError, SignalingError, OSError) as exc:
        print(f"aiosfu composite: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
