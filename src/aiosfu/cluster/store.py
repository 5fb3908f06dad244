"""Room state shared by every signal node: members and publications per room.

Redis keeps one hash per room and kind, so `join` answers with the whole cluster's
`users` and `pubs` from two `HGETALL`s, and nothing on a request path walks the keyspace
(no `KEYS` or `SCAN`):

- `aiosfu:room:<rid>:members`: uid -> `{"uid", "signalid", "bizid"}`
- `aiosfu:room:<rid>:pubs`: mid -> `{"mid", "uid", "rid", "sfuid", "minfo", "sources",
  "has_data"}`
- `aiosfu:room:<rid>:meta`: `mode` and `capacity`, as the room's first joiner chose them
- `aiosfu:room:<rid>:away`: uid -> `{"member", "pubs"}` of a member whose signal node is
  gone, kept for its grace period so it can resume through another node
- `aiosfu:room:<rid>:grants`: uid -> grants a room admin set (`update-grants`), JSON;
  a member that resumes through another node keeps them
- `aiosfu:room:<rid>:removed`: a set of the uids a room admin removed (`remove`): they
  may not join again through any node while the room lasts
- `aiosfu:signal:<signal id>:rooms`: a set of the rids where that signal node has
  members, so when it is lost the others find its rooms, even those none of them follows
- `aiosfu:rooms`: a set of the rids that have state, read by the sweeper only

A join adds its member with one script (`JOIN_SCRIPT`): the room's size is checked
against the cluster-wide limit and the member's away record taken in the same atomic
step, so two signal nodes admitting the last seat at once cannot both win, and one
resume adopts an away member's streams.

Each room hash expires `ttl` seconds after the last refresh; every signal node with a
member in the room refreshes it, so state of a room nobody serves any more goes by
itself. A node removes only what it owns (its members, their publications): never a
whole room because its own local count reached zero. The sweeper drops the state of
rooms whose SFU owner is gone and that no signal node refreshes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions

from aiosfu.cluster.errors import ClusterError
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.room import Member, Publication, RoomError

log = get_logger("aiosfu.cluster.store")

ROOMS_KEY = "aiosfu:rooms"


def members_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:members"


def pubs_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:pubs"


def meta_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:meta"


def away_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:away"


def node_rooms_key(signal_id: str) -> str:
    return f"aiosfu:signal:{signal_id}:rooms"


def grants_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:grants"


def removed_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:removed"


# KEYS: members, away. ARGV: uid, member JSON, limit (0: none).
# Returns {1, away record or ""} when added, {0, ""} when the room is full. A member
# already in the hash (a reconnect) is never refused.
JOIN_SCRIPT = """
local away = redis.call('HGET', KEYS[2], ARGV[1])
if away then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local limit = tonumber(ARGV[3])
if not away and limit > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= limit then
  return {0, ''}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1, away or ''}
