"""Room membership and the rules around it.

Everything here is synchronous and side-effect free apart from its own dicts, so the
signaling layer can check a request against the rules *before* touching the media plane,
and the rules are tested without sockets or WebRTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RoomError(Exception):
    """A request broke a room rule; `code` is stable and goes to the client as errorCode."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Member:
    uid: str
    signalid: str
    bizid: str = ""


@dataclass(frozen=True)
class Publication:
    mid: str
    uid: str
    rid: str
    sfuid: str
    minfo: dict[str, Any]


@dataclass(frozen=True)
class Subscription:
    sid: str
    uid: str
    mid: str
    rid: str


@dataclass
class Departure:
    """What a leaving member leaves behind, for the caller to tear down and announce."""

    member: Member
    publications: list[Publication] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    # Other members' subscriptions to the departing publications.
    orphaned: list[Subscription] = field(default_factory=list)


class Room:
    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.members: dict[str, Member] = {}
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}

    def __repr__(self) -> str:
        return (
            f"Room({self.rid!r}, members={len(self.members)}, "
            f"publications={len(self.publications)}, subscriptions={len(self.subscriptions)})"
        )

    def is_empty(self) -> bool:
        return not self.members

    def others(self, uid: str) -> list[Member]:
        return [m for m in self.members.values() if m.uid != uid]

    def require_member(self, uid: str) -> Member:
        member = self.members.get(uid)
        if member is None:
            raise RoomError("not-in-room", f"peer {uid!r} has not joined room {self.rid!r}")
        return member

    def publication(self, mid: str) -> Publication:
        pub = self.publications.get(mid)
        if pub is None:
            raise RoomError("unknown-mid", f"no stream {mid!r} in room {self.rid!r}")
        return pub

    def own_publication(self, uid: str, mid: str) -> Publication:
        pub = self.publication(mid)
        if pub.uid != uid:
            raise RoomError("not-owner", f"stream {mid!r} is published by another peer")
        return pub

    def own_subscription(self, uid: str, sid: str, mid: str | None = None) -> Subscription:
        sub = self.subscriptions.get(sid)
        if sub is None or sub.uid != uid:
            raise RoomError("unknown-sid", f"no subscription {sid!r} of yours in room {self.rid!r}")
        if mid is not None and sub.mid != mid:
            raise RoomError("unknown-sid", f"subscription {sid!r} is not to stream {mid!r}")
        return sub

    def add_publication(self, pub: Publication) -> None:
        self.require_member(pub.uid)
        self.publications[pub.mid] = pub

    def remove_publication(self, mid: str) -> tuple[Publication, list[Subscription]]:
        """Remove a publication and every subscription to it (the caller closes them)."""
        pub = self.publications.pop(mid)
        orphaned = [s for s in self.subscriptions.values() if s.mid == mid]
        for sub in orphaned:
            del self.subscriptions[sub.sid]
        return pub, orphaned

    def add_subscription(self, sub: Subscription) -> None:
        self.require_member(sub.uid)
        self.publication(sub.mid)
        self.subscriptions[sub.sid] = sub

    def remove_subscription(self, sid: str) -> Subscription:
        return self.subscriptions.pop(sid)


class Rooms:
    """Every room of this node, created on first join and dropped when the last member leaves."""

    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(list(self._rooms.values()))

    def get(self, rid: str) -> Room | None:
        return self._rooms.get(rid)

    def member_room(self, rid: str, uid: str) -> Room:
        """The room `rid`, provided `uid` is in it: every in-room request starts here."""
        room = self._rooms.get(rid)
        if room is None or uid not in room.members:
            raise RoomError("not-in-room", f"peer {uid!r} has not joined room {rid!r}")
        return room

    def join(self, rid: str, member: Member) -> Room:
        room = self._rooms.get(rid)
        if room is None:
            room = Room(rid)
        if member.uid in room.members:
            raise RoomError("already-joined", f"peer {member.uid!r} is already in room {rid!r}")
        room.members[member.uid] = member
        self._rooms[rid] = room
        return room

    def leave(self, rid: str, uid: str) -> Departure:
        room = self.member_room(rid, uid)
        member = room.members.pop(uid)
        departure = Departure(member=member)
        for pub in [p for p in room.publications.values() if p.uid == uid]:
            _, orphaned = room.remove_publication(pub.mid)
            departure.publications.append(pub)
            departure.orphaned.extend(s for s in orphaned if s.uid != uid)
            departure.subscriptions.extend(s for s in orphaned if s.uid == uid)
        for sub in [s for s in room.subscriptions.values() if s.uid == uid]:
            departure.subscriptions.append(room.remove_subscription(sub.sid))
        if room.is_empty():
            del self._rooms[rid]
        return departure
