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

In a cluster (`aiosfu.cluster.stage_sync`) the room spans signal nodes: every announcement
also goes to the other nodes (`Elsewhere.announce`), which keep the hands, mutes and
removals in step from them (`heard`), and an action on a member connected to another
node is carried out there (`Elsewhere.act` → `act_here`), where its session and grants
live.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import Field, StrictBool

from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.room import Member, Room, RoomError
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


# The notifications a stage change makes; in a cluster each reaches every signal node.
ANNOUNCEMENTS = ("grants-updated", "stream-muted", "peer-removed", "hand-raised", "hand-lowered")


class Elsewhere(Protocol):
    """The rest of a cluster, for a room that spans signal nodes."""

    async def announce(self, rid: str, method: str, data: dict[str, Any]) -> None: ...

    async def act(
        self, member: Member, action: str, rid: str, body: dict[str, Any], by: str
    ) -> dict[str, Any]:
        """Carry out `action` on a member connected to another signal node; its reply."""
        ...

    async def withdrawn(self, rid: str, uid: str, mid: str) -> None:
        """A publication ended here because its grants went: the other nodes hear it."""
        ...


class Stage:
    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.elsewhere: Elsewhere | None = None
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

    def _target(self, room: Room, uid: str, forward: bool = True) -> PeerSession | None:
        """The member's session, or None when it is connected to another signal node (and
        `forward`: the action is then carried out there)."""
        member = room.require_member(uid)
        remote = member.signalid != self.service.signal_id
        if remote and forward and self.elsewhere is not None:
            return None
        target = self.service.sessions.get(uid)
        if target is None or remote:
            raise forbidden(f"peer {uid!r} is not connected here")
        return target

    async def _announce(self, room: Room, method: str, data: dict[str, Any]) -> None:
        await self.service.notify_room(room, method, data)
        if self.elsewhere is not None:
            await self.elsewhere.announce(room.rid, method, data)

    # --- a room admin's requests -----------------------------------------------------

    async def update_grants(self, session: PeerSession, data: UpdateGrantsData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        self.service.access.admin(session, data.rid)
        grants = await self.apply_grants(room, data.uid, data.grants, session.uid)
        return {"grants": grants.claim()}

    async def apply_grants(self, room: Room, uid: str, changes: GrantChanges, by: str) -> Grants:
        """Change a member's grants (the caller checked who may) and enforce them now."""
        target = self._target(room, uid)
        values = changes.model_dump(exclude_none=True)
        if target is None:
            assert self.elsewhere is not None
            member = room.members[uid]
            reply = await self.elsewhere.act(member, "update-grants", room.rid, values, by)
            return Grants.model_validate(reply["grants"])
        if "canPublishSources" in values:
            values["canPublishSources"] = tuple(values["canPublishSources"])
        grants = updated(self.service.access.grants(target, room.rid), values)
        target.grants[room.rid] = grants
        log.info("grants-updated", rid=room.rid, uid=uid, by=by, **values)
        await self._announce(
            room,
            "grants-updated",
            {"rid": room.rid, "uid": uid, "grants": grants.claim(), "by": by},
        )
        await self._withdraw(room, target, grants)
        if grants.canPublish and uid in self.hands.get(room.rid, []):
            await self._lower(room, uid)
        return grants

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
            if self.elsewhere is not None:
                await self.elsewhere.withdrawn(room.rid, uid, pub.mid)
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
        await self.set_muted(room, data.mid, data.kind, data.muted, session.uid)
        return {}

    async def set_muted(self, room: Room, mid: str, kind: str, muted: bool, by: str) -> None:
        pub = room.publication(mid)
        await self.service.sfu.pause(room.rid, mid, kind, muted)
        kinds = self.muted.setdefault(mid, set())
        if muted:
            kinds.add(kind)
        else:
            kinds.discard(kind)
        await self._announce(
            room,
            "stream-muted",
            {"rid": room.rid, "uid": pub.uid, "mid": mid, "kind": kind, "muted": muted, "by": by},
        )

    async def remove(self, session: PeerSession, data: RemoveData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        self.service.access.admin(session, data.rid)
        if data.uid == session.uid:
            raise forbidden("to leave a room, use leave")
        await self.remove_member(room, data.uid, session.uid)
        return {}

    async def remove_member(self, room: Room, uid: str, by: str) -> None:
        target = self._target(room, uid)
        self.removed.setdefault(room.rid, set()).add(uid)
        if target is None:
            assert self.elsewhere is not None
            await self.elsewhere.act(room.members[uid], "remove", room.rid, {}, by)
            return
        await self._announce(room, "peer-removed", {"rid": room.rid, "uid": uid, "by": by})
        await self.service._leave(target, room.rid)
        log.info("peer-removed", rid=room.rid, uid=uid, by=by)

    # --- anyone's hand ---------------------------------------------------------------

    async def raise_hand(self, session: PeerSession, data: HandData) -> dict[str, Any]:
        room = self._room(session, data.rid)
        hands = self.hands.setdefault(data.rid, [])
        if session.uid not in hands:
            hands.append(session.uid)
            await self._announce(room, "hand-raised", {"rid": data.rid, "uid": session.uid})
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
            await self._announce(room, "hand-lowered", {"rid": room.rid, "uid": uid})

    # --- the other signal nodes of a cluster ------------------------------------------

    async def act_here(
        self, action: str, rid: str, uid: str, body: dict[str, Any], by: str
    ) -> dict[str, Any]:
        """An action another signal node's room admin took on a member connected here
        (that node checked the admin's grants)."""
        room = self.service.rooms.member_room(rid, uid)
        self._target(room, uid, forward=False)
        if action == "update-grants":
            grants = await self.apply_grants(room, uid, GrantChanges.model_validate(body), by)
            return {"grants": grants.claim()}
        if action == "remove":
            await self.remove_member(room, uid, by)
            return {}
        raise RoomError(ErrorCode.BAD_REQUEST, f"no stage action {action!r}")

    def heard(self, method: str, data: dict[str, Any]) -> None:
        """Another signal node's announcement: kept here too, and told to our members."""
        rid, uid = data["rid"], data["uid"]
        hands = self.hands.setdefault(rid, [])
        if method == "hand-raised" and uid not in hands:
            hands.append(uid)
        elif method == "hand-lowered" and uid in hands:
            hands.remove(uid)
        elif method == "stream-muted":
            kinds = self.muted.setdefault(data["mid"], set())
            (kinds.add if data["muted"] else kinds.discard)(data["kind"])
        elif method == "peer-removed":
            self.removed.setdefault(rid, set()).add(uid)
        room = self.service.rooms.get(rid)
        if room is not None:
            self.service.notify_many(room.members, method, data)

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
