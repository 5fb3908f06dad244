"""Room state shared by every signal node: members and publications per room.

Redis keeps one hash per room and kind, so `join` answers with the whole cluster's
`users` and `pubs` from two `HGETALL`s, and nothing on a request path walks the keyspace
(no `KEYS` or `SCAN`):

- `aiosfu:room:<rid>:members`: uid -> `{"uid", "signalid", "bizid"}`
- `aiosfu:room:<rid>:pubs`: mid -> `{"mid", "uid", "rid", "sfuid", "minfo"}`
- `aiosfu:room:<rid>:meta`: `mode` and `capacity`, as the room's first joiner chose them
- `aiosfu:rooms`: a set of the rids that have state, read by the sweeper only

Each room hash expires `ttl` seconds after the last refresh; every signal node with a
member in the room refreshes it, so state of a room nobody serves any more goes by
itself. A node removes only what it owns (its members, their publications): never a
whole room because its own local count reached zero. The sweeper drops the state of
rooms whose SFU owner is gone and that no signal node refreshes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, Protocol

import redis.asyncio as aioredis
import redis.exceptions

from aiosfu.cluster.errors import ClusterError
from aiosfu.contract import ErrorCode
from aiosfu.log import get_logger
from aiosfu.room import Member, Publication

log = get_logger("aiosfu.cluster.store")

ROOMS_KEY = "aiosfu:rooms"


def members_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:members"


def pubs_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:pubs"


def meta_key(rid: str) -> str:
    return f"aiosfu:room:{rid}:meta"


class Store(Protocol):
    async def load_room(self, rid: str) -> tuple[list[Member], list[Publication]]: ...

    async def add_member(self, rid: str, member: Member) -> None: ...

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

    async def remove_publications(self, rid: str, mids: Iterable[str]) -> None: ...

    async def refresh(self, rids: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


def _unavailable(exc: Exception) -> ClusterError:
    return ClusterError(ErrorCode.CLUSTER_UNAVAILABLE, f"room state (Redis) is unreachable: {exc}")


def _pub_json(pub: Publication) -> str:
    info = asdict(pub)
    return json.dumps({k: info[k] for k in ("mid", "uid", "rid", "sfuid", "minfo")})


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

    async def _run(self, *commands: tuple[Any, ...]) -> list[Any]:
        """One round trip for the commands; Redis away is `cluster-unavailable`."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
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
        pubs = [Publication(**json.loads(v)) for v in raw_pubs.values()]
        return members, pubs

    def _expire(self, rid: str) -> list[tuple[Any, ...]]:
        return [
            ("expire", members_key(rid), self.ttl),
            ("expire", pubs_key(rid), self.ttl),
            ("expire", meta_key(rid), self.ttl),
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

    async def add_member(self, rid: str, member: Member) -> None:
        await self._run(
            ("hset", members_key(rid), member.uid, json.dumps(asdict(member))),
            ("sadd", ROOMS_KEY, rid),
            *self._expire(rid),
        )

    async def remove_member(self, rid: str, uid: str, mids: Iterable[str]) -> None:
        mids = list(mids)
        commands: list[tuple[Any, ...]] = [("hdel", members_key(rid), uid)]
        if mids:
            commands.append(("hdel", pubs_key(rid), *mids))
        await self._run(*commands)

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

    async def refresh(self, rids: Iterable[str]) -> None:
        commands = [c for rid in rids for c in self._expire(rid)]
        if commands:
            await self._run(*commands)

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
        commands: list[tuple[Any, ...]] = [
            ("delete", key(rid)) for rid in dropped for key in (pubs_key, meta_key)
        ]
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

    async def load_room(self, rid: str) -> tuple[list[Member], list[Publication]]:
        return list(self.members.get(rid, {}).values()), list(self.pubs.get(rid, {}).values())

    async def add_member(self, rid: str, member: Member) -> None:
        self.members.setdefault(rid, {})[member.uid] = member

    async def remove_member(self, rid: str, uid: str, mids: Iterable[str]) -> None:
        self.members.get(rid, {}).pop(uid, None)
        await self.remove_publications(rid, mids)

    async def room_mode(self, rid: str) -> tuple[str, int] | None:
        return self.modes.get(rid)

    async def set_room_mode(self, rid: str, mode: str, capacity: int) -> None:
        self.modes.setdefault(rid, (mode, capacity))

    async def add_publication(self, pub: Publication) -> None:
        self.pubs.setdefault(pub.rid, {})[pub.mid] = pub

    async def remove_publications(self, rid: str, mids: Iterable[str]) -> None:
        for mid in mids:
            self.pubs.get(rid, {}).pop(mid, None)

    async def refresh(self, rids: Iterable[str]) -> None:
        return None

    async def close(self) -> None:
        return None
