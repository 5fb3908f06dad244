"""A signal node's rooms kept in step with the rest of the cluster.

Each signal node keeps its rooms in `aiosfu.room.Rooms` as the embedded server does, with
the members and publications of the other signal nodes mirrored in: the seed-002 handlers
then answer `join` with the whole cluster's `users` and `pubs`, check a `subscribe`
against every publication of the room, and send notifications to their own sockets only
(a mirrored member has no session here). This module wraps the handlers that change a
room (through `SignalService.register`, the extension point) so that each change also goes
to Redis (`Store`) and to the room's NATS subject (`Bus`), and applies the other nodes'
changes heard there.

Joins are refused with `cluster-unavailable` while Redis or NATS cannot be reached; a
member already in a room goes on (its media never touches either).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import asdict
from typing import Any

from aiosfu.cluster.bus import Bus, Subscription, room_subject
from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.nodes import NodeInfo
from aiosfu.cluster.registry import Placement, Registry
from aiosfu.cluster.store import Store
from aiosfu.contract import CodedError, ErrorCode
from aiosfu.log import get_logger
from aiosfu.room import Member, Publication, Room, RoomError
from aiosfu.signal.protocol import BroadcastData, JoinData, PublishData, UnpublishData
from aiosfu.signal.service import Handler, SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.cluster.sync")

# Extension notification: the publication's SFU node is gone; publish it again (the room
# has been or will be placed on another node).
REPUBLISH = "republish"
# Extension notification after that stream's `stream-remove`: it ended because its SFU
# node is gone, so its publisher will publish again (subscribers may resubscribe).
STREAM_LOST = "stream-lost"


def _pub_info(pub: Publication) -> dict[str, Any]:
    info = asdict(pub)
    return {k: info[k] for k in ("mid", "minfo", "rid", "sfuid", "uid")}


class RoomSync:
    def __init__(
        self,
        service: SignalService,
        store: Store,
        bus: Bus,
        registry: Registry,
        refresh_every: float = 10.0,
        peer_grace: float = 20.0,
    ) -> None:
        self.service = service
        self.store = store
        self.bus = bus
        self.registry = registry
        self.me = service.signal_id
        self.refresh_every = refresh_every
        self.peer_grace = peer_grace
        self._subscriptions: dict[str, Subscription] = {}
        self._attaching: dict[str, asyncio.Lock] = {}
        self._mode_of: dict[str, tuple[str, int]] = {}  # rid -> (mode, capacity), from Redis
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresh: asyncio.Task[None] | None = None
        originals = {m: h for m, (_, h) in service.handlers.items()}
        self._original = originals
        service.register("join", JoinData, self._join)
        service.register("publish", PublishData, self._publish)
        service.register("unpublish", UnpublishData, self._unpublish)
        service.register("broadcast", BroadcastData, self._broadcast)
        service.departure_listeners.append(self._departed)
        registry.on_owner_lost(self._owner_lost)
        registry.on_node_lost(self._node_lost)
        service.stat_sources["cluster"] = self.stats

    def start(self) -> None:
        self._refresh = asyncio.ensure_future(self._refresh_loop())

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 2)
        for subscription in self._subscriptions.values():
            await subscription.unsubscribe()
        self._subscriptions.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _local(self, room: Room) -> list[str]:
        return [m.uid for m in room.members.values() if m.signalid == self.me]

    def _handler(self, method: str) -> Handler:
        return self._original[method]

    # --- a room followed while this node has members in it ------------------------------

    async def _attach(self, rid: str) -> None:
        """Follow the room's subject, then load its state: nothing said meanwhile is lost
        (an event for state already loaded is applied twice, which changes nothing)."""
        lock = self._attaching.setdefault(rid, asyncio.Lock())
        async with lock:
            if rid in self._subscriptions:
                return
            if self.service.rooms.get(rid) is None:
                self._mode_of.pop(rid, None)
            subscription = await self.bus.subscribe(room_subject(rid), self._on_event)
            try:
                members, pubs = await self.store.load_room(rid)
            except ClusterError:
                await subscription.unsubscribe()
                raise
            self._subscriptions[rid] = subscription
            if self.service.rooms.get(rid) is None and (mode := await self._mode(rid)):
                self._mode_of[rid] = mode
            for member in members:
                if member.signalid != self.me:
                    self._mirror_member(rid, member)
            room = self.service.rooms.get(rid)
            for pub in pubs:
                if (
                    room is not None
                    and pub.uid in room.members
                    and pub.mid not in room.publications
                ):
                    room.add_publication(pub)
                    room.promote(pub.uid)
            log.info("room-attached", rid=rid, members=len(members), pubs=len(pubs))

    async def _detach_if_unused(self, rid: str) -> None:
        room = self.service.rooms.get(rid)
        if room is not None and self._local(room):
            return
        subscription = self._subscriptions.pop(rid, None)
        if subscription is not None:
            await subscription.unsubscribe()
        if room is not None:  # only mirrored members are left: forget them, quietly
            for uid in list(room.members):
                with contextlib.suppress(RoomError):
                    self.service.rooms.leave(rid, uid)
        log.info("room-detached", rid=rid)

    async def _mode(self, rid: str) -> tuple[str, int] | None:
        try:
            return await self.store.room_mode(rid)
        except ClusterError:
            return None

    def _mirror_member(self, rid: str, member: Member) -> Room | None:
        room = self.service.rooms.get(rid)
        if room is not None and member.uid in room.members:
            return None
        try:
            if room is None and (mode := self._mode_of.get(rid)) is not None:
                chosen, capacity = mode  # the room as its first joiner made it
                return self.service.rooms.join(
                    rid, member, "p2p" if chosen == "p2p" else "sfu", capacity or None
                )
            return self.service.rooms.join(rid, member)
        except RoomError as exc:  # full here means full cluster-wide: the other node decides
            log.warning("mirror-refused", rid=rid, uid=member.uid, code=exc.code)
            return None

    # --- this node's changes ------------------------------------------------------------

    def _require_engines(self) -> None:
        if not self.bus.connected:
            raise ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, "the bus (NATS) is unreachable")
        if not self.registry.healthy:
            raise ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, "the registry (etcd) is unreachable")

    async def _join(self, session: PeerSession, data: JoinData) -> dict[str, Any]:
        self._require_engines()
        await self._attach(data.rid)
        member = Member(uid=session.uid, signalid=self.me, bizid=data.bizid)
        await self.store.add_member(data.rid, member)  # refused here while Redis is away
        try:
            response = await self._handler("join")(session, data)
        except CodedError:
            room = self.service.rooms.get(data.rid)
            if room is None or session.uid not in room.members:
                await self.store.remove_member(data.rid, session.uid, [])
            raise
        room = self.service.rooms.get(data.rid)
        if room is not None:
            self._mode_of[data.rid] = (room.mode, room.capacity)
            with contextlib.suppress(ClusterError):
                await self.store.set_room_mode(data.rid, room.mode, room.capacity)
        info = {"rid": data.rid, "uid": session.uid, "bizid": data.bizid}
        await self._send(data.rid, "peer-join", info, member=asdict(member))
        return response

    async def _publish(self, session: PeerSession, data: PublishData) -> dict[str, Any]:
        response = await self._handler("publish")(session, data)
        room = self.service.rooms.get(data.rid)
        pub = room.publications.get(response["mid"]) if room is not None else None
        if pub is not None and pub.has_media:
            with contextlib.suppress(ClusterError):  # the room here has it; others on return
                await self.store.add_publication(pub)
            await self._send(data.rid, "stream-add", _pub_info(pub), pub=_pub_info(pub))
        return response

    async def _unpublish(self, session: PeerSession, data: UnpublishData) -> dict[str, Any]:
        response = await self._handler("unpublish")(session, data)
        await self._publication_gone(data.rid, session.uid, data.mid)
        return response

    async def _publication_gone(self, rid: str, uid: str, mid: str) -> None:
        with contextlib.suppress(ClusterError):
            await self.store.remove_publications(rid, [mid])
        await self._send(rid, "stream-remove", {"rid": rid, "uid": uid, "mid": mid})

    async def _broadcast(self, session: PeerSession, data: BroadcastData) -> dict[str, Any]:
        response = await self._handler("broadcast")(session, data)
        info = {"rid": data.rid, "uid": session.uid, "data": data.data}
        await self._send(data.rid, "broadcast", info)
        return response

    def _departed(self, uid: str, rid: str | None) -> None:
        if rid is not None:
            self._spawn(self._left(uid, rid))

    async def _left(self, uid: str, rid: str) -> None:
        mids = await self._mids_of(rid, uid)
        with contextlib.suppress(ClusterError):
            await self.store.remove_member(rid, uid, mids)
        await self._send(rid, "peer-leave", {"rid": rid, "uid": uid}, mids=mids)
        await self._detach_if_unused(rid)

    async def _mids_of(self, rid: str, uid: str) -> list[str]:
        """The departed member's publications, as the cluster knows them."""
        try:
            _, pubs = await self.store.load_room(rid)
        except ClusterError:
            return []
        return [p.mid for p in pubs if p.uid == uid]

    async def _send(self, rid: str, method: str, data: dict[str, Any], **extra: Any) -> None:
        message = {"origin": self.me, "method": method, "data": data, **extra}
        try:
            await self.bus.publish(room_subject(rid), message)
        except ClusterError as exc:
            log.warning("event-not-sent", rid=rid, method=method, reason=exc.reason)

    # --- the other nodes' changes -------------------------------------------------------

    async def _on_event(self, message: dict[str, Any]) -> None:
        if message.get("origin") == self.me:
            return
        method, data = message["method"], message["data"]
        rid = data["rid"]
        room = self.service.rooms.get(rid)
        if method == "peer-join":
            room = self._mirror_member(rid, Member(**message["member"]))
            if room is not None:
                self.service.notify_many(room.told_of(data["uid"]), method, data)
        elif room is None:
            return
        elif method == "peer-leave":
            if data["uid"] not in room.members:
                return
            departure = self.service.rooms.leave(rid, data["uid"])
            for pub in departure.publications:
                if pub.has_media:
                    info = {"rid": rid, "uid": pub.uid, "mid": pub.mid}
                    self.service.notify_many(room.members, "stream-remove", info)
            self.service.notify_many(departure.told, method, data)
        elif method == "stream-add":
            pub = Publication(**message["pub"])
            if pub.uid in room.members and pub.mid not in room.publications:
                room.add_publication(pub)
                # Audience mode: a publisher is known to everyone; our members who had not
                # been told of it hear it arrive (its own node tells it of them).
                untold = room.promote(pub.uid)
                info = {"rid": rid, "uid": pub.uid, "bizid": room.members[pub.uid].bizid}
                self.service.notify_many(untold, "peer-join", info)
                self.service.notify_many(room.members, method, data, exclude=pub.uid)
        elif method == "stream-remove":
            if data["mid"] in room.publications:
                room.remove_publication(data["mid"])
                self.service.notify_many(room.members, method, data, exclude=data["uid"])
        elif method == "broadcast":
            self.service.notify_many(room.members, method, data, exclude=data["uid"])

    # --- an SFU node gone -----------------------------------------------------------------

    async def _owner_lost(self, placement: Placement) -> None:
        """Its streams end; their publishers (ours) are told to publish again."""
        room = self.service.rooms.get(placement.rid)
        if room is None:
            return
        lost = [p for p in room.publications.values() if p.sfuid == placement.sfuid]
        ours = [
            p.mid
            for p in lost
            if (m := room.members.get(p.uid)) is not None and m.signalid == self.me
        ]
        for pub in lost:
            room.remove_publication(pub.mid)
            info = {"rid": pub.rid, "uid": pub.uid, "mid": pub.mid}
            self.service.notify_many(room.members, "stream-remove", info, exclude=pub.uid)
            lost_info = {**info, "sfuid": pub.sfuid}
            self.service.notify_many(room.members, STREAM_LOST, lost_info, exclude=pub.uid)
        for pub in lost:
            if pub.mid in ours:
                info = {"rid": pub.rid, "mid": pub.mid, "sfuid": pub.sfuid, "reason": "sfu-lost"}
                self.service.notify_many((pub.uid,), REPUBLISH, info)
        with contextlib.suppress(ClusterError):
            await self.store.remove_publications(placement.rid, ours)
        log.info("room-owner-lost", rid=placement.rid, sfuid=placement.sfuid, streams=len(lost))

    # --- a signal node gone ---------------------------------------------------------------

    async def _node_lost(self, node: NodeInfo) -> None:
        """Its members leave our view now; their streams end on the SFU node after the
        grace period unless they came back (joined again through another signal node)."""
        if node.kind != "signal" or node.id == self.me:
            return
        for room in self.service.rooms:
            orphans = [m for m in room.members.values() if m.signalid == node.id]
            for member in orphans:
                departure = self.service.rooms.leave(room.rid, member.uid)
                mids = [p.mid for p in departure.publications]
                for pub in departure.publications:
                    if pub.has_media:
                        info = {"rid": room.rid, "uid": pub.uid, "mid": pub.mid}
                        self.service.notify_many(room.members, "stream-remove", info)
                info = {"rid": room.rid, "uid": member.uid}
                self.service.notify_many(departure.told, "peer-leave", info)
                with contextlib.suppress(ClusterError):
                    await self.store.remove_member(room.rid, member.uid, mids)
                self._spawn(self._end_after_grace(room.rid, member.uid))
            if orphans:
                log.info("signal-node-lost", id=node.id, rid=room.rid, members=len(orphans))

    async def _end_after_grace(self, rid: str, uid: str) -> None:
        await asyncio.sleep(self.peer_grace)
        room = self.service.rooms.get(rid)
        if room is not None and uid in room.members:
            return  # back through another signal node
        try:
            await self.service.sfu.close_peer(rid, uid)
        except CodedError as exc:
            log.warning("orphan-close-failed", rid=rid, uid=uid, code=exc.code)

    # --- upkeep ---------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_every)
            rids = [room.rid for room in self.service.rooms if self._local(room)]
            try:
                await self.store.refresh(rids)
            except ClusterError as exc:
                log.warning("state-refresh-failed", reason=exc.reason)

    def stats(self) -> dict[str, Any]:
        return {
            "signalid": self.me,
            "sfu_nodes": sorted(n.id for n in self.registry.nodes("sfu")),
            "sfu_loads": {n.id: asdict(n.load) for n in self.registry.nodes("sfu")},
            "sfu_states": {n.id: n.state for n in self.registry.nodes("sfu")},
            "followed_rooms": sorted(self._subscriptions),
        }
