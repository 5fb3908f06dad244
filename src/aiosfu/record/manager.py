"""The recordings of one SFU node: where files go, what they are called, and at most
one running recording per publication.

Files are `<record_dir>/<room>/<UTC start>_<publisher>_<publication>.<ext>`, each part
reduced to letters, digits, `._-` so no room or user name can leave the directory.
The file is created when the recording is asked for, so an unwritable directory is an
error in the response rather than a surprise later.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aiosfu.contract import ErrorCode, Recording, SfuError
from aiosfu.log import get_logger
from aiosfu.record.muxer import UnsupportedCodec, file_format
from aiosfu.record.recorder import RecordableTrack
from aiosfu.record.session import RecordingSession

log = get_logger("aiosfu.record")

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).lstrip(".")[:64] or "_"


def recording_name(rid: str, uid: str, mid: str, started_at: float, extension: str) -> Path:
    """The file's path relative to the recording directory."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started_at))
    token = mid[len(uid) + 1 :] if mid.startswith(f"{uid}#") else mid
    return Path(_safe(rid)) / f"{stamp}_{_safe(uid)}_{_safe(token)}{extension}"


class RecordingManager:
    def __init__(
        self,
        directory: str | Path,
        on_started: Callable[[Recording], None] = lambda recording: None,
        on_stopped: Callable[[Recording], None] = lambda recording: None,
        **session_options: Any,
    ) -> None:
        self.directory = Path(directory)
        self.on_started = on_started
        self.on_stopped = on_stopped
        self.session_options = session_options
        self.sessions: dict[str, RecordingSession] = {}

    def get(self, mid: str) -> Recording | None:
        session = self.sessions.get(mid)
        return session.recording if session is not None else None

    async def start(
        self, rid: str, uid: str, mid: str, producers: Sequence[RecordableTrack]
    ) -> Recording:
        """Start recording a publication, or return the recording already running."""
        running = self.sessions.get(mid)
        if running is not None and not running.stopped:
            return running.recording
        if not producers:
            raise SfuError(ErrorCode.CODEC_UNSUPPORTED, f"stream {mid!r} has no audio or video")
        try:
            fmt = file_format([p.codec.mimeType for p in producers])
        except UnsupportedCodec as exc:
            raise SfuError(ErrorCode.CODEC_UNSUPPORTED, str(exc)) from exc
        started_at = time.time()
        path = self._create(recording_name(rid, uid, mid, started_at, fmt.extension))
        recording = Recording(
            rid=rid,
            mid=mid,
            uid=uid,
            file=path.relative_to(self.directory).as_posix(),
            started_at=round(started_at, 3),
        )
        session = RecordingSession(
            recording, path, fmt, producers, self._finished, **self.session_options
        )
        self.sessions[mid] = session
        session.start()
        log.info("record-started", rid=rid, uid=uid, mid=mid, file=str(path))
        self.on_started(recording)
        return recording

    def _create(self, relative: Path) -> Path:
        path = self.directory / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for n in range(1000):
                candidate = path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")
                try:
                    candidate.open("xb").close()
                except FileExistsError:
                    continue
                return candidate
            raise FileExistsError(f"{path} and 999 numbered variants exist")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SfuError(ErrorCode.RECORD_FAILED, f"cannot create {path}: {reason}") from exc

    async def stop(self, mid: str, reason: str) -> Recording | None:
        """Stop and close the file; None if the publication is not being recorded."""
        session = self.sessions.get(mid)
        if session is None:
            return None
        return await session.stop(reason)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(mid, "shutdown") for mid in list(self.sessions)))

    def _finished(self, session: RecordingSession) -> None:
        recording = session.recording
        if self.sessions.get(recording.mid) is session:
            del self.sessions[recording.mid]
        log.info(
            "record-stopped",
            rid=recording.rid,
            mid=recording.mid,
            file=recording.file,
            reason=recording.reason,
            error=recording.error,
            duration=recording.duration,
            size=recording.size,
        )
        self.on_stopped(recording)

    def stats(self) -> dict[str, Any]:
        return {mid: session.stats() for mid, session in self.sessions.items()}
