"""What a node says about itself in the registry, and how a reader judges it."""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Kind = Literal["signal", "sfu"]
State = Literal["serving", "draining"]

# A node whose load is older than this counts as gone, even while its key still exists
# (a process stuck but still renewing its lease from another thread, a clock far off).
STALE_AFTER = 5.0


@dataclass(frozen=True)
class Load:
    cpu: float = 0.0  # share of one core over the last refresh interval
    rooms: int = 0
    peers: int = 0
    tracks: int = 0
    bytes_per_second: float = 0.0

    def score(self) -> float:
        """One number to compare nodes by: forwarded tracks weigh most on an SFU node."""
        return self.tracks + self.peers * 0.5 + self.rooms * 0.1 + self.cpu * 10


@dataclass(frozen=True)
class NodeInfo:
    id: str
    kind: Kind
    version: str
    addresses: dict[str, Any] = field(default_factory=dict)  # grpc, ice, ws: where to reach it
    region: str = ""
    state: State = "serving"
    load: Load = field(default_factory=Load)
    updated_at: float = 0.0  # Unix time of the load
    lease: int = 0  # its etcd lease: room owner keys are bound to it
    max_rooms: int = 0  # 0: no limit

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NodeInfo:
        data = json.loads(raw)
        data["load"] = Load(**data.get("load", {}))
        return cls(**data)

    def fresh(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.updated_at <= STALE_AFTER

    def with_load(self, load: Load) -> NodeInfo:
        return replace(self, load=load, updated_at=time.time())

    def accepts_rooms(self, now: float | None = None) -> bool:
        return (
            self.state == "serving"
            and self.fresh(now)
            and (not self.max_rooms or self.load.rooms < self.max_rooms)
        )


def choose_node(
    candidates: Sequence[NodeInfo],
    rng: random.Random | None = None,
    pending: Callable[[NodeInfo], float] = lambda node: 0.0,
) -> NodeInfo:
    """Two random choices: the lighter of two nodes drawn at random.

    Always picking the lightest makes every signal node send the next rooms to the same
    node until its load is refreshed (2 s later); two choices spread them while staying
    close to the best. `pending` adds what this signal node placed on a node since its
    load was last written, so one signal node's burst spreads too.
    """
    if not candidates:
        raise ValueError("no node to choose from")
    if len(candidates) == 1:
        return candidates[0]
    a, b = (rng or random.Random()).sample(list(candidates), 2)
    return a if a.load.score() + pending(a) <= b.load.score() + pending(b) else b


class CpuMeter:
    """This process's CPU use between two reads, as a share of one core."""

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu())

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def read(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        then, was = self._last
        self._last = (now, cpu)
        return (cpu - was) / (now - then) if now > then else 0.0
