"""Each publication's decoded audio, buffered at the mix's rate, and the mix itself.

Decoded frames arrive in bursts and at their own rate; the mix takes a fixed number of
samples per output frame. A short buffer per publication absorbs the bursts, fills an
underrun with silence (a stalled publisher is quiet, not a stall of the whole mix) and
drops its oldest samples past a bound, so a publisher that sends too fast never adds delay.
"""

from __future__ import annotations

from collections import deque

import av
import numpy as np
import numpy.typing as npt

RATE = 48000
CHANNELS = 2
Samples = npt.NDArray[np.int16]  # shape (n, CHANNELS)


class AudioBuffer:
    def __init__(self, prebuffer: float = 0.1, limit: float = 0.2) -> None:
        self.prebuffer = int(prebuffer * RATE)
        self.limit = int(limit * RATE)
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=RATE)
        self._chunks: deque[Samples] = deque()
        self.size = 0  # samples buffered
        self.dropped = 0  # samples dropped past `limit`
        self._playing = False

    def push(self, frame: av.AudioFrame) -> None:
        for resampled in self._resampler.resample(frame):
            samples = np.asarray(resampled.to_ndarray(), np.int16).reshape(-1, CHANNELS)
            self._chunks.append(samples)
            self.size += len(samples)
        while self.size > self.limit and self._chunks:
            excess = self.size - self.limit
            head = self._chunks[0]
            if len(head) <= excess:
                self._chunks.popleft()
                self.size -= len(head)
                self.dropped += len(head)
            else:
                self._chunks[0] = head[excess:]
                self.size -= excess
                self.dropped += excess

    def pull(self, count: int) -> Samples:
        """`count` samples, silence where there are none (yet)."""
        out = np.zeros((count, CHANNELS), np.int16)
        if not self._playing and self.size < self.prebuffer:
            return out
        self._playing = True
        filled = 0
        while filled < count and self._chunks:
            head = self._chunks[0]
            take = min(count - filled, len(head))
            out[filled : filled + take] = head[:take]
            filled += take
            self.size -= take
            if take == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        if filled < count:
            self._playing = False  # ran dry: build up the prebuffer again
        return out


def rms(samples: Samples) -> float:
    """Level of `samples` as a fraction of full scale."""
    if not len(samples):
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) / 32768


def mix(parts: list[Samples], count: int) -> Samples:
    """Summed, clipped to 16 bits."""
    total = np.zeros((count, CHANNELS), np.int32)
    for part in parts:
        total += part
    return np.clip(total, -32768, 32767).astype(np.int16)
