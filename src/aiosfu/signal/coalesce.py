"""Many changes, one message per interval.

A lecture's head count changes with every arrival: during a join storm that is hundreds
of changes a second, and telling every member of each one would be the square of the
class again. A `Coalescer` sends at most one update per key per interval, always the
latest state (the callback reads it when it fires), and the first change after a quiet
interval goes out at once. The interval may depend on the key (a large room's audience
hears its head count less often than a small one's).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def _fixed(seconds: float) -> Callable[[str], float]:
    return lambda key: seconds


class Coalescer:
    def __init__(
        self,
        interval: float | Callable[[str], float],
        fire: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval if callable(interval) else _fixed(float(interval))
        self._fire = fire
        self._clock = clock
        self._last: dict[str, float] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}

    def changed(self, key: str) -> None:
        """`key` changed: fire now, or once at the end of the current interval."""
        if key in self._pending:
            return
        interval = self.interval(key)
        last = self._last.get(key)
        wait = -1.0 if last is None else last + interval - self._clock()
        if wait <= 0:
            self._run(key)
        else:
            self._pending[key] = asyncio.get_running_loop().call_later(wait, self._run, key)

    def _run(self, key: str) -> None:
        self._pending.pop(key, None)
        self._last[key] = self._clock()
        self._fire(key)

    def forget(self, key: str) -> None:
        """The key is gone (its room closed): drop its timer and its history."""
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()
        self._last.pop(key, None)
