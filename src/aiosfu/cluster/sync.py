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
member already in a room goes on (its media never touches either). The room's member
limit counts cluster-wide, in Redis (`Store.add_member`).

A peer that comes back through another signal node with the same uid resumes: its
membership and its publications on the SFU node are adopted (`peer-resume` to the other
nodes) instead of ending. Before its old node's loss is noticed nobody sees anything
change; after it, its streams wait in the room's away record for the grace period.

Whatever Redis lost (a restart without persistence, keys expired during an outage) this
node writes again for its own members on the first refresh that finds it missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict
from typing import Any

from aiosfu.cluster.bus import Bus, Subscription, room_subject
from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.nodes import NodeInfo
from aiosfu.cluster.registry import Placement, Registry
from aiosfu.cluster.store import Away, Store, pub_dict, pub_from
from aiosfu.contract import CodedError, ErrorCode, Recording
from aiosfu.log import get_logger
from aiosfu.room import Member, Publication, Room, RoomError
from aiosfu.signal.grants import Grants
from aiosfu.signal.protocol import BroadcastData, JoinData, UnpublishData
from aiosfu.signal.service import Handler, SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.cluster.sync")

# Extension notification: the publication's SFU node is gone; publish it again (the room
# has been or will be placed on another node).
REPUBLISH = "republish"
# Extension notification after that stream's `stream-remove`: it ended because its SFU
# node is gone, so its publisher will publish again (subscribers may resubscribe).
STREAM_LOST = "stream-lost"


# Publications that ended on their SFU node, remembered so a resume never adopts one that
# ended while its member was away (every signal node hears every SFU node's events).
ENDED_REMEMBERED = 10_000


