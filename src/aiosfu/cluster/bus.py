"""Messages between signal nodes: room events to every node with members in the room,
relay messages to the one node a peer is connected to.

NATS subjects:

- `aiosfu.room.<rid>`: `peer-join`, `peer-leave`, `stream-add`, `stream-remove`,
  `broadcast` and recording notifications, each `{"origin", "method", "data", ...}`
- `aiosfu.signal.<signal id>`: request/reply relay messages (P2P `offer`, `answer`,
  `candidate`) to a peer connected to that node; no responder means the node is gone,
  answered at once
- `aiosfu.stage.<signal id>`: request/reply stage actions (`update-grants`, `remove`) a
  room admin on another node took on a member connected to that node

A rid that is not a plain NATS token (letters, digits, `-`, `_`) is written as `~` and
its UTF-8 in hex, so no rid can reach another room's subject through `.`, `*` or `>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from aiosfu.cluster.errors import ClusterError
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger

log = get_logger("aiosfu.cluster.bus")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}")


def token(text: str) -> str:
    return text if _TOKEN.fullmatch(text) else "~" + text.encode().hex()


def room_subject(rid: str) -> str:
    return f"aiosfu.room.{token(rid)}"


def node_subject(signal_id: str) -> str:
    return f"aiosfu.signal.{token(signal_id)}"


def stage_subject(signal_id: str) -> str:
    return f"aiosfu.stage.{token(signal_id)}"


class Gone(Exception):
    """Nobody listens on the subject: the node it names is gone."""


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    async def publish(self, subject: str, message: dict[str, Any]) -> None: ...

    async def subscribe(self, subject: str, handler: Handler) -> Subscription: ...

    async def request(
        self, subject: str, message: dict[str, Any], timeout: float = 2.0
    ) -> dict[str, Any]:
        """The handler's reply; `Gone` at once when no node listens on `subject`."""
        ...

    @property
    def connected(self) -> bool: ...

    async def close(self) -> None: ...


def _unavailable(exc: Exception) -> ClusterError:
    return ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, f"the bus (NATS) is unreachable: {exc}")


@dataclass
class _NatsSubscription:
    inner: Any

    async def unsubscribe(self) -> None:
        try:
            await self.inner.unsubscribe()
        except nats.errors.Error as exc:  # closed or reconnecting: nothing to undo
            log.info("unsubscribe-failed", error=str(exc))


class NatsBus:
    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc

    @classmethod
    async def connect(cls, url: str, name: str = "aiosfu") -> NatsBus:
        async def disconnected() -> None:
            log.warning("nats-disconnected")

        async def reconnected() -> None:
            log.info("nats-reconnected")

        async def error(exc: Exception) -> None:
            log.info("nats-error", error=str(exc) or type(exc).__name__)

        nc = await nats.connect(
            servers=[url],
            name=name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            ping_interval=2,
            max_outstanding_pings=2,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
        return cls(nc)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def publish(self, subject: str, message: dict[str, Any]) -> None:
        if not self.connected:
            raise _unavailable(ConnectionError("not connected"))
        try:
            await self.nc.publish(subject, json.dumps(message).encode())
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        async def on_message(msg: Any) -> None:
            try:
                message = json.loads(msg.data)
                reply = await handler(message)
            except Exception:
                log.exception("bus-handler-failed", subject=msg.subject)
                return
            if msg.reply and reply is not None:
                await msg.respond(json.dumps(reply).encode())

        try:
            return _NatsSubscription(await self.nc.subscribe(subject, cb=on_message))
        except nats.errors.Error as exc:
            raise _unavailable(exc) from exc

    async def request(
        self, subject: str, message: dict[str, Any], timeout: float = 2.0
    ) -> dict[str, Any]:
        if not self.connected:
            raise _unavailable(ConnectionError("not connected"))
        try:
            msg = await self.nc.request(subject, json.dumps(message).encode(), timeout=timeout)
        except nats.errors.NoRespondersError as exc:
            raise Gone(subject) from exc
        except nats.errors.TimeoutError as exc:
            raise _unavailable(exc) from exc
        reply: dict[str, Any] = json.loads(msg.data)
        return reply

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except nats.errors.Error:
            await self.nc.close()


@dataclass
class _MemorySubscription:
    bus: MemoryBus
    subject: str
    handler: Handler

    async def unsubscribe(self) -> None:
        handlers = self.bus.handlers.get(self.subject, [])
        if self.handler in handlers:
            handlers.remove(self.handler)


@dataclass
class MemoryBus:
    """One process: a message goes straight to the handlers of its subject."""

    handlers: dict[str, list[Handler]] = field(default_factory=dict)

    @property
    def connected(self) -> bool:
        return True

    async def publish(self, subject: str, message: dict[str, Any]) -> None:
        for handler in list(self.handlers.get(subject, [])):
            await handler(json.loads(json.dumps(message)))

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        self.handlers.setdefault(subject, []).append(handler)
        return _MemorySubscription(self, subject, handler)

    async def request(
        self, subject: str, message: dict[str, Any], timeout: float = 2.0
    ) -> dict[str, Any]:
        for handler in self.handlers.get(subject, []):
            reply = await handler(json.loads(json.dumps(message)))
            if reply is not None:
                return reply
        raise Gone(subject)

    async def close(self) -> None:
        self.handlers.clear()
