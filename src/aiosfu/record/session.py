"""A RecordingSession writes one publication (all its tracks) into one file.

The file is written by a thread of its own, started with the recording and ended with
it: depacketizing and muxing cost tens of microseconds a packet and a disk can stall,
and neither may delay forwarding on the event loop. The thread wakes every poll
interval, takes what the tracks' sinks queued, and writes what is ready. Writing
itself releases the GIL (PyAV muxes without it).

The file is opened once every track has a Sender Report (so audio and video share one
clock from the first frame) and a first usable frame (video: a keyframe, asked for
when recording starts), or after `sync_wait` seconds with whatever has arrived. A
track that has sent nothing usable by then is left out of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiosfu.contract import Recording
from aiosfu.log import get_logger
from aiosfu.record.muxer import FileFormat, Muxer
from aiosfu.record.recorder import RecordableTrack, TrackRecorder

log = get_logger("aiosfu.record")


class RecordingSession:
    def __init__(
        self,
        recording: Recording,
        path: Path,
        file_format: FileFormat,
        producers: Sequence[RecordableTrack],
        on_finished: Callable[[RecordingSession], None],
        *,
        poll_interval: float = 0.1,
        sync_wait: float = 5.0,
        reorder_window: float = 0.4,
        keyframe_retry: float = 0.5,
        stop_timeout: float = 10.0,
    ) -> None:
        self.recording = recording
        self.path = path
        self.file_format = file_format
        self.tracks = [TrackRecorder(p, reorder_window=reorder_window) for p in producers]
        self.on_finished = on_finished
        self.poll_interval = poll_interval
        self.sync_wait = sync_wait
        self.keyframe_retry = keyframe_retry
        self.stop_timeout = stop_timeout
        self.state = "starting"  # then syncing, recording, stopped
        self.reason = ""
        self.muxer: Muxer | None = None
        self.origin = 0.0
        self.keyframe_requests = 0
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[Recording] = self._loop.create_future()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aiosfu-record", daemon=True)
        self._next_keyframe_request: dict[int, float] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._attached = False

    # --- event loop side --------------------------------------------------------------

    def start(self) -> None:
        for track in self.tracks:
            # The publisher's last Sender Report, when it came before the recording did.
            clock = getattr(track.producer, "sender_clock", None)
            if clock is not None:
                track.seed_sender_report(*clock)
            track.producer.add_sink(track)
        self._attached = True
        self.state = "syncing"
        self._thread.start()
        for track in self.tracks:
            if track.kind == "video":
                self._request_keyframe(track)

    async def stop(self, reason: str) -> Recording:
        """Stop taking packets, write out what is held, close the file."""
        if not self.reason:
            self.reason = reason
        self._detach()
        self._stopping.set()
        try:
            recording = await asyncio.wait_for(asyncio.shield(self._done), self.stop_timeout)
        except TimeoutError:
            # Storage that does not answer (a hung network mount) must not hold up the
            # unpublish or leave waiting on this: the thread finishes when it can.
            log.warning("record-stop-slow", mid=self.recording.mid, file=str(self.path))
            return replace(
                self.recording,
                reason=self.reason,
                error=f"still closing: storage did not answer within {self.stop_timeout:g} s",
            )
        # Its last act was to hand us the result: it is returning, a join is immediate.
        self._thread.join(timeout=1.0)
        return recording

    @property
    def stopped(self) -> bool:
        return self._done.done()

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            for track in self.tracks:
                track.producer.remove_sink(track)

    def _request_keyframe(self, track: TrackRecorder) -> None:
        if self._done.done():
            return
        self.keyframe_requests += 1
        task = asyncio.ensure_future(track.producer.request_keyframe())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finished(self, error: str, size: int, duration: float) -> None:
        self._detach()
        self.state = "stopped"
        self.recording = replace(
            self.recording,
            duration=round(duration, 3),
            size=size,
            reason="error" if error else (self.reason or "stopped"),
            error=error,
        )
        if not self._done.done():
            self._done.set_result(self.recording)
        self.on_finished(self)

    # --- writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        error = ""
        started = time.monotonic()
        try:
            while not self._stopping.wait(self.poll_interval):
                self._step(time.monotonic() - started, final=False)
            self._step(time.monotonic() - started, final=True)
        except Exception as exc:  # the disk is full, the file went away...
            error = str(exc) or type(exc).__name__
            log.warning("record-failed", mid=self.recording.mid, file=str(self.path), error=error)
        closing_error = self._close_file()
        error = error or closing_error
        try:
            size = self.path.stat().st_size
        except OSError:
            size = 0
        duration = self.muxer.duration if self.muxer is not None else 0.0
        with contextlib.suppress(RuntimeError):  # the event loop is already gone
            self._loop.call_soon_threadsafe(self._finished, error, size, duration)

    def _step(self, elapsed: float, final: bool) -> None:
        now, wall = time.monotonic(), time.time()
        for track in self.tracks:
            track.collect(now, wall, final)
        if not final:
            self._ask_for_keyframes(now)
        if self.muxer is None:
            if not (final or self._ready(elapsed)) or not self._open():
                return
        muxer = self.muxer
        assert muxer is not None
        for track in self.tracks:
            if track.output is not None:
                track.write(muxer, self.origin)
            else:
                track.frames_dropped += len(track.pending)
                track.pending.clear()
        muxer.pulse()

    def _ready(self, elapsed: float) -> bool:
        if all(t.pending and t.report is not None for t in self.tracks):
            return True
        return elapsed >= self.sync_wait and any(t.pending for t in self.tracks)

    def _open(self) -> bool:
        muxer = Muxer(str(self.path), self.file_format)
        included = [t for t in self.tracks if t.add_stream(muxer)]
        if not included:
            muxer.close()  # nothing was written: the header comes with the first stream
            return False
        offsets = [t.report_offset for t in self.tracks if t.report_offset is not None]
        offset = min(offsets) if offsets else None
        if offset is None and all(t.report is not None for t in included):
            offset = 0.0  # every track on the sender's clock: its epoch does not matter
        for track in included:
            track.anchor(offset)
        self.origin = min(t.seconds(t.pending[0][0]) for t in included)
        muxer.start()
        self.muxer = muxer
        self.state = "recording"
        left_out = [t.kind for t in self.tracks if t.output is None]
        log.info(
            "record-file-opened",
            mid=self.recording.mid,
            file=str(self.path),
            tracks=",".join(f"{t.kind}:{'sr' if t.report else 'arrival'}" for t in included),
            left_out=",".join(left_out),
        )
        return True

    def _ask_for_keyframes(self, now: float) -> None:
        for index, track in enumerate(self.tracks):
            if track.kind != "video" or not track.waiting_for_keyframe or not track.packets_in:
                continue
            if now >= self._next_keyframe_request.get(index, 0.0):
                self._next_keyframe_request[index] = now + self.keyframe_retry
                self._loop.call_soon_threadsafe(self._request_keyframe, track)

    def _close_file(self) -> str:
        if self.muxer is None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # nothing was recorded: leave no empty file behind
            return ""
        try:
            self.muxer.close()
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return ""

    def stats(self) -> dict[str, Any]:
        return {
            "rid": self.recording.rid,
            "uid": self.recording.uid,
            "file": self.recording.file,
            "format": self.file_format.name,
            "state": self.state,
            "startedAt": self.recording.started_at,
            "duration": round(self.muxer.duration, 3) if self.muxer is not None else 0.0,
            "keyframeRequests": self.keyframe_requests,
            "tracks": [t.stats() for t in self.tracks],
        }