"""


@dataclass(frozen=True)
class Away:
    """A member whose signal node is gone, with the streams it may resume."""

    member: Member
    pubs: list[Publication]


def pub_dict(pub: Publication) -> dict[str, Any]:
    info = asdict(pub)
    return {k: info[k] for k in ("mid", "uid", "rid", "sfuid", "minfo", "sources", "has_data")}


def pub_from(info: dict[str, Any]) -> Publication:
    return Publication(**{**info, "sources": tuple(info.get("sources", ()))})


def _away_from(raw: str) -> Away:
    record = json.loads(raw)
    return Away(Member(**record["member"]), [pub_from(p) for p in record["pubs"]])


class Store(Protocol):
    async def load_room(self, rid: str) -> tuple[list[Member], list[Publication]]: ...

    async def add_member(self, rid: str, member: Member, limit: int = 0) -> Away | None:
        """`room-full` when the room holds `limit` members cluster-wide; the member's away
        record when it was away (it resumes), taken so no one else ends its streams."""
        ...

    async def set_away(self, rid: str, away: Away, ttl: float) -> None:
        """The member leaves the room's members and publications for its away record."""
        ...

    async def take_away(self, rid: str, uid: str) -> bool:
        """True for the one caller that removed the away record (it ends the streams)."""
        ...

    async def restore(
        self, rid: str, members: Iterable[Member], pubs: Iterable[Publication]
    ) -> None:
        """Write this node's members and publications again (Redis lost them)."""
        ...

    async def room_mode(self, rid: str) -> tuple[str, int] | None:
        """The mode and capacity the room's first joiner chose, if anyone did."""
        ...

    async def set_room_mode(self, rid: str, mode: str, capacity: int) -> None:
        """Kept only if none is set yet: the first joiner's choice stands."""
        ...

    async def remove_member(self, rid: str, uid: str, mids: Iterable[str]) -> None:
        """The member and its publications (`mids`) leave the room."""
        ...

    async def add_publication(self, pub: Publication) -> None: ...

    async def set_grants(self, rid: str, uid: str, grants: dict[str, Any]) -> None: ...

    async def node_rooms(self, signal_id: str) -> set[str]:
        """The rooms where a signal node has (or had, until it was lost) members."""
        ...

    async def forget_node_room(self, signal_id: str, rid: str) -> None:
        """The node has no member left in the room."""
        ...

    async def forget_node(self, signal_id: str) -> None: ...

    async def grants_of(self, rid: str, uid: str) -> dict[str, Any] | None: ...

    async def add_removed(self, rid: str, uid: str) -> None: ...

    async def removed(self, rid: str) -> set[str]: ...

    async def remove_publications(self, rid: str, mids: Iterable[str]) -> None: ...

    async def refresh(self, rids: Iterable[str], signal_id: str = "") -> list[str]:
        """Extend the rooms' TTLs (and `signal_id`'s room set); the rids whose members hash
        was gone."""
        ...

    async def close(self) -> None: ...


def _unavailable(exc: Exception) -> ClusterError:
    return ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, f"room state (Redis) is unreachable: {exc}")


def _pub_json(pub: Publication) -> str:
    return json.dumps(pub_dict(pub))


