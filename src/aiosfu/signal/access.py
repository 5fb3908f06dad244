"""The rules that tie a request to a grant: one place that answers "may this peer do this".

Signaling handlers call these checks before they touch the room or the media plane, so
a refused request (`forbidden`, `limit-exceeded`) changes nothing. In open mode every
peer holds `grants.OPEN`: the seed-002 behaviour, where anyone may publish, subscribe,
record and act on their own streams.
"""

from __future__ import annotations

from typing import Any

from aiosfu.contract import ErrorCode
from aiosfu.room import Room, RoomError, Rooms
from aiosfu.signal.auth import FORBIDDEN, Authenticator, AuthError
from aiosfu.signal.grants import OPEN, Grants, Source, source_of
from aiosfu.signal.limits import LIMIT_EXCEEDED, Limits
from aiosfu.signal.sdp_guard import OfferSummary
from aiosfu.signal.session import PeerSession


def forbidden(reason: str) -> AuthError:
    return AuthError(FORBIDDEN, reason)


class AccessControl:
    def __init__(self, auth: Authenticator | None = None, limits: Limits | None = None) -> None:
        self.auth = auth or Authenticator()
        self.limits = limits or Limits()
        self.connections = 0  # signaling WebSockets open now

    @property
    def open(self) -> bool:
        return self.auth.open

    def grants(self, session: PeerSession, rid: str) -> Grants:
        return session.grants.get(rid, OPEN if self.open else Grants(canPublish=False))

    # --- join ----------------------------------------------------------------------

    def join_grants(self, session: PeerSession, rid: str, bizid: str, room: Room | None) -> Grants:
        """The grants `session` joins room `rid` with, or why it may not join it."""
        if len(session.rooms) >= self.limits.rooms_per_peer and rid not in session.rooms:
            raise RoomError(
                LIMIT_EXCEEDED, f"a peer may be in {self.limits.rooms_per_peer} rooms at once"
            )
        if room is not None and len(room.members) >= self.limits.members_per_room:
            raise RoomError(
                ErrorCode.ROOM_FULL,
                f"room {rid!r} holds at most {self.limits.members_per_room} members",
            )
        identity = session.identity
        if identity is None:
            return OPEN
        grants = identity.grants
        if not grants.roomJoin:
            raise forbidden("the token does not grant roomJoin")
        if grants.room != rid:
            raise forbidden(f"the token grants room {grants.room!r}, not {rid!r}")
        if bizid and bizid != identity.bizid:
            raise forbidden(f"the token belongs to institution {identity.bizid!r}, not {bizid!r}")
        if room is not None and room.bizid != identity.bizid:
            raise forbidden(f"room {rid!r} belongs to another institution")
        return grants

    # --- media ---------------------------------------------------------------------

    def publish_sources(
        self, session: PeerSession, rid: str, offer: OfferSummary, minfo: dict[str, Any]
    ) -> tuple[Source, ...]:
        grants = self.grants(session, rid)
        sources = tuple(source_of(kind, minfo) for kind in offer.sending())
        for source in sources:
            if not grants.canPublish:
                raise forbidden(f"publishing is not granted in room {rid!r}")
            if not grants.may_publish(source):
                raise forbidden(f"publishing a {source} is not granted in room {rid!r}")
        if offer.has_data and not grants.canPublishData:
            raise forbidden(f"data channels are not granted in room {rid!r}")
        return sources

    def subscribe(self, session: PeerSession, rid: str) -> None:
        if not self.grants(session, rid).canSubscribe:
            raise forbidden(f"subscribing is not granted in room {rid!r}")

    def data(self, session: PeerSession, rid: str) -> None:
        if not self.grants(session, rid).canPublishData:
            raise forbidden(f"sending data is not granted in room {rid!r}")

    def record(self, session: PeerSession, rid: str) -> None:
        if not self.grants(session, rid).roomRecord:
            raise forbidden(f"recording is not granted in room {rid!r}")

    def admin(self, session: PeerSession, rid: str) -> None:
        if not self.grants(session, rid).roomAdmin:
            raise forbidden(f"room {rid!r} is administered by its teachers (roomAdmin)")

    def is_admin(self, session: PeerSession, rid: str) -> bool:
        return self.grants(session, rid).roomAdmin

    # --- how much one peer and the server hold ---------------------------------------

    def room_limits(self, rooms: Rooms, session: PeerSession, what: str) -> None:
        """A new publication or subscription for `session`: within its caps and the
        server's. Requests of one session run one at a time, so counting is exact."""
        mine = 0
        for rid in session.rooms:
            room = rooms.get(rid)
            if room is None:
                continue
            items = room.publications if what == "publications" else room.subscriptions
            mine += sum(1 for item in items.values() if item.uid == session.uid)
        cap = (
            self.limits.publications_per_peer
            if what == "publications"
            else self.limits.subscriptions_per_peer
        )
        if mine >= cap:
            raise RoomError(LIMIT_EXCEEDED, f"a peer may hold {cap} {what} at once")
        total = sum(len(r.publications) + len(r.subscriptions) for r in rooms)
        if total >= self.limits.peer_connections:
            raise RoomError(
                LIMIT_EXCEEDED,
                f"this server holds at most {self.limits.peer_connections} peer connections",
            )
