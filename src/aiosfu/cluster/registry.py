"""Where the nodes are and which SFU node owns each room.

Each node keeps `/aiosfu/nodes/<kind>/<id>` under its own lease (TTL 5 s, renewed about
every 1.5 s) with a JSON `NodeInfo` refreshed every 2 s. Readers get `/aiosfu/` once and
then watch it from that revision, so they follow joins, loads and departures without
polling.

A room's owner is `/aiosfu/rooms/<rid>/owner` = the SFU node id. It is created in a
transaction only if absent, so signal nodes racing on one new room all read back the one
winner, and it is bound to the SFU node's lease, so it vanishes with the node. Its
create revision is the room's epoch: every gRPC call carries it (`sfu_server.Epochs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aetcd
import aetcd.exceptions

from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.nodes import Kind, Load, NodeInfo, State, choose_node
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger

log = get_logger("aiosfu.cluster.registry")

PREFIX = "/aiosfu/"
NODES = PREFIX + "nodes/"
ROOMS = PREFIX + "rooms/"


def node_key(kind: str, node_id: str) -> str:
    return f"{NODES}{kind}/{node_id}"


def owner_key(rid: str) -> str:
    return f"{ROOMS}{rid}/owner"


@dataclass(frozen=True)
class Placement:
    rid: str
    sfuid: str
    epoch: int


ONE_ROOM = Load(rooms=1, peers=1, tracks=1).score()

OwnerLost = Callable[[Placement], Awaitable[None]]
NodeLost = Callable[[NodeInfo], Awaitable[None]]


@dataclass(frozen=True)
class Timing:
    lease_ttl: int = 5
    renew_every: float = 1.5
    load_every: float = 2.0
    call_timeout: float = 2.0


class Registry(Protocol):
    """Node discovery and room placement; `MemoryRegistry` for one process."""

    def nodes(self, kind: Kind) -> list[NodeInfo]:
        """Every known node of `kind` whose load is fresh."""
        ...

    def node(self, node_id: str) -> NodeInfo | None: ...

    def owner(self, rid: str) -> Placement | None:
        """The room's owner as last seen (no I/O), or None."""
        ...

    async def place_room(self, rid: str) -> Placement:
        """The room's owner, chosen and claimed now if it has none."""
        ...

    async def set_state(self, state: State) -> None: ...

    def on_owner_lost(self, callback: OwnerLost) -> None: ...

    def on_node_lost(self, callback: NodeLost) -> None:
        """Told when a node's key is gone (its lease expired or it left)."""
        ...

    @property
    def healthy(self) -> bool:
        """False while the registry's engine cannot be reached."""
        ...

    async def close(self) -> None: ...


def _no_node(rid: str) -> ClusterError:
    return ClusterError(
        ErrorCode.CLUSTER_UNAVAILABLE, f"no SFU node can take room {rid!r} now; try again"
    )


class MemoryRegistry:
    """One process: the embedded SFU is the only node and owns every room."""

    def __init__(self, me: NodeInfo) -> None:
        self.me = me
        self._owners: dict[str, Placement] = {}
        self._lost: list[OwnerLost] = []

    def nodes(self, kind: Kind) -> list[NodeInfo]:
        return [self.me] if self.me.kind == kind else []

    def node(self, node_id: str) -> NodeInfo | None:
        return self.me if node_id == self.me.id else None

    def owner(self, rid: str) -> Placement | None:
        return self._owners.get(rid)

    async def place_room(self, rid: str) -> Placement:
        if rid not in self._owners:
            if not self.me.accepts_rooms() and self.me.updated_at:
                raise _no_node(rid)
            self._owners[rid] = Placement(rid, self.me.id, len(self._owners) + 1)
        return self._owners[rid]

    async def set_state(self, state: State) -> None:
        self.me = replace(self.me, state=state)

    def on_owner_lost(self, callback: OwnerLost) -> None:
        self._lost.append(callback)

    def on_node_lost(self, callback: NodeLost) -> None:
        return None  # the one node is this process

    @property
    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._owners.clear()


