"""Who is speaking: the publication with the highest recent audio level.

Levels are smoothed over a fraction of a second and a new speaker must lead for `hold`
seconds before the layout changes, so a cough or a word of overlap does not make the
picture jump. When everyone is silent the last speaker stays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# Below this RMS level (of full scale) a publication counts as silent: about -50 dBFS,
# the floor of a quiet room through a laptop microphone.
SILENCE = 10 ** (-50 / 20)


class ActiveSpeaker:
    def __init__(self, hold: float = 1.0, smoothing: float = 0.3) -> None:
        self.hold = hold
        self.smoothing = smoothing
        self.levels: dict[str, float] = {}  # smoothed RMS, 0..1 of full scale
        self.speaker: str | None = None
        self._leader: str | None = None
        self._leading_since = 0.0

    def update(self, rms: Mapping[str, float], now: float, elapsed: float) -> str | None:
        """Feed each publication's RMS over the last `elapsed` seconds; returns the speaker."""
        weight = 1 - math.exp(-elapsed / self.smoothing) if self.smoothing > 0 else 1.0
        self.levels = {
            mid: self.levels.get(mid, level) + (level - self.levels.get(mid, level)) * weight
            for mid, level in rms.items()
        }
        if self.speaker not in self.levels:
            self.speaker = None
        loud = {mid: level for mid, level in self.levels.items() if level >= SILENCE}
        leader = max(loud, key=loud.__getitem__) if loud else None
        if leader != self._leader:
            self._leader, self._leading_since = leader, now
        if leader is not None and leader != self.speaker:
            if self.speaker is None or now - self._leading_since >= self.hold:
                self.speaker = leader
        return self.speaker
