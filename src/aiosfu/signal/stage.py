"""The classroom stage (连麦): a teacher brings students on stage and takes them off,
mutes, removes; a student raises a hand.

Extension requests in the seed-002 envelope. The admin ones need `roomAdmin` in the room
(a teacher's token); the room hears every change as a notification, so every page can
show who is on stage, muted or waiting with a raised hand:

- `update-grants {rid, uid, grants}` → `grants-updated {rid, uid, grants, by}`. Grants
  taken away take effect at once: publications they no longer cover are ended
  (`stream-remove`), subscriptions end when `canSubscribe` goes.
- `mute {rid, mid, kind, muted?}` → `stream-muted {rid, uid, mid, kind, muted, by}`. The
  SFU stops forwarding that track; a publisher may also mute its own streams.
- `remove {rid, uid}` → `peer-removed {rid, uid, by}`, then the usual `peer-leave`; the
  removed uid may not join that room again while it lasts.
- `raise-hand {rid}` / `lower-hand {rid, uid?}` → `hand-raised` / `hand-lowered {rid, uid}`;
  a teacher may lower anyone's hand, and bringing a student on stage lowers it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool

from aiosfu.log import get_logger
from aiosfu.room import Room
from aiosfu.signal.access import forbidden
from aiosfu.signal.grants import Grants, Source, updated
from aiosfu.signal.protocol import Id, Model, RoomData
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.signal")


class GrantChanges(Model):
    """The grants a room admin may change; the room, joining and visibility are the
    token's and stay as they are."""

    model_config = Model.model_config | {"extra": "forbid"}

    canPublish: StrictBool | None = None
    canPublishSources: list[Source] | None = Field(None, max_length=4)
    canSubscribe: StrictBool | None = None
    canPublishData: StrictBool | None = None
    roomRecord: StrictBool | None = None
    roomAdmin: StrictBool | None = None


class UpdateGrantsData(RoomData):
    uid: Id
    grants: GrantChanges


class MuteData(RoomData):
    mid: Id
    kind: Literal["audio", "video"]
    muted: StrictBool = True


class RemoveData(RoomData):
    uid: Id


class HandData(RoomData):
    uid: Id | None = None  # lower-hand: someone else's (a room admin)


