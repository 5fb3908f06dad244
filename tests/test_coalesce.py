"""`Coalescer`: at most one update per key per interval, the latest state, none lost."""

from __future__ import annotations

import asyncio
import itertools

from aiosfu.signal.coalesce import Coalescer


async def test_first_change_fires_at_once_then_one_per_interval() -> None:
    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    coalescer = Coalescer(0.2, lambda key: fired.append((key, loop.time())))
    start = loop.time()
    coalescer.changed("r")
    assert [k for k, _ in fired] == ["r"], "nothing pending: sent now"
    for _ in range(50):
        coalescer.changed("r")
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.25)
    times = [t - start for _, t in fired]
    elapsed = loop.time() - start
    assert 2 <= len(times) <= elapsed / 0.2 + 1, (times, elapsed)
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(times)), times


async def test_keys_are_independent_and_forget_cancels() -> None:
    fired: list[str] = []
    coalescer = Coalescer(0.1, fired.append)
    coalescer.changed("a")
    coalescer.changed("b")
    coalescer.changed("a")
    coalescer.forget("a")
    await asyncio.sleep(0.15)
    assert fired == ["a", "b"], "the pending second 'a' was dropped with its room"
