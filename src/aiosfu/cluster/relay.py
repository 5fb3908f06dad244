"""P2P relay across signal nodes: `offer`, `answer` and `candidate` for a room member
connected to another signal node go to that node's NATS subject as a request, and the node
delivers them to its own socket exactly as the single-node relay would.

No responder on the subject means the target's signal node is gone: the sender hears
`unknown-peer` at once instead of waiting for a timeout.
"""

from __future__ import annotations

from typing import Any

from aiosfu.cluster.bus import Bus, Gone, node_subject
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.signal.protocol import AnswerData, CandidateData, OfferData, ProtocolError, RelayData
from aiosfu.signal.relay import P2PRelay
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession

log = get_logger("aiosfu.cluster.relay")


def _body(method: str, data: RelayData) -> dict[str, Any]:
    if isinstance(data, CandidateData):
        return {"candidate": None if data.candidate is None else data.candidate.model_dump()}
    assert isinstance(data, OfferData | AnswerData)
    return {"jsep": data.jsep.model_dump()}


class ClusterRelay:
    def __init__(self, service: SignalService, relay: P2PRelay, bus: Bus) -> None:
        self.service = service
        self.relay = relay
        self.bus = bus
        self.me = service.signal_id
        self._local = {m: h for m, (_, h) in service.handlers.items() if m in _METHODS}
        service.register("offer", OfferData, self.offer)
        service.register("answer", AnswerData, self.answer)
        service.register("candidate", CandidateData, self.candidate)

    async def start(self) -> None:
        await self.bus.subscribe(node_subject(self.me), self._deliver)

    def _remote_node(self, session: PeerSession, data: RelayData) -> str | None:
        """The target's signal node when it is another one (only room members are known)."""
        if data.rid is None or data.to == session.uid:
            return None
        room = self.service.rooms.member_room(data.rid, session.uid)
        member = room.members.get(data.to)
        return member.signalid if member is not None and member.signalid != self.me else None

    async def _send(self, method: str, session: PeerSession, data: RelayData) -> dict[str, Any]:
        node = self._remote_node(session, data)
        if node is None:
            return await self._local[method](session, data)
        pair = (data.rid or "", frozenset((session.uid, data.to)))
        if method == "offer":
            self.relay.pairs.add(pair)
        else:
            self.relay._negotiating(pair, data, method)
        message = {"method": method, "from": session.uid, "to": data.to, "rid": data.rid,
                   "body": _body(method, data)}  # fmt: skip
        try:
            reply = await self.bus.request(node_subject(node), message)
        except Gone as exc:
            raise ProtocolError(
                ErrorCode.UNKNOWN_PEER, f"peer {data.to!r} was on signal node {node}, which is gone"
            ) from exc
        if reply.get("errorCode"):
            raise ProtocolError(ErrorCode(reply["errorCode"]), reply.get("errorReason", ""))
        self.relay.relayed[method] += 1
        return {}

    async def offer(self, session: PeerSession, data: OfferData) -> dict[str, Any]:
        return await self._send("offer", session, data)

    async def answer(self, session: PeerSession, data: AnswerData) -> dict[str, Any]:
        return await self._send("answer", session, data)

    async def candidate(self, session: PeerSession, data: CandidateData) -> dict[str, Any]:
        return await self._send("candidate", session, data)

    async def _deliver(self, message: dict[str, Any]) -> dict[str, Any]:
        """A relay message from another signal node for a peer connected here."""
        to, sender, rid = message["to"], message["from"], message.get("rid")
        target = self.service.sessions.get(to)
        if target is None or target.ws.closed:
            return {"errorCode": ErrorCode.UNKNOWN_PEER.value,
                    "errorReason": f"peer {to!r} is not connected"}  # fmt: skip
        self.relay.pairs.add((rid or "", frozenset((sender, to))))
        notification: dict[str, Any] = {"from": sender, **message["body"]}
        if rid is not None:
            notification["rid"] = rid
        await self.service.notify(to, message["method"], notification)
        return {}


_METHODS = ("offer", "answer", "candidate")
