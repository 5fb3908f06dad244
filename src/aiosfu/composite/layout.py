"""Where each publication's picture goes on the canvas.

Pure geometry, so the layout rules are tested without media: an equal grid while nobody
has been heard, and the active speaker in a large tile with everyone else in a column
beside it once someone has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ASPECT = 16 / 9


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.width * self.height


def _even(value: float) -> int:
    """Rounded down to even: 4:2:0 video shares chroma between pixel pairs, so tiles on
    even coordinates keep their colours from bleeding into a neighbour."""
    return int(value) // 2 * 2


def grid(area: Rect, count: int, aspect: float = ASPECT) -> list[Rect]:
    """`count` equal tiles of `aspect`, as large as fit in `area`, rows centred, the last
    row centred too when it is not full."""
    if count <= 0:
        return []
    best_cols, best_width = 1, 0.0
    for cols in range(1, count + 1):
        rows = math.ceil(count / cols)
        width = min(area.width / cols, area.height / rows * aspect)
        if width >= best_width:  # a tie goes to more columns: side by side
            best_cols, best_width = cols, width
    cols, rows = best_cols, math.ceil(count / best_cols)
    width, height = _even(best_width), _even(best_width / aspect)
    top = area.y + (area.height - rows * height) // 2
    tiles = []
    for index in range(count):
        row, col = divmod(index, cols)
        in_row = min(cols, count - row * cols)
        left = area.x + (area.width - in_row * width) // 2
        tiles.append(Rect(_even(left + col * width), _even(top + row * height), width, height))
    return tiles


def layout(
    mids: Sequence[str], speaker: str | None, width: int = 1280, height: int = 720
) -> dict[str, Rect]:
    """Tiles by publication, in the order given (the order they were published).

    One publication fills the canvas. With an active speaker among several, the speaker
    gets the left three quarters and the others share the right quarter, so the speaker's
    tile is the large one whatever the count."""
    canvas = Rect(0, 0, width, height)
    if speaker is None or speaker not in mids or len(mids) < 2:
        return dict(zip(mids, grid(canvas, len(mids)), strict=True))
    main_width = _even(width * 3 / 4)
    tiles = {speaker: grid(Rect(0, 0, main_width, height), 1)[0]}
    others = [mid for mid in mids if mid != speaker]
    side = grid(Rect(main_width, 0, width - main_width, height), len(others))
    tiles.update(zip(others, side, strict=True))
    return tiles
