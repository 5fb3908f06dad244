"""P2P relay: `offer`, `answer` and `candidate` carried from one peer to another.

For a mesh room (or two peers that simply know each other's ids, as in seed 001) the
server carries only signaling: a request `{rid?, to, jsep | candidate}` reaches peer `to`
as a notification of the same method with `from`, and media flows between the peers.

The relay remembers which pairs have started negotiating (an offer went one way) so that
an `answer` or `candidate` with no offer behind it is refused instead of confusing the
other side; the pair is forgotten when either peer leaves that room or disconnects.
"""

from __future__ import annotations

from typing import Any

from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.signal.access import forbidden
from aiosfu.signal.protocol import (
    AnswerData,
    CandidateData,
    OfferData,
    ProtocolError,
    RelayData,
)
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.signal")

Pair = tuple[str, frozenset[str]]  # (rid, or "" outside rooms; the two uids)


class P2PRelay:
    def __init__(self, service: SignalService) -> None:
        self.service = service
        self.pairs: set[Pair] = set()
        self.relayed = {"offer": 0, "answer": 0, "candidate": 0}
        service.register("offer", OfferData, self.offer)
        service.register("answer", AnswerData, self.answer)
        service.register("candidate", CandidateData, self.candidate)
        service.departure_listeners.append(self.peer_gone)
        service.stat_sources["p2p"] = self.stats

    def _pair(self, session: PeerSession, data: RelayData) -> Pair:
        """Check that `to` can be reached from this peer (in room `rid`, when given)."""
        if data.to == session.uid:
            raise ProtocolError(ErrorCode.INVALID_PARAMS, "data.to: a peer cannot relay to itself")
        if data.rid is not None:
            room = self.service.rooms.member_room(data.rid, session.uid)
            if data.to not in room.members:
                raise ProtocolError(
                    ErrorCode.UNKNOWN_PEER, f"peer {data.to!r} is not in room {data.rid!r}"
                )
        elif not self.service.access.open and not self._share_a_room(session, data.to):
            # Seed 001's relay between bare uids is for open (development) servers; with
            # tokens a peer reaches only those it is in a room with.
            raise forbidden(f"peer {data.to!r} is in no room with you")
        target = self.service.sessions.get(data.to)
        if target is None or target.ws.closed:
            raise ProtocolError(ErrorCode.UNKNOWN_PEER, f"peer {data.to!r} is not connected")
        return (data.rid or "", frozenset((session.uid, data.to)))

    def _share_a_room(self, session: PeerSession, uid: str) -> bool:
        return any(
            (room := self.service.rooms.get(rid)) is not None and uid in room.members
            for rid in session.rooms
        )

    def _negotiating(self, pair: Pair, data: RelayData, method: str) -> None:
        if pair not in self.pairs:
            where = f" in room {data.rid!r}" if data.rid else ""
            raise ProtocolError(
                ErrorCode.NO_CONNECTION,
                f"no offer has been exchanged with {data.to!r}{where}, so there is no "
                f"connection for this {method}",
            )

    async def _deliver(
        self, method: str, session: PeerSession, data: RelayData, body: dict[str, Any]
    ) -> dict[str, Any]:
        notification: dict[str, Any] = {"from": session.uid, **body}
        if data.rid is not None:
            notification["rid"] = data.rid
        await self.service.notify(data.to, method, notification)
        self.relayed[method] += 1
        return {}

    async def offer(self, session: PeerSession, data: OfferData) -> dict[str, Any]:
        pair = self._pair(session, data)
        if pair not in self.pairs:
            log.info("p2p-pair", rid=data.rid or "", uid=session.uid, to=data.to)
        self.pairs.add(pair)
        return await self._deliver("offer", session, data, {"jsep": data.jsep.model_dump()})

    async def answer(self, session: PeerSession, data: AnswerData) -> dict[str, Any]:
        pair = self._pair(session, data)
        self._negotiating(pair, data, "answer")
        return await self._deliver("answer", session, data, {"jsep": data.jsep.model_dump()})

    async def candidate(self, session: PeerSession, data: CandidateData) -> dict[str, Any]:
        pair = self._pair(session, data)
        self._negotiating(pair, data, "candidate")
        candidate = None if data.candidate is None else data.candidate.model_dump()
        return await self._deliver("candidate", session, data, {"candidate": candidate})

    def peer_gone(self, uid: str, rid: str | None) -> None:
        """Forget `uid`'s pairs in room `rid` (every pair when `rid` is None)."""
        self.pairs = {
            (scope, uids)
            for scope, uids in self.pairs
            if uid not in uids or (rid is not None and scope != rid)
        }

    def stats(self) -> dict[str, Any]:
        return {"pairs": len(self.pairs), "relayed": dict(self.relayed)}
