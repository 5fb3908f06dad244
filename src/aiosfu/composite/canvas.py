"""The tiled picture: each publication's latest frame scaled into its tile.

Frames are scaled by FFmpeg's swscale (PyAV's `reformat`) and pasted as RGB arrays;
the encoder converts the whole canvas to 4:2:0 once. Cameras fill their tile (scaled to
cover it, the overflow cropped); screen shares are fitted whole inside it, since a
cropped slide loses its text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from aiosfu.composite.layout import Rect

Image = npt.NDArray[np.uint8]  # (height, width, 3) RGB


@dataclass(frozen=True)
class Tile:
    frame: av.VideoFrame | None  # None: nothing decoded yet, the tile stays black
    rect: Rect
    fit: bool = False  # fit whole (screen share) rather than cover (camera)


def scaled(frame: av.VideoFrame, rect: Rect, fit: bool) -> tuple[Image, int, int]:
    """`frame` scaled for `rect`, and where it goes inside `rect`."""
    scale = (min if fit else max)(rect.width / frame.width, rect.height / frame.height)
    rounding = math.floor if fit else math.ceil
    width = max(2, min(rounding(frame.width * scale), 8192))
    height = max(2, min(rounding(frame.height * scale), 8192))
    image = np.asarray(
        frame.reformat(width=width, height=height, format="rgb24").to_ndarray(), np.uint8
    )
    if fit:
        return image, (rect.width - width) // 2, (rect.height - height) // 2
    top, left = (height - rect.height) // 2, (width - rect.width) // 2
    return image[top : top + rect.height, left : left + rect.width], 0, 0


class Canvas:
    def __init__(self, width: int = 1280, height: int = 720) -> None:
        self.width, self.height = width, height
        # The last scaled image of each tile: a stalled source repeats its last frame,
        # which is then not scaled again.
        self._cache: dict[str, tuple[av.VideoFrame, Rect, Image, int, int]] = {}

    def compose(self, tiles: Mapping[str, Tile]) -> Image:
        image = np.zeros((self.height, self.width, 3), np.uint8)
        for key in set(self._cache) - set(tiles):
            del self._cache[key]
        for key, tile in tiles.items():
            if tile.frame is None:
                continue
            cached = self._cache.get(key)
            if cached and cached[0] is tile.frame and cached[1] == tile.rect:
                part, dx, dy = cached[2], cached[3], cached[4]
            else:
                part, dx, dy = scaled(tile.frame, tile.rect, tile.fit)
                self._cache[key] = (tile.frame, tile.rect, part, dx, dy)
            x, y = tile.rect.x + dx, tile.rect.y + dy
            h = min(part.shape[0], self.height - y)
            w = min(part.shape[1], self.width - x)
            image[y : y + h, x : x + w] = part[:h, :w]
        return image
