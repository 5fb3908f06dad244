"""Recording publications to files (Ogg, WebM, Matroska) without decoding them.

`RecordingManager` (one per SFU node) starts a `RecordingSession` per publication; each
of its tracks is a `TrackRecorder`, a Producer sink. See docs/recording.md.
"""

from aiosfu.record.manager import RecordingManager, recording_name

__all__ = ["RecordingManager", "recording_name"]
