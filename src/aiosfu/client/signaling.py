"""The WebSocket side of the client: requests with ids, responses matched back to them,
notifications delivered to callbacks and to waiters."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import Callable
from typing import Any

import aiohttp

Notification = dict[str, Any]


class SignalingError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SignalingClient:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        ws: aiohttp.ClientWebSocketResponse,
        history: int = 1000,
    ) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Callable[[Notification], None]]] = {}
        # The latest notifications, for `wait_for`; bounded so a long-lived bot does not grow.
        self.notifications: deque[tuple[str, Notification]] = deque(maxlen=history)
        self.received = 0  # notifications ever received: `wait_for(start=...)` counts in these
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str, uid: str, token: str | None = None) -> SignalingClient:
        params = {"peer": uid}
        if token:
            params["token"] = token
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(url, params=params, max_msg_size=16 * 1024 * 1024)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    @property
    def closed(self) -> bool:
        return self._ws.closed

    def on(self, method: str, handler: Callable[[Notification], None]) -> None:
        self._handlers.setdefault(method, []).append(handler)

    def take_handlers(self, old: SignalingClient) -> None:
        """The callbacks registered on `old` (a connection being replaced) move here."""
        for method, handlers in old._handlers.items():
            self._handlers.setdefault(method, []).extend(handlers)

    async def request(
        self, method: str, data: dict[str, Any], *, timeout: float = 30.0
    ) -> dict[str, Any]:
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send_raw(
                json.dumps({"request": True, "id": request_id, "method": method, "data": data})
            )
            async with asyncio.timeout(timeout):
                response = await future
        finally:
            self._pending.pop(request_id, None)
        if not response.get("ok"):
            raise SignalingError(str(response.get("errorCode")), str(response.get("errorReason")))
        return response.get("data") or {}

    async def send_raw(self, text: str) -> None:
        """Send a frame as is: the tests use it to send what a broken client would."""
        await self._ws.send_str(text)

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Notification], bool] = lambda _: True,
        *,
        timeout: float = 10.0,
        start: int = 0,
    ) -> Notification:
        """The first notification `method` matching `predicate`, counting from the
        `start`-th notification ever received (still in the bounded history)."""
        async with asyncio.timeout(timeout):
            index = start
            while True:
                while index < self.received:
                    oldest = self.received - len(self.notifications)
                    index = max(index, oldest)
                    name, data = self.notifications[index - oldest]
                    index += 1
                    if name == method and predicate(data):
                        return data
                if self._ws.closed:
                    raise ConnectionError("signaling connection closed")
                self._changed.clear()
                await self._changed.wait()

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                if frame.get("response"):
                    future = self._pending.get(frame.get("id"))
                    if future is not None and not future.done():
                        future.set_result(frame)
                elif frame.get("notification"):
                    method, data = frame.get("method", ""), frame.get("data") or {}
                    self.notifications.append((method, data))
                    self.received += 1
                    for handler in self._handlers.get(method, []):
                        handler(data)
                self._changed.set()
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("signaling connection closed"))
            self._changed.set()

    async def close(self) -> None:
        await self._ws.close()
        await self._reader
        await self._http.close()
