"""Publish and subscribe again on one's own when a cluster loses an SFU node.

The signal node tells a publisher `republish {rid, mid, sfuid}` for each stream the lost
node carried, and every other member `stream-lost {rid, uid, mid, sfuid}` after the usual
`stream-remove` (docs/cluster.md). With `Recovery(client)` the client then publishes the
same tracks again (the room is placed on another node; the tracks go out through a
`MediaRelay` so they outlive the lost peer connection) and, for each stream it was
subscribed to, subscribes to that publisher's next stream in the room. The `Publication`
and `Subscription` objects are updated in place (new mid, sid, sfuid, peer connection and
tracks), so code holding them goes on with them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from aiortc.contrib.media import MediaRelay

from aiosfu.client.client import Client, Subscription

# How long a lost subscription waits for its publisher to publish again.
RESUBSCRIBE_WITHIN = 30.0


class Recovery:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: dict[tuple[str, str], tuple[Subscription, float]] = {}
        self.republished = 0
        self.resubscribed = 0
        client.signaling.on("republish", self._on_republish)
        client.signaling.on("stream-lost", self._on_stream_lost)
        client.signaling.on("stream-add", self._on_stream_add)
        client.attached.append(self)
        client.relay = MediaRelay()  # so a track can be published again (client.publish)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_republish(self, data: dict[str, Any]) -> None:
        publication = self.client.publications.get(data.get("mid", ""))
        if publication is not None:
            self._spawn(self._republish(publication.mid))

    async def _republish(self, mid: str) -> None:
        old = self.client.publications.pop(mid, None)
        if old is None:
            return
        await old.pc.close()
        fresh = await self.client.publish(old.rid, old.tracks, old.minfo)
        self.client.publications.pop(fresh.mid, None)
        old.mid, old.sfuid, old.pc = fresh.mid, fresh.sfuid, fresh.pc
        self.client.publications[old.mid] = old
        self.republished += 1

    def _on_stream_lost(self, data: dict[str, Any]) -> None:
        mid = data.get("mid", "")
        for sid, subscription in list(self.client.subscriptions.items()):
            if subscription.mid == mid:
                del self.client.subscriptions[sid]
                subscription.uid = data.get("uid", "")
                loop = asyncio.get_running_loop()
                self._lost[(subscription.rid, subscription.uid)] = (subscription, loop.time())
                self._spawn(subscription.pc.close())

    def _on_stream_add(self, data: dict[str, Any]) -> None:
        key = (data.get("rid", ""), data.get("uid", ""))
        lost = self._lost.pop(key, None)
        if lost is None:
            return
        subscription, since = lost
        if asyncio.get_running_loop().time() - since <= RESUBSCRIBE_WITHIN:
            self._spawn(self._resubscribe(subscription, data["mid"], data.get("sfuid", "")))

    async def _resubscribe(self, subscription: Subscription, mid: str, sfuid: str) -> None:
        fresh = await self.client.subscribe(subscription.rid, mid, sfuid, subscription.kinds)
        self.client.subscriptions.pop(fresh.sid, None)
        subscription.mid, subscription.sid, subscription.sfuid = fresh.mid, fresh.sid, sfuid
        subscription.pc, subscription.answered_at = fresh.pc, fresh.answered_at
        subscription.tracks = fresh.tracks  # filled as the new tracks arrive
        self.client.subscriptions[subscription.sid] = subscription
        self.resubscribed += 1

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
