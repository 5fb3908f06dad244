"""The seed-002 methods: room rules from `aiosfu.room`, media from an `Sfu`.

Each handler validates against the room state first, then calls the media plane, then
commits the state change and tells the other peers. Anything a handler raises as a
`CodedError` (`RoomError`, `SfuError`, `ProtocolError`) becomes an `ok:false` response with
its code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Any

from aiosfu.contract import CodedError, ErrorCode, Recording, SfuError
from aiosfu.log import get_logger
from aiosfu.room import Departure, Member, Publication, Room, RoomError, Rooms, Subscription
from aiosfu.sfu.interface import Sfu
from aiosfu.signal import protocol
from aiosfu.signal.access import AccessControl
from aiosfu.signal.coalesce import Coalescer
from aiosfu.signal.grants import Grants
from aiosfu.signal.limits import RATE_LIMITED
from aiosfu.signal.protocol import (
    BroadcastData,
    JoinData,
    KeepaliveData,
    LeaveData,
    Model,
    ProtocolError,
    PublishData,
    RecordData,
    SubscribeData,
    UnpublishData,
    UnsubscribeData,
)
from aiosfu.signal.sdp_guard import check_offer
from aiosfu.signal.session import PeerSession, encode, text_frame

log = get_logger("aiosfu.signal")

Handler = Callable[[PeerSession, Any], Awaitable[dict[str, Any]]]


class SignalService:
    def __init__(
        self,
        rooms: Rooms,
        sfu: Sfu,
        signal_id: str,
        auto_record: Callable[[str], bool] = lambda rid: False,
        access: AccessControl | None = None,
        room_count_interval: float = 1.0,
        audience_count_interval: float = 5.0,
        audience_count_rate: float = 200.0,
    ) -> None:
        self.access = access or AccessControl()
        # Extensions may refuse a join (raise) and add fields to its response (TURN
        # credentials, the stage's raised hands): called with the session and the rid.
        self.join_checks: list[Callable[[PeerSession, str], None]] = []
        self.join_extras: list[Callable[[PeerSession, str], dict[str, Any]]] = []
        # What happened, for the institution's backend (webhooks): (event, rid, details).
        # Called synchronously; a listener only queues.
        self.event_listeners: list[Callable[[str, str, dict[str, Any]], None]] = []
        self.rooms = rooms
        self.sfu = sfu
        self.signal_id = signal_id
        self.sessions: dict[str, PeerSession] = {}
        self.handlers: dict[str, tuple[type[Model], Handler]] = {}
        self.models: dict[str, type[Model]] = {}  # the handlers' models, read per request
        # Extensions hear of departures (uid, rid; rid None: the socket is gone) and add
        # their own sections to stats().
        self.departure_listeners: list[Callable[[str, str | None], None]] = []
        self.stat_sources: dict[str, Callable[[], Any]] = {}
        # Large rooms (docs/large-rooms.md): watchers hear the head count at most once per
        # `room_count_interval`, everyone else (one frame each) at most once per
        # `audience_count_interval`, and a room sends its audience no more than
        # `audience_count_rate` such frames a second on average (a larger room, less often).
        self.room_counts = Coalescer(room_count_interval, self._send_watchers_count)
        self.audience_count_interval = audience_count_interval
        self.audience_count_rate = audience_count_rate
        self.audience_counts = Coalescer(self._audience_interval, self._send_audience_count)
        # Publications whose transport has not connected yet: not announced until it has.
        self.connecting: set[str] = set()
        self.register("join", JoinData, self.join)
        self.register("leave", LeaveData, self.leave)
        self.register("keepalive", KeepaliveData, self.keepalive)
        self.register("publish", PublishData, self.publish)
        self.register("unpublish", UnpublishData, self.unpublish)
        self.register("subscribe", SubscribeData, self.subscribe)
        self.register("unsubscribe", UnsubscribeData, self.unsubscribe)
        self.register("broadcast", BroadcastData, self.broadcast)
        self.register("record", RecordData, self.record)
        self.register("stop-record", RecordData, self.stop_record)
        self.auto_record = auto_record  # rid -> record every publication of that room
        # A cluster's signal node serves every SFU node of the cluster (docs/cluster.md).
        self.serves_sfu: Callable[[str], bool] = lambda sfuid: sfuid == self.sfu.sfuid
        sfu.set_listener(self)

    def register(self, method: str, model: type[Model], handler: Handler) -> None:
        """Extensions add methods in the same envelope through here."""
        self.handlers[method] = (model, handler)
        self.models[method] = model

    # --- connection lifecycle -------------------------------------------------------

    async def attach(self, session: PeerSession) -> None:
        """A peer connected; an older connection with the same uid is replaced (with
        tokens, the new connection has proved to be that uid before it gets here)."""
        old = self.sessions.get(session.uid)
        if old is not None:
            log.info("peer-replaced", uid=session.uid)
            await old.close(4001, "replaced by a new connection")
            await old.closed.wait()
        self.sessions[session.uid] = session

    async def detach(self, session: PeerSession) -> None:
        """The peer's socket is gone: leave every room it was in."""
        try:
            for rid in list(session.rooms):
                await self._leave(session, rid)
        finally:
            if self.sessions.get(session.uid) is session:
                del self.sessions[session.uid]
            for listener in self.departure_listeners:
                listener(session.uid, None)
            session.closed.set()

    async def handle(self, session: PeerSession, text: str) -> dict[str, Any]:
        """One request frame in, one response out; never raises."""
        request_id: int | None = None
        try:
            request, data = protocol.parse_frame(text, self.models)
            request_id = request.id
            _, handler = self.handlers[request.method]
            session.touch()
            if session.bucket is not None and not session.bucket.take():
                raise ProtocolError(RATE_LIMITED, "too many requests; slow down")
            return protocol.response_ok(request.id, await handler(session, data))
        except CodedError as exc:
            if isinstance(exc, ProtocolError) and request_id is None:
                request_id = exc.request_id
            log.info("request-refused", uid=session.uid, code=exc.code, reason=exc.reason)
            return protocol.response_error(request_id, exc.code, exc.reason)
        except Exception:
            log.exception("request-failed", uid=session.uid)
            return protocol.response_error(
                request_id, ErrorCode.INTERNAL_ERROR, "the server failed to handle this request"
            )

    # --- notifications --------------------------------------------------------------

    def _event(self, event: str, rid: str, **details: Any) -> None:
        for listener in self.event_listeners:
            listener(event, rid, details)

    async def notify(self, uid: str, method: str, data: dict[str, Any]) -> None:
        session = self.sessions.get(uid)
        if session is not None:
            await session.send(protocol.notification(method, data))

    async def notify_room(
        self, room: Room, method: str, data: dict[str, Any], exclude: str | None = None
    ) -> None:
        self.notify_many(room.members, method, data, exclude)

    def notify_many(
        self, uids: Iterable[str], method: str, data: dict[str, Any], exclude: str | None = None
    ) -> None:
        """One event to many peers: encoded once, the same frame written to each of them."""
        text = encode(protocol.notification(method, data))
        frame = text_frame(text)
        sessions = self.sessions
        for uid in uids:
            if uid != exclude and (session := sessions.get(uid)) is not None:
                session.send_text(text, frame)

    def _count_changed(self, room: Room) -> None:
        if room.audience_mode:
            self.room_counts.changed(room.rid)
            self.audience_counts.changed(room.rid)

    def _audience_interval(self, rid: str) -> float:
        room = self.rooms.get(rid)
        members = len(room.members) if room is not None else 0
        return max(self.audience_count_interval, members / self.audience_count_rate)

    def _send_watchers_count(self, rid: str) -> None:
        room = self.rooms.get(rid)
        if room is not None:
            count = {"rid": rid, "members": len(room.members)}
            self.notify_many(room.watchers, "room-count", count)

    def _send_audience_count(self, rid: str) -> None:
        room = self.rooms.get(rid)
        if room is not None:
            count = {"rid": rid, "members": len(room.members)}
            watchers = room.watchers
            self.notify_many((u for u in room.members if u not in watchers), "room-count", count)

    # --- the seed-002 methods -------------------------------------------------------

    def _check_sfu(self, sfuid: str) -> None:
        if sfuid and not self.serves_sfu(sfuid):
            raise ProtocolError(ErrorCode.UNKNOWN_SFU, f"sfuid {sfuid!r} is not served here")

    async def join(
        self, session: PeerSession, data: JoinData, announce: bool = True
    ) -> dict[str, Any]:
        """`announce` False: the others already know the member (a cluster peer resuming)."""
        existing = self.rooms.get(data.rid)
        grants = self.access.join_grants(session, data.rid, data.bizid, existing)
        for check in self.join_checks:
            check(session, data.rid)
        identity = session.identity
        bizid = identity.bizid if identity is not None else data.bizid
        member = Member(uid=session.uid, signalid=self.signal_id, bizid=bizid, hidden=grants.hidden)
        room = self.rooms.join(data.rid, member, data.mode, data.capacity)
        if existing is None:
            room.bizid = bizid if identity is not None else ""
            self._event("room_started", data.rid, bizid=room.bizid)
        session.rooms.add(data.rid)
        session.grants[data.rid] = grants
        self._seat(room, session.uid, grants)
        self._event("participant_joined", data.rid, uid=session.uid, hidden=member.hidden)
        log.info("join", rid=data.rid, uid=session.uid, members=len(room.members))
        if announce and not member.hidden:
            self.notify_many(
                room.told_of(session.uid),
                "peer-join",
                {"rid": data.rid, "uid": session.uid, "bizid": bizid},
            )
        self._count_changed(room)
        response: dict[str, Any] = {
            "pubs": [
                _pub_info(p)
                for p in room.publications.values()
                if p.has_media and p.mid not in self.connecting
            ],
            "users": [
                {"signalid": m.signalid, "rid": data.rid, "uid": m.uid}
                for m in room.listed_for(session.uid)
                if not m.hidden
            ],
        }
        # Seed 002's exact response for a plain room; the mode and capacity when they matter.
        if room.mode != "sfu" or room.capacity or data.mode or data.capacity:
            response.update(mode=room.mode, capacity=room.capacity)
        if identity is not None:
            response["grants"] = grants.claim()
        for extra in self.join_extras:
            response.update(extra(session, data.rid))
        return response

    async def leave(self, session: PeerSession, data: LeaveData) -> dict[str, Any]:
        self.rooms.member_room(data.rid, session.uid)
        await self._leave(session, data.rid)
        return {}

    async def _leave(self, session: PeerSession, rid: str) -> None:
        session.rooms.discard(rid)
        session.grants.pop(rid, None)
        try:
            departure = self.rooms.leave(rid, session.uid)
        except RoomError:
            return
        for listener in self.departure_listeners:
            listener(session.uid, rid)
        await self.sfu.close_peer(rid, session.uid)
        for pub in departure.publications:
            if pub.has_media and pub.mid not in self.connecting:  # it was announced
                self._event("track_unpublished", rid, uid=pub.uid, mid=pub.mid)
        self._event("participant_left", rid, uid=session.uid)
        if self.rooms.get(rid) is None:
            self._event("room_finished", rid)
        await self._announce_departure(rid, departure)
        log.info("leave", rid=rid, uid=session.uid)

    async def _announce_departure(self, rid: str, departure: Departure) -> None:
        room = self.rooms.get(rid)
        if room is None:
            self.room_counts.forget(rid)
            self.audience_counts.forget(rid)
            return
        announced = [
            p for p in departure.publications if p.has_media and p.mid not in self.connecting
        ]
        self.connecting.difference_update(p.mid for p in departure.publications)
        for pub in announced:
            await self.notify_room(
                room, "stream-remove", {"rid": rid, "uid": pub.uid, "mid": pub.mid}
            )
        if not departure.member.hidden:
            self.notify_many(
                departure.told, "peer-leave", {"rid": rid, "uid": departure.member.uid}
            )
        self._count_changed(room)

    async def keepalive(self, session: PeerSession, data: KeepaliveData) -> dict[str, Any]:
        self.rooms.member_room(data.rid, session.uid)
        return {}

    async def publish(self, session: PeerSession, data: PublishData) -> dict[str, Any]:
        self.rooms.member_room(data.rid, session.uid).require_sfu("publish")
        minfo = data.minfo.model_dump()
        offer = check_offer(data.jsep.sdp, self.access.limits.offer_media_sections)
        sources = self.access.publish_sources(session, data.rid, offer, minfo)
        self.access.room_limits(self.rooms, session, "publications")
        published = await self.sfu.publish(data.rid, session.uid, data.jsep.sdp, minfo)
        pub = Publication(
            mid=published.mid,
            uid=session.uid,
            rid=data.rid,
            sfuid=published.sfuid,
            minfo=minfo,
            has_media=published.has_media,
            sources=sources,
            has_data=offer.has_data,
        )
        room = self.rooms.get(data.rid)
        if room is None or session.uid not in room.members:
            await self.sfu.unpublish(data.rid, published.mid)
            raise RoomError(ErrorCode.NOT_IN_ROOM, f"peer left room {data.rid!r} while publishing")
        room.add_publication(pub)
        if pub.has_media:  # a data-only publish has nothing to subscribe to
            self.connecting.add(pub.mid)  # announced once its transport connects
            if self.auto_record(data.rid):
                await self._record_automatically(pub)
        return {
            "jsep": {"type": "answer", "sdp": published.answer_sdp},
            "mid": published.mid,
            "sfuid": published.sfuid,
        }

    def _seat(self, room: Room, uid: str, grants: Grants) -> None:
        """With access control, grants decide who is audience (docs/large-rooms.md): a
        room admin sees everyone from the start, and a member who may publish is never
        audience; without it, the size threshold alone decides."""
        if self.access.open:
            return
        if grants.roomAdmin:
            room.promote(uid)
        elif grants.canPublish:
            room.early.add(uid)

    def _announce_publisher(self, room: Room, uid: str) -> None:
        """A publisher sees everyone and is seen by everyone (audience mode)."""
        untold = room.promote(uid)
        member = room.members[uid]
        if untold and not member.hidden:
            info = {"rid": room.rid, "uid": uid, "bizid": member.bizid}
            self.notify_many(untold, "peer-join", info)
        for other in untold:
            if not room.members[other].hidden:
                info = {"rid": room.rid, "uid": other, "bizid": room.members[other].bizid}
                self.notify_many((uid,), "peer-join", info)

    async def unpublish(self, session: PeerSession, data: UnpublishData) -> dict[str, Any]:
        self._check_sfu(data.sfuid)
        room = self.rooms.member_room(data.rid, session.uid)
        if self.access.is_admin(session, data.rid):
            pub = room.publication(data.mid)
        else:
            pub = room.own_publication(session.uid, data.mid)
        await self.sfu.unpublish(data.rid, data.mid)
        # A teacher ending a student's stream: the student hears of it too.
        await self._remove_publication(room, data.mid, tell_publisher=pub.uid != session.uid)
        return {}

    async def _remove_publication(self, room: Room, mid: str, tell_publisher: bool = False) -> None:
        if mid not in room.publications:
            return
        pub, orphaned = room.remove_publication(mid)  # the SFU closed their transports
        if not pub.has_media:
            return
        if mid in self.connecting:
            # Never announced: only its early subscribers hear of it, and its publisher
            # when someone else ended it.
            self.connecting.discard(mid)
            info = {"rid": room.rid, "uid": pub.uid, "mid": mid}
            told = {s.uid for s in orphaned} | ({pub.uid} if tell_publisher else set())
            for uid in told:
                await self.notify(uid, "stream-remove", info)
            return
        self._event("track_unpublished", room.rid, uid=pub.uid, mid=mid)
        await self.notify_room(
            room,
            "stream-remove",
            {"rid": room.rid, "uid": pub.uid, "mid": mid},
            exclude=None if tell_publisher else pub.uid,
        )
        log.info("stream-removed", rid=room.rid, uid=pub.uid, mid=mid)

    async def subscribe(self, session: PeerSession, data: SubscribeData) -> dict[str, Any]:
        self._check_sfu(data.sfuid)
        room = self.rooms.member_room(data.rid, session.uid)
        room.require_sfu("subscribe")
        room.publication(data.mid)
        self.access.subscribe(session, data.rid)
        check_offer(data.jsep.sdp, self.access.limits.offer_media_sections)
        self.access.room_limits(self.rooms, session, "subscriptions")
        subscribed = await self.sfu.subscribe(data.rid, session.uid, data.mid, data.jsep.sdp)
        try:
            room.add_subscription(
                Subscription(sid=subscribed.sid, uid=session.uid, mid=data.mid, rid=data.rid)
            )
        except RoomError:
            await self.sfu.unsubscribe(data.rid, subscribed.sid)
            raise
        return {"jsep": {"type": "answer", "sdp": subscribed.answer_sdp}, "sid": subscribed.sid}

    async def unsubscribe(self, session: PeerSession, data: UnsubscribeData) -> dict[str, Any]:
        self._check_sfu(data.sfuid)
        room = self.rooms.member_room(data.rid, session.uid)
        sub = room.subscriptions.get(data.sid)
        owner = sub.uid if sub is not None and self.access.is_admin(session, data.rid) else None
        room.own_subscription(owner or session.uid, data.sid, data.mid)
        await self.sfu.unsubscribe(data.rid, data.sid)
        room.remove_subscription(data.sid)
        return {}

    async def broadcast(self, session: PeerSession, data: BroadcastData) -> dict[str, Any]:
        room = self.rooms.member_room(data.rid, session.uid)
        self.access.data(session, data.rid)
        await self.notify_room(
            room,
            "broadcast",
            {"rid": data.rid, "uid": session.uid, "data": data.data},
            exclude=session.uid,
        )
        return {}

    # --- recording (extension, docs/recording.md) --------------------------------------

    async def record(self, session: PeerSession, data: RecordData) -> dict[str, Any]:
        self._check_sfu(data.sfuid)
        room = self.rooms.member_room(data.rid, session.uid)
        self.access.record(session, data.rid)
        room.publication(data.mid)
        return _recording_info(await self.sfu.start_recording(data.rid, data.mid))

    async def stop_record(self, session: PeerSession, data: RecordData) -> dict[str, Any]:
        self._check_sfu(data.sfuid)
        room = self.rooms.member_room(data.rid, session.uid)
        self.access.record(session, data.rid)
        room.publication(data.mid)
        return _recording_info(await self.sfu.stop_recording(data.rid, data.mid))

    async def _record_automatically(self, pub: Publication) -> None:
        try:
            await self.sfu.start_recording(pub.rid, pub.mid)
        except SfuError as exc:  # publishing goes on; the room hears why nothing records
            log.warning("record-failed", rid=pub.rid, mid=pub.mid, code=exc.code, reason=exc.reason)
            room = self.rooms.get(pub.rid)
            if room is not None:
                info = {"rid": pub.rid, "mid": pub.mid, "uid": pub.uid, "file": None}
                await self.notify_room(
                    room, "record-stopped", {**info, "reason": "error", "error": exc.reason}
                )

    async def recording_started(self, recording: Recording) -> None:
        room = self.rooms.get(recording.rid)
        if room is not None:
            await self.notify_room(room, "record-started", _recording_info(recording))

    async def recording_stopped(self, recording: Recording) -> None:
        info = {k: v for k, v in _recording_info(recording).items() if k != "rid"}
        self._event("recording_finished", recording.rid, **info)
        room = self.rooms.get(recording.rid)
        if room is not None:
            await self.notify_room(room, "record-stopped", _recording_info(recording))

    # --- media ended on its own (SfuListener) -----------------------------------------

    async def publication_connected(self, rid: str, mid: str) -> None:
        room = self.rooms.get(rid)
        pub = room.publications.get(mid) if room is not None else None
        if room is None or pub is None or mid not in self.connecting:
            return
        self.connecting.discard(mid)
        self._announce_publisher(room, pub.uid)
        self._event("track_published", rid, uid=pub.uid, mid=mid, minfo=pub.minfo)
        await self.notify_room(room, "stream-add", _pub_info(pub), exclude=pub.uid)
        log.info("stream-announced", rid=rid, uid=pub.uid, mid=mid)

    async def publication_ended(self, rid: str, mid: str, reason: str) -> None:
        room = self.rooms.get(rid)
        pub = room.publications.get(mid) if room is not None else None
        if room is None or pub is None:
            return
        await self.notify(pub.uid, "publish-failed", {"rid": rid, "mid": mid, "reason": reason})
        await self._remove_publication(room, mid)

    async def subscription_ended(self, rid: str, sid: str, reason: str) -> None:
        room = self.rooms.get(rid)
        sub = room.subscriptions.get(sid) if room is not None else None
        if room is None or sub is None:
            return
        room.remove_subscription(sid)
        await self.notify(
            sub.uid, "subscribe-failed", {"rid": rid, "mid": sub.mid, "sid": sid, "reason": reason}
        )

    def stats(self) -> dict[str, Any]:
        return {
            "peers": len(self.sessions),
            "rooms": {
                room.rid: {
                    "mode": room.mode,
                    "capacity": room.capacity,
                    "members": sorted(room.members),
                    "publications": sorted(room.publications),
                    "subscriptions": len(room.subscriptions),
                }
                for room in self.rooms
            },
            **{name: source() for name, source in self.stat_sources.items()},
        }


def _pub_info(pub: Publication) -> dict[str, Any]:
    info = asdict(pub)
    return {k: info[k] for k in ("mid", "minfo", "rid", "sfuid", "uid")}


def _recording_info(recording: Recording) -> dict[str, Any]:
    info: dict[str, Any] = {
        "rid": recording.rid,
        "mid": recording.mid,
        "uid": recording.uid,
        "file": recording.file,
        "startedAt": recording.started_at,
    }
    if recording.reason:  # it has stopped
        info.update(
            reason=recording.reason,
            duration=recording.duration,
            size=recording.size,
            error=recording.error,
        )
    return info