class EtcdRegistry:
    def __init__(
        self,
        url: str,
        me: NodeInfo | None = None,
        load: Callable[[], Load] = Load,
        timing: Timing | None = None,
    ) -> None:
        """`me` None: discover only (a tool); else register and keep the lease alive."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        self.timing = timing or Timing()
        # gRPC's reconnect backoff grows to minutes by default: after a long etcd outage
        # the registry would stay blind well after etcd is back.
        self.client = aetcd.Client(
            parts.hostname or "127.0.0.1",
            parts.port or 2379,
            timeout=self.timing.call_timeout,
            options={
                "grpc.initial_reconnect_backoff_ms": 200,
                "grpc.max_reconnect_backoff_ms": 1000,
            },
        )
        self.me = me
        self._load = load
        self._nodes: dict[str, NodeInfo] = {}
        self._owners: dict[str, Placement] = {}
        self._lost: list[OwnerLost] = []
        self._nodes_lost: list[NodeLost] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lease_id = 0
        self._placed: dict[str, list[float]] = {}  # sfuid -> when we placed rooms there
        self.synced = asyncio.Event()  # the caches reflect etcd (cleared while it is away)
        self.registered = asyncio.Event()

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Returns once the first sync (and registration) is done, or raises."""
        if self.me is not None:
            await self._register()
            self._tasks.append(asyncio.ensure_future(self._keep_alive()))
            self._tasks.append(asyncio.ensure_future(self._refresh_load()))
        revision = await self._resync()
        self._tasks.append(asyncio.ensure_future(self._follow(revision)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._lease_id:
            with contextlib.suppress(Exception):
                await self.client.revoke_lease(self._lease_id)  # our keys go at once
        with contextlib.suppress(Exception):
            await self.client.close()

    # --- our own key ------------------------------------------------------------------

    async def _register(self) -> None:
        assert self.me is not None
        lease = await self.client.lease(self.timing.lease_ttl)
        self._lease_id = lease.id
        self.me = replace(self.me, lease=lease.id).with_load(self._load())
        await self._put_me()
        self.registered.set()
        log.info("registered", kind=self.me.kind, id=self.me.id, lease=lease.id)

    async def _put_me(self) -> None:
        assert self.me is not None
        key = node_key(self.me.kind, self.me.id).encode()
        await self.client.put(key, self.me.to_json(), lease=self._lease_id)

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.timing.renew_every)
            try:
                reply = await self.client.refresh_lease(self._lease_id)
                if reply is None or reply.TTL <= 0:  # expired while etcd was away
                    log.warning("lease-lost", lease=self._lease_id)
                    await self._register()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease-renew-failed", error=str(exc) or type(exc).__name__)

    async def _refresh_load(self) -> None:
        while True:
            await asyncio.sleep(self.timing.load_every)
            assert self.me is not None
            self.me = self.me.with_load(self._load())
            try:
                await self._put_me()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("load-refresh-failed", error=str(exc) or type(exc).__name__)

    async def set_state(self, state: State) -> None:
        assert self.me is not None
        self.me = replace(self.me, state=state)
        try:
            await self._put_me()
        except aetcd.exceptions.ClientError as exc:  # the next load refresh carries it
            log.warning("state-put-failed", state=state, error=str(exc))

    # --- everyone else's keys -----------------------------------------------------------

    async def _resync(self) -> int:
        """Read `/aiosfu/` whole; owners that vanished meanwhile are reported lost."""
        result = await self.client.get_prefix(PREFIX.encode())
        nodes: dict[str, NodeInfo] = {}
        owners: dict[str, Placement] = {}
        for kv in result:
            self._apply_put(kv.key.decode(), kv.value, kv.create_revision, nodes, owners)
        gone = [p for rid, p in self._owners.items() if owners.get(rid) != p]
        gone_nodes = [n for node_id, n in self._nodes.items() if node_id not in nodes]
        self._nodes, self._owners = nodes, owners
        self.synced.set()
        for node in gone_nodes:
            await self._tell_node_lost(node)
        for placement in gone:
            await self._tell_lost(placement)
        return int(result.header.revision)

    @staticmethod
    def _apply_put(
        key: str,
        value: bytes,
        create_revision: int,
        nodes: dict[str, NodeInfo],
        owners: dict[str, Placement],
    ) -> None:
        if key.startswith(NODES):
            try:
                info = NodeInfo.from_json(value)
            except (ValueError, TypeError) as exc:
                log.warning("bad-node-value", key=key, error=str(exc))
                return
            nodes[info.id] = info
        elif key.startswith(ROOMS) and key.endswith("/owner"):
            rid = key[len(ROOMS) : -len("/owner")]
            owners[rid] = Placement(rid, value.decode(), create_revision)

    async def _follow(self, revision: int) -> None:
        backoff = 0.2
        while True:
            try:
                watch = await self.client.watch_prefix(PREFIX.encode(), start_revision=revision + 1)
                async for event in watch:
                    backoff = 0.2
                    await self._on_event(event)
                    revision = max(revision, event.kv.mod_revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watch-lost", error=str(exc) or type(exc).__name__)
            self.synced.clear()
            while True:  # etcd is away: keep the caches, live rooms go on
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    revision = await self._resync()
                    log.info("watch-resynced", revision=revision)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    continue

    async def _on_event(self, event: Any) -> None:
        key = event.kv.key.decode()
        if event.kind == "PUT":
            self._apply_put(
                key, event.kv.value, event.kv.create_revision, self._nodes, self._owners
            )
            return
        if key.startswith(NODES):
            node_id = key.rsplit("/", 1)[1]
            node = self._nodes.pop(node_id, None)
            log.info("node-gone", id=node_id)
            if node is not None:
                await self._tell_node_lost(node)
        elif key.startswith(ROOMS) and key.endswith("/owner"):
            rid = key[len(ROOMS) : -len("/owner")]
            placement = self._owners.pop(rid, None)
            if placement is not None:
                await self._tell_lost(placement)

    async def _tell_lost(self, placement: Placement) -> None:
        log.info("room-owner-lost", rid=placement.rid, sfuid=placement.sfuid)
        for callback in self._lost:
            try:
                await callback(placement)
            except Exception:
                log.exception("owner-lost-callback-failed", rid=placement.rid)

    async def _tell_node_lost(self, node: NodeInfo) -> None:
        for callback in self._nodes_lost:
            try:
                await callback(node)
            except Exception:
                log.exception("node-lost-callback-failed", id=node.id)

    def on_owner_lost(self, callback: OwnerLost) -> None:
        self._lost.append(callback)

    def on_node_lost(self, callback: NodeLost) -> None:
        self._nodes_lost.append(callback)

    @property
    def healthy(self) -> bool:
        return self.synced.is_set()

    # --- reads --------------------------------------------------------------------------

    def nodes(self, kind: Kind) -> list[NodeInfo]:
        now = time.time()
        return [n for n in self._nodes.values() if n.kind == kind and n.fresh(now)]

    def node(self, node_id: str) -> NodeInfo | None:
        return self._nodes.get(node_id)

    def owner(self, rid: str) -> Placement | None:
        return self._owners.get(rid)

    def owned_rooms(self) -> set[str]:
        return set(self._owners)

    # --- placement ----------------------------------------------------------------------

    async def place_room(self, rid: str) -> Placement:
        known = self._owners.get(rid)
        if known is not None:
            return known
        if not self.synced.is_set():
            raise ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, "the registry (etcd) is unreachable")
        tried: set[str] = set()
        while True:
            candidates = [n for n in self.nodes("sfu") if n.accepts_rooms() and n.id not in tried]
            if not candidates:
                raise _no_node(rid)
            chosen = choose_node(candidates, pending=self._pending)
            tried.add(chosen.id)
            try:
                placement = await self._claim(rid, chosen)
            except aetcd.exceptions.ClientError as exc:
                if "lease not found" in str(exc):  # it died since we last heard of it
                    self._nodes.pop(chosen.id, None)
                    continue
                raise ClusterError(
                    ErrorCode.CLUSTER_UNAVAILABLE, f"the registry (etcd) failed: {exc}"
                ) from exc
            self._owners[rid] = placement
            self._placed.setdefault(placement.sfuid, []).append(time.time())
            return placement

    def _pending(self, node: NodeInfo) -> float:
        """Rooms placed on `node` from here since its load was written, each weighed as a
        room with one publisher; older placements are in the load already."""
        placed = [t for t in self._placed.get(node.id, []) if t > node.updated_at]
        self._placed[node.id] = placed
        return len(placed) * ONE_ROOM

    async def _claim(self, rid: str, chosen: NodeInfo) -> Placement:
        key = owner_key(rid).encode()
        t = self.client.transactions
        ok, responses = await self.client.transaction(
            compare=[t.create(key) == 0],
            success=[t.put(key, chosen.id.encode(), lease=chosen.lease), t.get(key)],
            failure=[t.get(key)],
        )
        value, kv = responses[-1][0]
        placement = Placement(rid, value.decode(), int(kv.create_revision))
        log.info("room-placed" if ok else "room-owner-found", rid=rid, sfuid=placement.sfuid,
                 epoch=placement.epoch)  # fmt: skip
        return placement

    async def release_room(self, placement: Placement) -> bool:
        """Drop the owner key if it still names this epoch (the room emptied everywhere)."""
        key = owner_key(placement.rid).encode()
        t = self.client.transactions
        ok, _ = await self.client.transaction(
            compare=[t.create(key) == placement.epoch], success=[t.delete(key)], failure=[]
        )
        if ok:
            self._owners.pop(placement.rid, None)
        return bool(ok)
