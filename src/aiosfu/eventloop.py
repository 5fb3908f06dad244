"""The event loop a server process runs on: uvloop unless configured otherwise.

A lecture's arrival is thousands of TCP connections, each accepted, registered with
epoll, upgraded to a WebSocket and written to several times. asyncio does each of those
steps in Python (`selector_events`), and in a join storm they were about a fifth of the
server's CPU per join; uvloop does them in C on libuv, with the same asyncio API, so
aiohttp, aiortc, aioice and grpc run on it unchanged (docs/large-rooms.md has the
figures). `event_loop = "asyncio"` keeps the standard loop, for a platform without
uvloop or to tell whether a fault is the loop's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

EventLoop = Literal["uvloop", "asyncio"]
T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: EventLoop = "uvloop") -> T:
    """`asyncio.run(main)` on the chosen loop."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
