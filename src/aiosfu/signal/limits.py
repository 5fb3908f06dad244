"""How much one peer, one room and the whole server may hold, and how fast a peer may ask.

Every resource a request creates (a peer connection holds a UDP socket, an fd, tasks and
a few hundred kilobytes) is bounded here, so one socket cannot exhaust what every other
peer needs. The defaults are far above what a class uses (a teacher with a camera, a
screen and a data channel; a student subscribed to everyone on stage of a big class) and
far below what takes the process down. A refusal answers only the peer that asked.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger

log = get_logger("aiosfu.signal")

RATE_LIMITED = ErrorCode.RATE_LIMITED
LIMIT_EXCEEDED = ErrorCode.LIMIT_EXCEEDED


@dataclass(frozen=True)
class Limits:
    requests_per_second: float = 50.0
    request_burst: int = 200
    publications_per_peer: int = 8
    subscriptions_per_peer: int = 500
    rooms_per_peer: int = 8
    members_per_room: int = 2000
    peer_connections: int = 4000  # publish + subscribe transports on this server
    connections: int = 4000  # signaling WebSockets on this server
    offer_media_sections: int = 16  # m-lines in one offer


class TokenBucket:
    """`rate` requests per second on average, `burst` at once: a client that joins a room
    and subscribes to every stream in it at once is served, a flood is not."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock or time.monotonic
        self._tokens = float(burst)
        self._stamp = self._clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def fit_to_file_limit(limits: Limits, sockets_per_peer_connection: int) -> Limits:
    """Raise the soft open-file limit to the hard one, then lower the connection caps to
    what it holds. Past the fd limit `accept()` fails for everyone (and /stats with it);
    a refused publish fails for one peer only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    reserve = 128  # listening sockets, logs, recordings, the event loop
    budget = max(soft - reserve, 64)
    per_pc = max(sockets_per_peer_connection, 1)
    needed = limits.connections + limits.peer_connections * per_pc
    if needed <= budget:
        return limits
    share = budget / needed
    fitted = Limits(
        **{
            **limits.__dict__,
            "connections": max(int(limits.connections * share), 16),
            "peer_connections": max(int(limits.peer_connections * share), 16),
        }
    )
    log.warning(
        "limits-lowered",
        open_files=soft,
        connections=fitted.connections,
        peer_connections=fitted.peer_connections,
    )
    return fitted
