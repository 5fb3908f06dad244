"""The publisher follows its subscribers' downlinks.

A publisher's browser sets its encoder from its own uplink (transport-cc feedback,
sfu/uplink.py); nothing there says that the one subscriber watching it is on a weak
link. Each publisher is therefore told, as REMB (which Chromium's send-side controller
takes as a ceiling on its own estimate), the lowest estimate among its subscribers'
downlinks that is actually limiting them (sfu/downstream.py). With more than one
subscriber the ceiling never goes below a floor: one weak downlink must not pull
everyone else down (simulcast is what serves that subscriber better).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiosfu.log import get_logger
from aiosfu.sfu.downstream import Downstream
from aiosfu.sfu.uplink import Uplink

log = get_logger("aiosfu.sfu.follow")

INTERVAL = 0.25  # seconds between ceilings sent: a new limit reaches the publisher quickly


def publisher_cap(limits: Sequence[int | None], floor: int) -> int | None:
    """The ceiling for a publisher whose subscribers' downlinks are limited to `limits`
    (None: not limited); None when no ceiling is due."""
    known = [limit for limit in limits if limit is not None]
    if not known:
        return None
    cap = min(known)
    return max(cap, floor) if len(limits) > 1 else cap


@dataclass
class Publication:
    """What the policy needs of one publication: where to send, and who watches."""

    key: str
    uplink: Uplink | None
    media_ssrcs: list[int]
    downstreams: list[Downstream]


class PublisherCaps:
    def __init__(self, publications: Callable[[], Iterable[Publication]], floor: int) -> None:
        self._publications = publications
        self.floor = floor
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(INTERVAL)
            with contextlib.suppress(Exception):
                self.update()

    def update(self) -> None:
        for publication in self._publications():
            uplink = publication.uplink
            if uplink is None or not publication.media_ssrcs:
                continue
            cap = publisher_cap([d.limiting_bps for d in publication.downstreams], self.floor)
            if cap != uplink.cap_bps:
                log.info("publisher-cap", mid=publication.key, cap=cap)
            uplink.set_cap(cap, publication.media_ssrcs)