class _Listener:
    """The SFU nodes' events go to the service as before; `ended` hears which
    publications ended."""

    def __init__(self, service: SignalService, ended: Callable[[str], None]) -> None:
        self.service = service
        self.ended = ended

    async def publication_connected(self, rid: str, mid: str) -> None:
        await self.service.publication_connected(rid, mid)

    async def publication_ended(self, rid: str, mid: str, reason: str) -> None:
        self.ended(mid)
        await self.service.publication_ended(rid, mid, reason)

    async def subscription_ended(self, rid: str, sid: str, reason: str) -> None:
        await self.service.subscription_ended(rid, sid, reason)

    async def recording_started(self, recording: Recording) -> None:
        await self.service.recording_started(recording)

    async def recording_stopped(self, recording: Recording) -> None:
        await self.service.recording_stopped(recording)


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
        self._unsynced = False  # a refresh failed: check everything on the next one
        # Extensions hear each event of the other nodes (method, message) once applied.
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        # ... and load their own state of a room this node starts following (rid).
        self.attach_listeners: list[Callable[[str], Awaitable[None]]] = []
        # ... and write their own state of a room again when Redis lost it (the room).
        self.resync_listeners: list[Callable[[Room], Awaitable[None]]] = []
        self._ended: OrderedDict[str, None] = OrderedDict()
        service.sfu.set_listener(_Listener(service, self._publication_ended))
        originals = {m: h for m, (_, h) in service.handlers.items()}
        self._original = originals
        service.register("join", JoinData, self._join)
        service.register("unpublish", UnpublishData, self._unpublish)
        service.register("broadcast", BroadcastData, self._broadcast)
        service.departure_listeners.append(self._departed)
        service.event_listeners.append(self._service_event)
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
                for listener in self.attach_listeners:
                    await listener(rid)
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
        with contextlib.suppress(ClusterError):
            await self.store.forget_node_room(self.me, rid)
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
                joined = self.service.rooms.join(
                    rid, member, "p2p" if chosen == "p2p" else "sfu", capacity or None
                )
            else:
                joined = self.service.rooms.join(rid, member)
        except RoomError as exc:  # full here means full cluster-wide: the other node decides
            log.warning("mirror-refused", rid=rid, uid=member.uid, code=exc.code)
            return None
        if room is None:  # with tokens, the room is its institution's (one for all members)
            joined.bizid = member.bizid
        return joined

    def _member_limit(self, rid: str) -> int:
        limit = self.service.access.limits.members_per_room
        room = self.service.rooms.get(rid)
        capacity = room.capacity if room is not None else self._mode_of.get(rid, ("", 0))[1]
        return min(limit, capacity) if capacity else limit

    # --- this node's changes ------------------------------------------------------------

    def _require_engines(self) -> None:
        if not self.bus.connected:
            raise ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, "the bus (NATS) is unreachable")
        if not self.registry.healthy:
            raise ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, "the registry (etcd) is unreachable")

    async def _join(self, session: PeerSession, data: JoinData) -> dict[str, Any]:
        self._require_engines()
        rid, uid, identity = data.rid, session.uid, session.identity
        await self._attach(rid)
        member = Member(
            uid=uid,
            signalid=self.me,
            bizid=identity.bizid if identity is not None else data.bizid,
            hidden=identity.grants.hidden if identity is not None else False,
        )
        room = self.service.rooms.get(rid)
        # The same uid in the room through another signal node: its connection moved here.
        moved = room.members.get(uid) if room is not None else None
        if moved is not None and moved.signalid == self.me:
            moved = None  # already joined here: the handler refuses it as ever
        # Refused here while Redis is away, or when the room is full cluster-wide.
        away = await self.store.add_member(rid, member, self._member_limit(rid))
        kept: list[Publication] = away.pubs if away is not None else []
        if room is not None and moved is not None:
            kept = [p for p in room.publications.values() if p.uid == uid]
            self.service.rooms.leave(rid, uid)  # quietly: it stays in everyone's view
        try:
            if moved is not None:  # our members know it already: no second peer-join
                response = await self.service.join(session, data, announce=False)
            else:
                response = await self._handler("join")(session, data)
        except CodedError:
            room = self.service.rooms.get(rid)
            if room is None or uid not in room.members:
                await self._undo_join(rid, uid, moved, kept, away)
                await self._detach_if_unused(rid)  # a refused joiner follows nothing
            raise
        room = self.service.rooms.get(rid)
        if room is not None:
            self._mode_of[rid] = (room.mode, room.capacity)
            with contextlib.suppress(ClusterError):
                await self.store.set_room_mode(rid, room.mode, room.capacity)
        info = {"rid": rid, "uid": uid, "bizid": member.bizid}
        if room is None or (moved is None and away is None):
            await self.send(rid, "peer-join", info, member=asdict(member))
            return response
        adopted = self._adopt(room, uid, kept, announce=moved is None)
        with contextlib.suppress(ClusterError):
            await self.store.restore(rid, [], adopted)
            # A room admin's changes hold as they did on the old node, not the token's.
            if (grants := await self.store.grants_of(rid, uid)) is not None:
                session.grants[rid] = Grants.model_validate(grants)
                if "grants" in response:
                    response["grants"] = session.grants[rid].claim()
        await self.send(rid, "peer-resume", info, member=asdict(room.members[uid]),
                        pubs=[pub_dict(p) for p in adopted])  # fmt: skip
        log.info("peer-resumed", rid=rid, uid=uid, mids=",".join(p.mid for p in adopted),
                 was=moved.signalid if moved is not None else "away")  # fmt: skip
        return {**response, "resumed": [p.mid for p in adopted]}

    def _adopt(
        self, room: Room, uid: str, pubs: list[Publication], announce: bool
    ) -> list[Publication]:
        """The resumed member's publications, live on the SFU node, are its own again; our
        members hear of them only if they had been told they ended (`announce`)."""
        adopted = [p for p in pubs if p.mid not in room.publications and p.mid not in self._ended]
        for pub in adopted:
            room.add_publication(pub)
        if adopted:
            self._promoted(room, uid)
        for pub in adopted:
            if announce and pub.has_media:
                self.service.notify_many(room.members, "stream-add", _pub_info(pub), exclude=uid)
        return adopted

    def _promoted(self, room: Room, uid: str) -> None:
        """A publisher is known to everyone (audience mode): our members who had not been
        told of it hear it arrive."""
        untold = room.promote(uid)
        member = room.members[uid]
        if not member.hidden:
            info = {"rid": room.rid, "uid": uid, "bizid": member.bizid}
            self.service.notify_many(untold, "peer-join", info)

    async def _undo_join(
        self,
        rid: str,
        uid: str,
        moved: Member | None,
        kept: list[Publication],
        away: Away | None,
    ) -> None:
        """A refused join leaves the member as it was: gone, away, or on its old node."""
        if moved is not None:
            room = self._mirror_member(rid, moved)
            for pub in kept if room is not None else []:
                room.add_publication(pub)
            await self.store.add_member(rid, moved)
        elif away is not None:
            await self.store.set_away(rid, away, self.peer_grace + 10)
        else:
            await self.store.remove_member(rid, uid, [])

    def _publication_ended(self, mid: str) -> None:
        self._ended[mid] = None
        if len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)

    def _service_event(self, event: str, rid: str, details: dict[str, Any]) -> None:
        """A publication is announced to the cluster when its transport connects, as to
        this node's own members (`track_published`), not at the publish answer."""
        if event == "track_published":
            self._spawn(self._published(rid, details["mid"]))

    async def _published(self, rid: str, mid: str) -> None:
        room = self.service.rooms.get(rid)
        pub = room.publications.get(mid) if room is not None else None
        if pub is None:
            return
        await self.send(rid, "stream-add", _pub_info(pub), pub=pub_dict(pub))
        with contextlib.suppress(ClusterError):  # the room here has it; others on return
            await self.store.add_publication(pub)

    async def _unpublish(self, session: PeerSession, data: UnpublishData) -> dict[str, Any]:
        response = await self._handler("unpublish")(session, data)
        await self.publication_gone(data.rid, session.uid, data.mid)
        return response

    async def publication_gone(self, rid: str, uid: str, mid: str) -> None:
        """A publication ended here: the cluster forgets it, the other nodes' members hear."""
        with contextlib.suppress(ClusterError):
            await self.store.remove_publications(rid, [mid])
        await self.send(rid, "stream-remove", {"rid": rid, "uid": uid, "mid": mid})

    async def _broadcast(self, session: PeerSession, data: BroadcastData) -> dict[str, Any]:
        response = await self._handler("broadcast")(session, data)
        info = {"rid": data.rid, "uid": session.uid, "data": data.data}
        await self.send(data.rid, "broadcast", info)
        return response

    def _departed(self, uid: str, rid: str | None) -> None:
        if rid is not None:
            self._spawn(self._left(uid, rid))

    async def _left(self, uid: str, rid: str) -> None:
        mids = await self._mids_of(rid, uid)
        with contextlib.suppress(ClusterError):
            await self.store.remove_member(rid, uid, mids)
        await self.send(rid, "peer-leave", {"rid": rid, "uid": uid}, mids=mids)
        await self._detach_if_unused(rid)

    async def _mids_of(self, rid: str, uid: str) -> list[str]:
        """The departed member's publications, as the cluster knows them."""
        try:
            _, pubs = await self.store.load_room(rid)
        except ClusterError:
            return []
        return [p.mid for p in pubs if p.uid == uid]

    async def send(self, rid: str, method: str, data: dict[str, Any], **extra: Any) -> None:
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
            member = Member(**message["member"])
            room = self._mirror_member(rid, member)
            if room is not None and not member.hidden:
                self.service.notify_many(room.told_of(data["uid"]), method, data)
        elif method == "peer-resume":
            self._resumed_elsewhere(rid, Member(**message["member"]), message["pubs"])
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
            if not departure.member.hidden:
                self.service.notify_many(departure.told, method, data)
        elif method == "stream-add":
            pub = pub_from(message["pub"])
            if pub.uid in room.members and pub.mid not in room.publications:
                room.add_publication(pub)
                # Audience mode: its own node tells the publisher of the others.
                self._promoted(room, pub.uid)
                self.service.notify_many(room.members, method, data, exclude=pub.uid)
        elif method == "stream-remove":
            if data["mid"] in room.publications:
                room.remove_publication(data["mid"])
                self.service.notify_many(room.members, method, data, exclude=data["uid"])
        elif method == "broadcast":
            self.service.notify_many(room.members, method, data, exclude=data["uid"])
        for listener in self.listeners:
            listener(method, message)

    def _resumed_elsewhere(self, rid: str, member: Member, pubs: list[dict[str, Any]]) -> None:
        """A member resumed through another signal node: only its node changes for whoever
        still had it in view; whoever had seen it leave sees it and its streams come back."""
        room = self.service.rooms.get(rid)
        uid = member.uid
        if room is not None and uid in room.members:
            session = self.service.sessions.get(uid)
            if room.members[uid].signalid == self.me and session is not None:
                # Our connection of that uid was replaced: let go of it, not of its media.
                session.rooms.discard(rid)
                session.grants.pop(rid, None)
                if not session.rooms:
                    reason = f"resumed through signal node {member.signalid}"
                    self._spawn(session.close(4001, reason))
                room.members[uid] = member
                self._spawn(self._detach_if_unused(rid))  # if it was our last member there
            room.members[uid] = member
            announce = False
        else:
            room = self._mirror_member(rid, member)
            if room is None:
                return
            if not member.hidden:
                info = {"rid": rid, "uid": uid, "bizid": member.bizid}
                self.service.notify_many(room.told_of(uid), "peer-join", info)
            announce = True
        self._adopt(room, uid, [pub_from(p) for p in pubs], announce)

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
                for pub in departure.publications:
                    if pub.has_media:
                        info = {"rid": room.rid, "uid": pub.uid, "mid": pub.mid}
                        self.service.notify_many(room.members, "stream-remove", info)
                if not member.hidden:
                    info = {"rid": room.rid, "uid": member.uid}
                    self.service.notify_many(departure.told, "peer-leave", info)
                # Every node that saw it go writes the same record: the first to come back
                # through a node resumes from it.
                with contextlib.suppress(ClusterError):
                    away = Away(member, departure.publications)
                    await self.store.set_away(room.rid, away, self.peer_grace + 10)
                self._spawn(self._end_after_grace(room.rid, member.uid))
            if orphans:
                log.info("signal-node-lost", id=node.id, rid=room.rid, members=len(orphans))
        # Its rooms that no node here follows (all their members were on it) go the same
        # way, from Redis; every surviving node does this, the away records settle who ends.
        followed = {room.rid for room in self.service.rooms}
        try:
            for rid in sorted(await self.store.node_rooms(node.id) - followed):
                await self._orphaned_elsewhere(rid, node.id)
        except ClusterError as exc:
            log.warning("lost-node-rooms-unread", id=node.id, reason=exc.reason)

    async def _orphaned_elsewhere(self, rid: str, lost: str) -> None:
        members, pubs = await self.store.load_room(rid)
        orphans = [m for m in members if m.signalid == lost]
        for member in orphans:
            away = Away(member, [p for p in pubs if p.uid == member.uid])
            await self.store.set_away(rid, away, self.peer_grace + 10)
            self._spawn(self._end_after_grace(rid, member.uid))
        await self.store.forget_node_room(lost, rid)
        log.info("signal-node-lost", id=lost, rid=rid, members=len(orphans), followed=False)

    async def _end_after_grace(self, rid: str, uid: str) -> None:
        await asyncio.sleep(self.peer_grace)
        room = self.service.rooms.get(rid)
        if room is not None and uid in room.members:
            return  # back through another signal node
        try:
            if not await self.store.take_away(rid, uid):
                return  # it resumed, or another node ends it
        except ClusterError:
            pass  # Redis away: every node that saw it go ends it (a second close is harmless)
        try:
            await self.service.sfu.close_peer(rid, uid)
        except CodedError as exc:
            log.warning("orphan-close-failed", rid=rid, uid=uid, code=exc.code)

    # --- upkeep ---------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0 if self._unsynced else self.refresh_every)
            await self.refresh()

    async def refresh(self) -> None:
        """Extend the TTLs of our rooms' state, and write again whatever Redis lost."""
        rooms = {room.rid: room for room in self.service.rooms if self._local(room)}
        try:
            missing = await self.store.refresh(list(rooms), self.me)
            if self._unsynced:  # it may also hold what changed here while it was away
                missing = list(rooms)
            for rid in missing:
                await self._resync(rooms[rid])
            if missing:
                log.info("state-resynced", rooms=len(missing), after_outage=self._unsynced)
            self._unsynced = False
        except ClusterError as exc:
            self._unsynced = True
            log.warning("state-refresh-failed", reason=exc.reason)

    async def _resync(self, room: Room) -> None:
        """Our members and their publications as they are now; entries of ours that Redis
        still holds but are gone here (a leave it missed) go."""
        ours = {uid: room.members[uid] for uid in self._local(room)}
        pubs = [p for p in room.publications.values() if p.uid in ours and p.has_media]
        members, stored = await self.store.load_room(room.rid)
        gone = [m.uid for m in members if m.signalid == self.me and m.uid not in ours]
        for uid in gone:
            await self.store.remove_member(room.rid, uid, [])
        stale = [
            p.mid
            for p in stored
            if p.uid in gone or (p.uid in ours and p.mid not in room.publications)
        ]
        await self.store.remove_publications(room.rid, stale)
        await self.store.restore(room.rid, ours.values(), pubs)
        await self.store.set_room_mode(room.rid, room.mode, room.capacity)
        for listener in self.resync_listeners:
            await listener(room)

    def stats(self) -> dict[str, Any]:
        return {
            "signalid": self.me,
            "sfu_nodes": sorted(n.id for n in self.registry.nodes("sfu")),
            "sfu_loads": {n.id: asdict(n.load) for n in self.registry.nodes("sfu")},
            "sfu_states": {n.id: n.state for n in self.registry.nodes("sfu")},
            "followed_rooms": sorted(self._subscriptions),
        }
