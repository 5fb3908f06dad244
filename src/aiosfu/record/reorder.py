"""Putting a track's RTP packets back in sequence order, and saying where some are lost.

The SFU forwards packets the moment they arrive, in whatever order; a file needs them
in order. Retransmissions (the SFU NACKs what it misses) arrive a round trip late, so a
missing packet is waited for up to a time window, then declared lost. aiortc's
`JitterBuffer` is built to feed its decoder: it waits for a packet *count* rather than a
time, drops incomplete frames without saying so, and cannot be flushed at the end of a
recording, which is why this small buffer exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Unwrapper:
    """Extends a wrapping counter (16-bit sequence numbers, 32-bit timestamps) to an
    unbounded one, choosing the value nearest to the last one seen."""

    def __init__(self, bits: int) -> None:
        self.modulus = 1 << bits
        self.half = self.modulus >> 1
        self.last: int | None = None

    def nearest(self, value: int) -> int:
        """Extend `value` without moving the reference point."""
        if self.last is None:
            return value
        delta = (value - self.last) % self.modulus
        if delta >= self.half:
            delta -= self.modulus
        return self.last + delta

    def __call__(self, value: int) -> int:
        extended = self.nearest(value)
        self.last = extended
        return extended


@dataclass(frozen=True)
class Gap:
    """`count` packets that never arrived in time; what follows is after the gap."""

    count: int


class ReorderBuffer(Generic[T]):
    """Holds packets until every earlier one is here, or has been missing for `window`
    seconds (or `capacity` packets are waiting behind it)."""

    def __init__(self, window: float = 0.4, capacity: int = 2048) -> None:
        self.window = window
        self.capacity = capacity
        self._unwrap = Unwrapper(16)
        self._next: int | None = None
        self._held: dict[int, tuple[float, T]] = {}
        self._highest: int | None = None
        self.reordered = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0

    def push(self, sequence_number: int, item: T, now: float) -> None:
        ext = self._unwrap(sequence_number)
        if self._next is not None and ext < self._next:
            self.late += 1  # already given up on, or a duplicate of one already out
            return
        if ext in self._held:
            self.duplicates += 1
            return
        if self._highest is not None and ext < self._highest:
            self.reordered += 1
        else:
            self._highest = ext
        self._held[ext] = (now, item)

    def pop(self, now: float) -> list[T | Gap]:
        """Everything that can leave now, in order, with a `Gap` where packets were lost."""
        out: list[T | Gap] = []
        held = self._held
        if self._next is None:
            # The first packets may arrive out of order too: start from the lowest once
            # the first one has waited a window.
            if not held or (now - min(e[0] for e in held.values()) < self.window):
                return out
            self._next = min(held)
        while held:
            entry = held.pop(self._next, None)
            if entry is not None:
                out.append(entry[1])
                self._next += 1
                continue
            first = min(held)
            if len(held) < self.capacity and now - held[first][0] < self.window:
                break  # the missing packet may still come (a retransmission)
            out.append(Gap(first - self._next))
            self.lost += first - self._next
            self._next = first
        return out

    def flush(self) -> list[T | Gap]:
        """Everything held, in order: the recording is ending."""
        return self.pop(float("inf"))

    def __len__(self) -> int:
        return len(self._held)
