"""The `Sfu` a signal node holds in a cluster: each call goes to the SFU node that owns
the call's room, over that node's gRPC client.

A publish in a room without an owner places the room first (`Registry.place_room`);
every other call finds the owner as last seen. A call for a room whose owner is gone
has nothing left to end (unpublish, unsubscribe, close_peer return) or nothing to reach
(subscribe, recording: `sfu-unavailable`).

A client is kept for every SFU node the registry knows, so this signal node hears every
node's events (media ended on its own, recordings) for the rooms it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiosfu.cluster.registry import Registry
from aiosfu.cluster.sfu_client import Deadlines, RemoteSfu
from aiosfu.contract import ErrorCode, Published, Recording, SfuError, Subscribed
from aiosfu.log import get_logger
from aiosfu.sfu.interface import SfuListener

log = get_logger("aiosfu.cluster.router")


class ClusterSfu:
    sfuid = ""  # no single node: `serves` says which ids belong to the cluster

    def __init__(
        self, registry: Registry, signal_id: str, deadlines: Deadlines | None = None
    ) -> None:
        self.registry = registry
        self.signal_id = signal_id
        self.deadlines = deadlines or Deadlines()
        self.clients: dict[str, RemoteSfu] = {}
        self._listener: SfuListener | None = None
        self._follow: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._follow = asyncio.ensure_future(self._follow_nodes())

    async def _follow_nodes(self) -> None:
        """Open a client for every SFU node as it appears (from the registry's cache)."""
        while True:
            for node in self.registry.nodes("sfu"):
                self.client(node.id)
            for sfuid in [s for s in self.clients if self.registry.node(s) is None]:
                log.info("sfu-node-client-closed", sfuid=sfuid)  # its key is gone
                await self.clients.pop(sfuid).close()
            await asyncio.sleep(0.5)

    def serves(self, sfuid: str) -> bool:
        return sfuid in self.clients or self.registry.node(sfuid) is not None

    def _epoch(self, rid: str) -> int:
        owner = self.registry.owner(rid)
        return owner.epoch if owner is not None else 0

    def client(self, sfuid: str) -> RemoteSfu:
        client = self.clients.get(sfuid)
        if client is None:
            node = self.registry.node(sfuid)
            target = node.addresses.get("grpc") if node is not None else None
            if not target:
                raise SfuError(ErrorCode.SFU_UNAVAILABLE, f"SFU node {sfuid} is not registered")
            client = RemoteSfu(
                str(target), sfuid, self._epoch, self.deadlines, subscriber=self.signal_id
            )
            if self._listener is not None:
                client.set_listener(self._listener)
            self.clients[sfuid] = client
            log.info("sfu-node-client", sfuid=sfuid, target=target)
        return client

    def _owner(self, rid: str) -> RemoteSfu | None:
        owner = self.registry.owner(rid)
        return self.client(owner.sfuid) if owner is not None else None

    def _required_owner(self, rid: str) -> RemoteSfu:
        client = self._owner(rid)
        if client is None:
            raise SfuError(ErrorCode.SFU_UNAVAILABLE, f"room {rid!r} has no SFU node now")
        return client

    def set_listener(self, listener: SfuListener) -> None:
        self._listener = listener
        for client in self.clients.values():
            client.set_listener(listener)

    async def publish(self, rid: str, uid: str, offer_sdp: str, minfo: dict[str, Any]) -> Published:
        placement = await self.registry.place_room(rid)
        return await self.client(placement.sfuid).publish(rid, uid, offer_sdp, minfo)

    async def subscribe(self, rid: str, uid: str, mid: str, offer_sdp: str) -> Subscribed:
        return await self._required_owner(rid).subscribe(rid, uid, mid, offer_sdp)

    async def unpublish(self, rid: str, mid: str) -> None:
        if (client := self._owner(rid)) is not None:
            await client.unpublish(rid, mid)

    async def unsubscribe(self, rid: str, sid: str) -> None:
        if (client := self._owner(rid)) is not None:
            await client.unsubscribe(rid, sid)

    async def pause(self, rid: str, mid: str, kind: str, paused: bool) -> None:
        await self._required_owner(rid).pause(rid, mid, kind, paused)

    async def close_peer(self, rid: str, uid: str) -> None:
        if (client := self._owner(rid)) is not None:
            await client.close_peer(rid, uid)

    async def start_recording(self, rid: str, mid: str) -> Recording:
        return await self._required_owner(rid).start_recording(rid, mid)

    async def stop_recording(self, rid: str, mid: str) -> Recording:
        return await self._required_owner(rid).stop_recording(rid, mid)

    async def stats(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for sfuid, client in list(self.clients.items()):
            try:
                nodes[sfuid] = await client.stats()
            except SfuError as exc:
                nodes[sfuid] = {"error": exc.code.value, "reason": exc.reason}
        return {"nodes": nodes}

    async def close(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