class Stage:
    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.hands: dict[str, list[str]] = {}  # rid -> uids, in the order raised
        self.removed: dict[str, set[str]] = {}  # rid -> uids a teacher removed
        self.muted: dict[str, set[str]] = {}  # mid -> kinds muted
        service.register("update-grants", UpdateGrantsData, self.update_grants)
        service.register("mute", MuteData, self.mute)
        service.register("remove", RemoveData, self.remove)
        service.register("raise-hand", HandData, self.raise_hand)
        service.register("lower-hand", HandData, self.lower_hand)
        service.join_checks.append(self.may_join)
        service.join_extras.append(self.join_state)
        service.departure_listeners.append(self.peer_gone)

    def _room(self, session: PeerSession, rid: str) -> Room:
        return self.service.rooms.member_room(rid, session.uid)

    def _target(self, room: Room, uid: str) -> PeerSession:
        room.require_member(uid)
        target = self.service.sessions.get(uid)
        if target is None:
            raise forbidden(f"peer {uid!r} is not connected here")
        return target

    # --- a room admin's requests -----------------------------------------------------

    async def update_grants(self, session: PeerSession, data: UpdateGrantsData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        self.service.access.admin(session, data.rid)
        target = self._target(room, data.uid)
        changes = data.grants.model_dump(exclude_none=True)
        if "canPublishSources" in changes:
            changes["canPublishSources"] = tuple(changes["canPublishSources"])
        grants = updated(self.service.access.grants(target, data.rid), changes)
        target.grants[data.rid] = grants
        log.info("grants-updated", rid=data.rid, uid=data.uid, by=session.uid, **changes)
        await self.service.notify_room(
            room,
            "grants-updated",
            {"rid": data.rid, "uid": data.uid, "grants": grants.claim(), "by": session.uid},
        )
        await self._withdraw(room, target, grants)
        if grants.canPublish and data.uid in self.hands.get(data.rid, []):
            await self._lower(room, data.uid)
        return {"grants": grants.claim()}

    async def _withdraw(self, room: Room, target: PeerSession, grants: Grants) -> None:
        """End what `grants` no longer cover, now: a student taken off stage stops being
        seen and heard the moment the teacher decides, not when their page agrees."""
        sfu, uid = self.service.sfu, target.uid
        for pub in [p for p in room.publications.values() if p.uid == uid]:
            covered = all(grants.may_publish(s) for s in pub.sources)  # type: ignore[arg-type]
            if covered and (grants.canPublishData or not pub.has_data):
                continue
            await sfu.unpublish(room.rid, pub.mid)
            await self.service._remove_publication(room, pub.mid, tell_publisher=True)
            log.info("publication-withdrawn", rid=room.rid, uid=uid, mid=pub.mid)
        if not grants.canSubscribe:
            for sub in [s for s in room.subscriptions.values() if s.uid == uid]:
                await sfu.unsubscribe(room.rid, sub.sid)
                room.subscriptions.pop(sub.sid, None)
                await self.service.notify(
                    uid, "subscription-ended", {"rid": room.rid, "sid": sub.sid, "mid": sub.mid}
                )

    async def mute(self, session: PeerSession, data: MuteData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        pub = room.publication(data.mid)
        if pub.uid != session.uid:
            self.service.access.admin(session, data.rid)
        await self.service.sfu.pause(data.rid, data.mid, data.kind, data.muted)
        kinds = self.muted.setdefault(data.mid, set())
        if data.muted:
            kinds.add(data.kind)
        else:
            kinds.discard(data.kind)
        await self.service.notify_room(
            room,
            "stream-muted",
            {
                "rid": data.rid,
                "uid": pub.uid,
                "mid": data.mid,
                "kind": data.kind,
                "muted": data.muted,
                "by": session.uid,
            },
        )
        return {}

    async def remove(self, session: PeerSession, data: RemoveData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        self.service.access.admin(session, data.rid)
        if data.uid == session.uid:
            raise forbidden("to leave a room, use leave")
        target = self._target(room, data.uid)
        self.removed.setdefault(data.rid, set()).add(data.uid)
        await self.service.notify_room(
            room, "peer-removed", {"rid": data.rid, "uid": data.uid, "by": session.uid}
        )
        await self.service._leave(target, data.rid)
        log.info("peer-removed", rid=data.rid, uid=data.uid, by=session.uid)
        return {}

    # --- anyone's hand ---------------------------------------------------------------

    async def raise_hand(self, session: PeerSession, data: HandData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        hands = self.hands.setdefault(data.rid, [])
        if session.uid not in hands:
            hands.append(session.uid)
            await self.service.notify_room(
                room, "hand-raised", {"rid": data.rid, "uid": session.uid}
            )
        return {}

    async def lower_hand(self, session: PeerSession, data: HandData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        uid = data.uid or session.uid
        if uid != session.uid:
            self.service.access.admin(session, data.rid)
        await self._lower(room, uid)
        return {}

    async def _lower(self, room: Room, uid: str) -> None:
        hands = self.hands.get(room.rid, [])
        if uid in hands:
            hands.remove(uid)
            await self.service.notify_room(room, "hand-lowered", {"rid": room.rid, "uid": uid})

    # --- joins and departures --------------------------------------------------------

    def may_join(self, session: PeerSession, rid: str) -> None:
        if session.uid in self.removed.get(rid, ()):
            raise forbidden(f"a teacher removed you from room {rid!r}")

    def join_state(self, session: PeerSession, rid: str) -> dict[str, Any]:
        """What a late joiner needs to draw the stage (only once there is any)."""
        extra: dict[str, Any] = {}
        if self.hands.get(rid):
            extra["hands"] = list(self.hands[rid])
        room = self.service.rooms.get(rid)
        muted = [
            {"mid": mid, "kinds": sorted(kinds)}
            for mid, kinds in self.muted.items()
            if kinds and room is not None and mid in room.publications
        ]
        if muted:
            extra["muted"] = muted
        return extra

    def peer_gone(self, uid: str, rid: str | None) -> None:
        for scope, hands in self.hands.items():
            if (rid is None or scope == rid) and uid in hands:
                hands.remove(uid)
        live = {mid for room in self.service.rooms for mid in room.publications}
        self.muted = {mid: kinds for mid, kinds in self.muted.items() if mid in live}
        for scope in [r for r in self.removed if self.service.rooms.get(r) is None]:
            del self.removed[scope]