class RedisStore:
    def __init__(self, url: str, ttl: float = 30.0, timeout: float = 1.0) -> None:
        self.ttl = int(ttl)
        self.redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            retry_on_timeout=False,
        )

    async def _run(self, *commands: tuple[Any, ...], atomic: bool = False) -> list[Any]:
        """One round trip for the commands; Redis away is `cluster-unavailable`."""
        try:
            async with self.redis.pipeline(transaction=atomic) as pipe:
                for name, *args in commands:
                    getattr(pipe, name)(*args)
                result: list[Any] = await pipe.execute()
                return result
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            raise _unavailable(exc) from exc

    async def load_room(self, rid: str) -> tuple[list[Member], list[Publication]]:
        raw_members, raw_pubs = await self._run(
            ("hgetall", members_key(rid)), ("hgetall", pubs_key(rid))
        )
        members = [Member(**json.loads(v)) for v in raw_members.values()]
        pubs = [pub_from(json.loads(v)) for v in raw_pubs.values()]
        return members, pubs

    def _expire(self, rid: str) -> list[tuple[Any, ...]]:
        return [
            ("expire", members_key(rid), self.ttl),
            ("expire", pubs_key(rid), self.ttl),
            ("expire", meta_key(rid), self.ttl),
            ("expire", grants_key(rid), self.ttl),
            ("expire", removed_key(rid), self.ttl),
        ]

    async def room_mode(self, rid: str) -> tuple[str, int] | None:
        (meta,) = await self._run(("hgetall", meta_key(rid)))
        return (meta["mode"], int(meta["capacity"])) if meta.get("mode") else None

    async def set_room_mode(self, rid: str, mode: str, capacity: int) -> None:
        await self._run(
            ("hsetnx", meta_key(rid), "mode", mode),
            ("hsetnx", meta_key(rid), "capacity", capacity),
            ("expire", meta_key(rid), self.ttl),
        )

    async def add_member(self, rid: str, member: Member, limit: int = 0) -> Away | None:
        (added, away), *_ = await self._run(
            ("eval", JOIN_SCRIPT, 2, members_key(rid), away_key(rid), member.uid,
             json.dumps(asdict(member)), limit),
            ("sadd", ROOMS_KEY, rid),
            ("sadd", node_rooms_key(member.signalid), rid),
            ("expire", node_rooms_key(member.signalid), self.ttl),
            *self._expire(rid),
        )  # fmt: skip
        if not added:
            raise RoomError(
                ErrorCode.ROOM_FULL, f"room {rid!r} holds at most {limit} members (cluster-wide)"
            )
        return _away_from(away) if away else None

    async def set_away(self, rid: str, away: Away, ttl: float) -> None:
        record = {"member": asdict(away.member), "pubs": [pub_dict(p) for p in away.pubs]}
        commands: list[tuple[Any, ...]] = [
            ("hset", away_key(rid), away.member.uid, json.dumps(record)),
            ("expire", away_key(rid), int(max(ttl, self.ttl))),
            ("hdel", members_key(rid), away.member.uid),
        ]
        if away.pubs:
            commands.append(("hdel", pubs_key(rid), *[p.mid for p in away.pubs]))
        await self._run(*commands)

    async def take_away(self, rid: str, uid: str) -> bool:
        (taken,) = await self._run(("hdel", away_key(rid), uid))
        return bool(taken)

    async def restore(
        self, rid: str, members: Iterable[Member], pubs: Iterable[Publication]
    ) -> None:
        commands: list[tuple[Any, ...]] = [
            ("hset", members_key(rid), m.uid, json.dumps(asdict(m))) for m in members
        ]
        commands += [("hset", pubs_key(rid), p.mid, _pub_json(p)) for p in pubs]
        commands += [("sadd", node_rooms_key(s), rid) for s in {m.signalid for m in members}]
        if commands:
            await self._run(*commands, ("sadd", ROOMS_KEY, rid), *self._expire(rid))

    async def remove_member(self, rid: str, uid: str, mids: Iterable[str]) -> None:
        mids = list(mids)
        commands: list[tuple[Any, ...]] = [
            ("hdel", members_key(rid), uid),
            ("hdel", grants_key(rid), uid),
        ]
        if mids:
            commands.append(("hdel", pubs_key(rid), *mids))
        await self._run(*commands)

    async def node_rooms(self, signal_id: str) -> set[str]:
        (rids,) = await self._run(("smembers", node_rooms_key(signal_id)))
        return {str(rid) for rid in rids}

    async def forget_node_room(self, signal_id: str, rid: str) -> None:
        await self._run(("srem", node_rooms_key(signal_id), rid))

    async def forget_node(self, signal_id: str) -> None:
        await self._run(("delete", node_rooms_key(signal_id)))

    async def set_grants(self, rid: str, uid: str, grants: dict[str, Any]) -> None:
        await self._run(
            ("hset", grants_key(rid), uid, json.dumps(grants)),
            ("expire", grants_key(rid), self.ttl),
        )

    async def grants_of(self, rid: str, uid: str) -> dict[str, Any] | None:
        (raw,) = await self._run(("hget", grants_key(rid), uid))
        return json.loads(raw) if raw else None

    async def add_removed(self, rid: str, uid: str) -> None:
        await self._run(("sadd", removed_key(rid), uid), ("expire", removed_key(rid), self.ttl))

    async def removed(self, rid: str) -> set[str]:
        (uids,) = await self._run(("smembers", removed_key(rid)))
        return {str(uid) for uid in uids}

    async def add_publication(self, pub: Publication) -> None:
        await self._run(
            ("hset", pubs_key(pub.rid), pub.mid, _pub_json(pub)),
            ("sadd", ROOMS_KEY, pub.rid),
            *self._expire(pub.rid),
        )

    async def remove_publications(self, rid: str, mids: Iterable[str]) -> None:
        mids = list(mids)
        if mids:
            await self._run(("hdel", pubs_key(rid), *mids))

    async def refresh(self, rids: Iterable[str], signal_id: str = "") -> list[str]:
        rids = list(rids)
        commands = [c for rid in rids for c in self._expire(rid)]
        if not commands:
            return []
        if signal_id:
            commands.append(("expire", node_rooms_key(signal_id), self.ttl))
        results = await self._run(*commands)
        per_room = len(self._expire(rids[0]))
        return [rid for i, rid in enumerate(rids) if not results[i * per_room]]

    async def sweep(self, owned: set[str]) -> list[str]:
        """Drop the state of rooms with no SFU owner in `owned`; the rids dropped.

        Runs off the request path (once a TTL on one node); SSCAN-free: the set of rooms
        is small next to the keyspace and read whole.
        """
        (members,) = await self._run(("smembers", ROOMS_KEY))
        rids = {str(rid) for rid in members}
        gone = sorted(rids - owned)
        if not gone:
            return []
        live = await self._run(*[("exists", members_key(rid)) for rid in gone])
        dropped = [rid for rid, alive in zip(gone, live, strict=True) if not alive]
        keys = (pubs_key, meta_key, away_key, grants_key, removed_key)
        commands: list[tuple[Any, ...]] = [("delete", key(rid)) for rid in dropped for key in keys]
        if dropped:
            commands.append(("srem", ROOMS_KEY, *dropped))
            await self._run(*commands)
            log.info("rooms-swept", rooms=len(dropped))
        return dropped

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryStore:
    """One process: the state is the signal node's own rooms, so nothing to keep apart."""

    def __init__(self) -> None:
        self.members: dict[str, dict[str, Member]] = {}
        self.pubs: dict[str, dict[str, Publication]] = {}
        self.modes: dict[str, tuple[str, int]] = {}
        self.away: dict[str, dict[str, Away]] = {}
        self.grants: dict[str, dict[str, dict[str, Any]]] = {}
        self.removals: dict[str, set[str]] = {}
        self.node_sets: dict[str, set[str]] = {}

    async def load_room(self, rid: str) -> tuple[list[Member], list[Publication]]:
        return list(self.members.get(rid, {}).values()), list(self.pubs.get(rid, {}).values())

    async def add_member(self, rid: str, member: Member, limit: int = 0) -> Away | None:
        members = self.members.setdefault(rid, {})
        away = self.away.get(rid, {}).pop(member.uid, None)
        if away is None and limit and member.uid not in members and len(members) >= limit:
            raise RoomError(ErrorCode.ROOM_FULL, f"room {rid!r} holds at most {limit} members")
        members[member.uid] = member
        self.node_sets.setdefault(member.signalid, set()).add(rid)
        return away

    async def node_rooms(self, signal_id: str) -> set[str]:
        return set(self.node_sets.get(signal_id, set()))

    async def forget_node_room(self, signal_id: str, rid: str) -> None:
        self.node_sets.get(signal_id, set()).discard(rid)

    async def forget_node(self, signal_id: str) -> None:
        self.node_sets.pop(signal_id, None)

    async def set_away(self, rid: str, away: Away, ttl: float) -> None:
        self.away.setdefault(rid, {})[away.member.uid] = away
        await self.remove_member(rid, away.member.uid, [p.mid for p in away.pubs])

    async def take_away(self, rid: str, uid: str) -> bool:
        return self.away.get(rid, {}).pop(uid, None) is not None

    async def restore(
        self, rid: str, members: Iterable[Member], pubs: Iterable[Publication]
    ) -> None:
        for member in members:
            self.members.setdefault(rid, {})[member.uid] = member
        for pub in pubs:
            await self.add_publication(pub)

    async def remove_member(self, rid: str, uid: str, mids: Iterable[str]) -> None:
        self.members.get(rid, {}).pop(uid, None)
        self.grants.get(rid, {}).pop(uid, None)
        await self.remove_publications(rid, mids)

    async def set_grants(self, rid: str, uid: str, grants: dict[str, Any]) -> None:
        self.grants.setdefault(rid, {})[uid] = grants

    async def grants_of(self, rid: str, uid: str) -> dict[str, Any] | None:
        return self.grants.get(rid, {}).get(uid)

    async def add_removed(self, rid: str, uid: str) -> None:
        self.removals.setdefault(rid, set()).add(uid)

    async def removed(self, rid: str) -> set[str]:
        return set(self.removals.get(rid, set()))

    async def room_mode(self, rid: str) -> tuple[str, int] | None:
        return self.modes.get(rid)

    async def set_room_mode(self, rid: str, mode: str, capacity: int) -> None:
        self.modes.setdefault(rid, (mode, capacity))

    async def add_publication(self, pub: Publication) -> None:
        self.pubs.setdefault(pub.rid, {})[pub.mid] = pub

    async def remove_publications(self, rid: str, mids: Iterable[str]) -> None:
        for mid in mids:
            self.pubs.get(rid, {}).pop(mid, None)

    async def refresh(self, rids: Iterable[str], signal_id: str = "") -> list[str]:
        return []

    async def close(self) -> None:
        return None
