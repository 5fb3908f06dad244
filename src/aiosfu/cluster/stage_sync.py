"""The classroom stage across signal nodes: a teacher on one node acts on a student
connected to another, and every node's members see the stage change at once.

Announcements (`grants-updated`, `stream-muted`, `peer-removed`, `hand-raised`,
`hand-lowered`) go on the room's subject like the other room events; each node keeps its
mirror of the hands, mutes and removals from them and tells its own members.

An action on a member of another node (`update-grants`, `remove`) goes as a request to
`aiosfu.stage.<that node's id>`: the member's session and grants live there, and so does
the withdrawal of what the new grants no longer cover (its publications are unpublished
on the SFU node, its subscriptions closed). The admin's node has checked the admin's own
grants; the reply carries the target node's answer (the grants now in force, or the
refusal with its code). No responder means the member's node is gone: `not-in-room`.

What must outlive a node is kept in Redis: the grants a room admin set (a member resuming
through another node keeps them) and the removed uids (no node lets them join again while
the room lasts; a node loads them when it starts following the room).
"""

from __future__ import annotations

from typing import Any

from aiosfu.cluster.bus import Bus, Gone, stage_subject
from aiosfu.cluster.errors import ClusterError
from aiosfu.cluster.sync import RoomSync
from aiosfu.contract import CodedError, ErrorCode
from aiosfu.log import get_logger
from aiosfu.room import Member, Room, RoomError
from aiosfu.signal.stage import ANNOUNCEMENTS, Stage

log = get_logger("aiosfu.cluster.stage")

# Carrying out an action may unpublish on the SFU node (a gRPC call with its own deadline).
ACT_TIMEOUT = 5.0


class ClusterStage:
    def __init__(self, stage: Stage, sync: RoomSync, bus: Bus) -> None:
        self.stage = stage
        self.sync = sync
        self.bus = bus
        stage.elsewhere = self
        sync.listeners.append(self._heard)
        sync.attach_listeners.append(self._attached)
        sync.resync_listeners.append(self._resync)

    async def start(self) -> None:
        await self.bus.subscribe(stage_subject(self.sync.me), self._act)

    # --- Elsewhere --------------------------------------------------------------------

    async def announce(self, rid: str, method: str, data: dict[str, Any]) -> None:
        try:
            if method == "grants-updated":
                await self.sync.store.set_grants(rid, data["uid"], data["grants"])
            elif method == "peer-removed":
                await self.sync.store.add_removed(rid, data["uid"])
        except ClusterError as exc:  # in force here and announced; kept once Redis is back
            log.warning("stage-state-not-kept", rid=rid, method=method, reason=exc.reason)
        await self.sync.send(rid, method, data)

    async def act(
        self, member: Member, action: str, rid: str, body: dict[str, Any], by: str
    ) -> dict[str, Any]:
        message = {"action": action, "rid": rid, "uid": member.uid, "body": body, "by": by}
        try:
            reply = await self.bus.request(stage_subject(member.signalid), message, ACT_TIMEOUT)
        except Gone as exc:
            raise RoomError(
                ErrorCode.NOT_IN_ROOM,
                f"peer {member.uid!r} was on signal node {member.signalid}, which is gone",
            ) from exc
        if reply.get("errorCode"):
            raise CodedError(ErrorCode(reply["errorCode"]), reply.get("errorReason", ""))
        result: dict[str, Any] = reply["data"]
        return result

    async def withdrawn(self, rid: str, uid: str, mid: str) -> None:
        await self.sync.publication_gone(rid, uid, mid)

    # --- the other nodes ----------------------------------------------------------------

    async def _act(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            data = await self.stage.act_here(
                message["action"], message["rid"], message["uid"], message["body"], message["by"]
            )
        except CodedError as exc:
            log.info("stage-action-refused", uid=message.get("uid"), code=exc.code)
            return {"errorCode": exc.code.value, "errorReason": exc.reason}
        log.info("stage-action", action=message["action"], rid=message["rid"],
                 uid=message["uid"], by=message["by"])  # fmt: skip
        return {"data": data}

    async def _attached(self, rid: str) -> None:
        removed = await self.sync.store.removed(rid)
        if removed:
            self.stage.removed.setdefault(rid, set()).update(removed)

    async def _resync(self, room: Room) -> None:
        """Redis lost the room's state: the removals we know, and the grants a room admin
        set for our members, go back."""
        store = self.sync.store
        for uid in self.stage.removed.get(room.rid, ()):
            await store.add_removed(room.rid, uid)
        for uid, member in room.members.items():
            session = self.stage.service.sessions.get(uid)
            if member.signalid != self.sync.me or session is None:
                continue
            grants = session.grants.get(room.rid)
            if grants is not None and session.identity is not None:
                if grants != session.identity.grants:
                    await store.set_grants(room.rid, uid, grants.claim())

    def _heard(self, method: str, message: dict[str, Any]) -> None:
        if method in ANNOUNCEMENTS:
            self.stage.heard(method, message["data"])
        elif method == "peer-leave":  # a hand raised on another node goes with its owner
            self.stage.peer_gone(message["data"]["uid"], message["data"]["rid"])
