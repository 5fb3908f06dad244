"""`aiosfu peer answer|offer`: the seed-001 pair of data-channel peers, through our server.

An "answer" peer registers under an id (it connects with `?peer=ID`) and waits; an
"offer" peer connects to that id. The server relays their offer, answer and candidates
and nothing else; once the direct data channel opens, each side sends a random message
every `--interval` seconds and prints what it receives, as in seed 001's transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the client (aiortc) loads only when a peer command runs
    from aiosfu.client import Client, PeerLink

DEFAULT_SERVER = "ws://127.0.0.1:8080/ws"


class Say:
    """Seed 001's log lines: a timestamp, the role, what happened."""

    def __init__(self, role: str) -> None:
        self.role = role

    def __call__(self, text: str) -> None:
        print(f"{datetime.now():%Y/%m/%d %H:%M:%S.%f} {self.role}: {text}", flush=True)


def add_peer_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    peer = commands.add_parser(
        "peer", help="a seed-001 data-channel peer: register and answer, or offer to an id"
    )
    roles = peer.add_subparsers(dest="role", required=True)
    answer = roles.add_parser("answer", help="register under --id and answer offers")
    answer.add_argument("--id", required=True, help="the id offer peers connect to")
    offer = roles.add_parser("offer", help="connect to the answer peer --target")
    offer.add_argument("--target", required=True, help="the answer peer's id")
    offer.add_argument("--id", help="this peer's id (default: offer-<random>)")
    for parser in (answer, offer):
        parser.add_argument("--server", default=DEFAULT_SERVER, help=f"default {DEFAULT_SERVER}")
        parser.add_argument(
            "--interval", type=float, default=5.0, help="seconds between messages (default 5)"
        )
        parser.add_argument(
            "--count",
            type=int,
            default=0,
            help="exit after sending and receiving this many messages (default: run until ^C)",
        )
        parser.add_argument(
            "--ice-ip", action="append", metavar="IP", help="ICE host address (repeatable)"
        )
        parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    say = Say(args.role)
    main = answer_peer(args, say) if args.role == "answer" else offer_peer(args, say)
    try:
        code = asyncio.run(main)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


async def _connect(args: argparse.Namespace, uid: str, say: Say) -> Client | None:
    from aiosfu.client import Client

    say(f"connecting to {args.server} as {uid}")
    try:
        return await Client.connect(args.server, uid, ice_ips=args.ice_ip)
    except (OSError, ValueError) as exc:
        say(f"cannot reach the signaling server: {exc}")
        return None


def _watch(link: PeerLink, say: Say) -> None:
    link.pc.on(
        "connectionstatechange",
        lambda: say(f"Peer Connection State has changed: {link.pc.connectionState}"),
    )
    link.pc.on("datachannel", lambda channel: say(f"New DataChannel {channel.label}"))


async def converse(link: PeerLink, say: Say, interval: float, count: int) -> bool:
    """Send a random message every `interval` s and print what arrives, until `count` each
    (True) or until the connection ends (False)."""
    ended = asyncio.Event()

    def on_state() -> None:
        if link.pc.connectionState in ("failed", "closed"):
            ended.set()

    link.pc.on("connectionstatechange", on_state)
    channel = await link.wait_channel(timeout=30)
    say(
        f"Data channel '{channel.label}' open. Random messages will now be sent to any "
        f"connected DataChannels every {interval:g} seconds"
    )

    async def send() -> None:
        sent = 0
        while not count or sent < count:
            await asyncio.sleep(interval)
            if channel.readyState != "open":
                return
            message = f"{say.role}-{random.randrange(2**31)}"
            say(f"Sending '{message}'")
            channel.send(message)
            sent += 1

    async def receive() -> None:
        received = 0
        while not count or received < count:
            label, message = await link.messages.get()
            text = message if isinstance(message, str) else message.hex()
            say(f"Message from DataChannel '{label}': '{text}'")
            received += 1

    talk = asyncio.ensure_future(asyncio.gather(send(), receive()))
    end = asyncio.ensure_future(ended.wait())
    running: list[asyncio.Future[Any]] = [talk, end]
    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    for task in (talk, end):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    completed = talk.done() and not talk.cancelled() and not ended.is_set()
    if completed:
        # Our last message may still be in flight: let the other side finish first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), max(2.0, 2 * interval))
    elif ended.is_set():
        say(f"connection with {link.remote} ended")
    return completed


async def answer_peer(args: argparse.Namespace, say: Say) -> int:
    from aiosfu.client import P2P

    client = await _connect(args, args.id, say)
    if client is None:
        return 1
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    conversations: set[asyncio.Task[bool]] = set()

    def finished(task: asyncio.Task[bool]) -> None:
        if not done.done():
            done.set_result(not task.cancelled() and task.exception() is None and task.result())

    def on_link(link: PeerLink) -> None:
        say(f"recv offer message from {link.remote}")
        _watch(link, say)
        task = asyncio.ensure_future(converse(link, say, args.interval, args.count))
        conversations.add(task)
        task.add_done_callback(conversations.discard)
        if args.count:
            task.add_done_callback(finished)

    P2P(client, on_link=on_link)
    say(f"registered as {args.id}; waiting for offers")
    try:
        completed = await done
    finally:
        for task in list(conversations):
            task.cancel()
        await client.close()
    return 0 if completed else 1


async def offer_peer(args: argparse.Namespace, say: Say) -> int:
    from aiosfu.client import P2P, SignalingError

    uid = args.id or f"offer-{secrets.token_hex(3)}"
    client = await _connect(args, uid, say)
    if client is None:
        return 1
    p2p = P2P(client)
    client.signaling.on("answer", lambda data: say(f"recv answer(sdp) message from {data['from']}"))
    try:
        say(f"create offer for {args.target}")
        try:
            link = await p2p.connect(args.target)
        except SignalingError as exc:
            say(f"the server refused the offer: {exc.reason} ({exc.code})")
            return 1
        _watch(link, say)
        try:
            completed = await converse(link, say, args.interval, args.count)
        except TimeoutError:
            say(f"no data channel with {args.target} within 30 seconds")
            return 1
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return 0 if completed else 1
