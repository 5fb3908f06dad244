"""Room membership and the rules around it.

Everything here is synchronous and side-effect free apart from its own dicts, so the
signaling layer can check a request against the rules *before* touching the media plane,
and the rules are tested without sockets or WebRTC.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiosfu.contract import CodedError, ErrorCode

Mode = Literal["sfu", "p2p"]
MODES: tuple[Mode, ...] = ("sfu", "p2p")


class RoomError(CodedError):
    """A request broke a room rule."""


@dataclass(frozen=True)
class Member:
    uid: str
    signalid: str
    bizid: str = ""
    hidden: bool = False  # left out of `users` and `peer-join` (an observer)


@dataclass(frozen=True)
class Publication:
    mid: str
    uid: str
    rid: str
    sfuid: str
    minfo: dict[str, Any]
    has_media: bool = True  # False: data channels only, never announced as a stream
    sources: tuple[str, ...] = ()  # camera, microphone, screen_share... (what grants name)
    has_data: bool = False  # opened data channels


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
    # Who had been told of this member (Room.told_of), and so must hear it leave.
    told: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RoomPolicy:
    """How a room's mode and capacity are chosen when its first member joins.

    `capacities` is the default per mode and also the most a joiner may ask for (0: no
    limit): a mesh sends every stream to every peer, so past a handful of peers each
    browser's uplink gives out (seed 004 puts the mesh limit at 6). `presets` fix a
    room's mode and capacity by configuration; joiners may then only repeat them.
    """

    default_mode: Mode = "sfu"
    capacities: Mapping[str, int] = field(default_factory=lambda: {"sfu": 0, "p2p": 6})
    presets: Mapping[str, tuple[Mode, int]] = field(default_factory=dict)
    # Audience mode (docs/large-rooms.md): a member joining a room that already holds
    # this many is audience, announced only to watchers. 0: every member is announced.
    announce_members_up_to: int = 100


class Room:
    def __init__(self, rid: str, mode: Mode = "sfu", capacity: int = 0) -> None:
        self.rid = rid
        self.mode: Mode = mode
        self.capacity = capacity  # most members at once; 0: no limit
        self.bizid = ""  # the institution whose members may join (when tokens are used)
        self.members: dict[str, Member] = {}
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}
        # Audience mode. Every join announced to every member makes a class of N cost
        # N^2 notifications, and each student learns of hundreds it never shows. So
        # `watchers` (members who publish or run the room) know and are known by
        # everyone; `early` members (who joined while the room was small) know each
        # other and the watchers, as seed 002 has it; everyone else is audience, known
        # only to the watchers. A member only ever moves up (audience or early ->
        # watcher), so whoever was told of an arrival is also told of the departure.
        self.early: set[str] = set()
        self.watchers: set[str] = set()
        self.audience_mode = False  # has held audience members; room-count goes out

    def __repr__(self) -> str:
        return (
            f"Room({self.rid!r}, mode={self.mode}, members={len(self.members)}, "
            f"publications={len(self.publications)}, subscriptions={len(self.subscriptions)})"
        )

    def is_empty(self) -> bool:
        return not self.members

    def is_full(self) -> bool:
        return bool(self.capacity) and len(self.members) >= self.capacity

    def require_sfu(self, what: str) -> None:
        """Media through the server exists only in sfu rooms; a mesh room keeps it off."""
        if self.mode != "sfu":
            raise RoomError(
                ErrorCode.P2P_ROOM,
                f"room {self.rid!r} is a p2p (mesh) room: media goes directly between peers "
                f"(offer/answer/candidate), so {what} is not available",
            )

    def others(self, uid: str) -> list[Member]:
        return [m for m in self.members.values() if m.uid != uid]

    def knows(self, uid: str) -> list[str]:
        """The members `uid` has been told of, and who have been told of it."""
        if uid in self.watchers:
            names: Iterable[str] = self.members
        elif uid in self.early:
            names = self.early | self.watchers
        else:
            names = self.watchers
        return [m for m in names if m != uid and m in self.members]

    def listed_for(self, uid: str) -> list[Member]:
        """The members `uid` is told of in its join response."""
        return [self.members[m] for m in self.knows(uid)]

    def told_of(self, uid: str) -> list[str]:
        """Who hears `uid` arrive or leave."""
        return self.knows(uid)

    def promote(self, uid: str) -> list[str]:
        """`uid` starts publishing: from now on it knows and is known by everyone.

        Returns the members it had not been paired with, who must hear `peer-join` of it,
        and of whom it must hear `peer-join`.
        """
        self.require_member(uid)
        if uid in self.watchers:
            return []
        known = set(self.knows(uid))
        self.watchers.add(uid)
        return [m for m in self.members if m != uid and m not in known]

    def require_member(self, uid: str) -> Member:
        member = self.members.get(uid)
        if member is None:
            raise RoomError(ErrorCode.NOT_IN_ROOM, f"peer {uid!r} has not joined room {self.rid!r}")
        return member

    def publication(self, mid: str) -> Publication:
        pub = self.publications.get(mid)
        if pub is None:
            raise RoomError(ErrorCode.UNKNOWN_MID, f"no stream {mid!r} in room {self.rid!r}")
        return pub

    def own_publication(self, uid: str, mid: str) -> Publication:
        pub = self.publication(mid)
        if pub.uid != uid:
            raise RoomError(ErrorCode.NOT_OWNER, f"stream {mid!r} is published by another peer")
        return pub

    def own_subscription(self, uid: str, sid: str, mid: str | None = None) -> Subscription:
        sub = self.subscriptions.get(sid)
        if sub is None or sub.uid != uid:
            raise RoomError(
                ErrorCode.UNKNOWN_SID, f"no subscription {sid!r} of yours in room {self.rid!r}"
            )
        if mid is not None and sub.mid != mid:
            raise RoomError(ErrorCode.UNKNOWN_SID, f"subscription {sid!r} is not to stream {mid!r}")
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

    def __init__(self, policy: RoomPolicy | None = None) -> None:
        self.policy = policy or RoomPolicy()
        self._rooms: dict[str, Room] = {}

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def get(self, rid: str) -> Room | None:
        return self._rooms.get(rid)

    def member_room(self, rid: str, uid: str) -> Room:
        """The room `rid`, provided `uid` is in it: every in-room request starts here."""
        room = self._rooms.get(rid)
        if room is None or uid not in room.members:
            raise RoomError(ErrorCode.NOT_IN_ROOM, f"peer {uid!r} has not joined room {rid!r}")
        return room

    def join(
        self, rid: str, member: Member, mode: Mode | None = None, capacity: int | None = None
    ) -> Room:
        """Add `member`; the first joiner may choose the mode and capacity, later joiners
        may repeat them or say nothing. A refused join changes nothing."""
        room = self._rooms.get(rid)
        if room is None:
            room = self._new_room(rid, mode, capacity)
        if member.uid in room.members:
            raise RoomError(
                ErrorCode.ALREADY_JOINED, f"peer {member.uid!r} is already in room {rid!r}"
            )
        if mode is not None and mode != room.mode:
            raise RoomError(
                ErrorCode.ROOM_MISMATCH, f"room {rid!r} is a {room.mode} room, not {mode}"
            )
        if capacity is not None and capacity != room.capacity:
            raise RoomError(
                ErrorCode.ROOM_MISMATCH,
                f"room {rid!r} has capacity {room.capacity}, not {capacity}",
            )
        if room.is_full():
            raise RoomError(
                ErrorCode.ROOM_FULL,
                f"room {rid!r} is full ({room.capacity} of {room.capacity} members)",
            )
        limit = self.policy.announce_members_up_to
        if not limit or len(room.members) < limit:
            room.early.add(member.uid)
        else:
            room.audience_mode = True
        room.members[member.uid] = member
        self._rooms[rid] = room
        return room

    def _new_room(self, rid: str, mode: Mode | None, capacity: int | None) -> Room:
        preset = self.policy.presets.get(rid)
        if preset is not None:
            return Room(rid, *preset)  # join() then checks the joiner's values against it
        chosen: Mode = mode or self.policy.default_mode
        if chosen not in MODES:
            raise RoomError(
                ErrorCode.INVALID_PARAMS, f"room mode must be one of {MODES}, not {chosen!r}"
            )
        limit = self.policy.capacities.get(chosen, 0)
        if capacity is None:
            return Room(rid, chosen, limit)
        if capacity < 1 or (limit and capacity > limit):
            most = f"1 to {limit}" if limit else "at least 1"
            raise RoomError(
                ErrorCode.CAPACITY_TOO_LARGE if capacity >= 1 else ErrorCode.INVALID_PARAMS,
                f"a {chosen} room holds {most} members, not {capacity}",
            )
        return Room(rid, chosen, capacity)

    def leave(self, rid: str, uid: str) -> Departure:
        room = self.member_room(rid, uid)
        departure = Departure(member=room.members[uid], told=room.told_of(uid))
        del room.members[uid]
        room.early.discard(uid)
        room.watchers.discard(uid)
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
