"""The one contract between signaling and the media plane.

Signaling holds an `Sfu` and never looks behind it: the embedded server passes a
`LocalSfu`, a cluster passes a remote client with the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class SfuError(Exception):
    """A media-plane failure a client can act on; `code` goes out as errorCode."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Published:
    answer_sdp: str
    mid: str
    sfuid: str
    # False for a data-channel-only publish: nothing to subscribe to, so not announced.
    has_media: bool = True


@dataclass(frozen=True)
class Subscribed:
    answer_sdp: str
    sid: str


@dataclass(frozen=True)
class Recording:
    """One publication recorded to one file on the SFU node that carries it."""

    rid: str
    mid: str
    uid: str  # the publisher
    file: str  # relative to that node's recording directory
    started_at: float  # Unix time
    # Known once it stopped:
    duration: float = 0.0  # seconds of media in the file
    size: int = 0  # bytes on disk; 0 means nothing was recorded and no file is left
    reason: str = ""  # requested, unpublished, shutdown, error
    error: str = ""


class SfuListener(Protocol):
    """Told when media ends on its own (the peer's transport failed or closed), and
    when a recording starts or stops (asked for, or on its own: unpublish, disk full)."""

    async def publication_ended(self, rid: str, mid: str) -> None: ...

    async def subscription_ended(self, rid: str, sid: str) -> None: ...

    async def recording_started(self, recording: Recording) -> None: ...

    async def recording_stopped(self, recording: Recording) -> None: ...


class Sfu(Protocol):
    sfuid: str

    def set_listener(self, listener: SfuListener) -> None: ...

    async def publish(
        self, rid: str, uid: str, offer_sdp: str, minfo: dict[str, Any]
    ) -> Published: ...

    async def unpublish(self, rid: str, mid: str) -> None: ...

    async def subscribe(self, rid: str, uid: str, mid: str, offer_sdp: str) -> Subscribed: ...

    async def unsubscribe(self, rid: str, sid: str) -> None: ...

    async def close_peer(self, rid: str, uid: str) -> None: ...

    async def pause(self, rid: str, mid: str, kind: str, paused: bool) -> None:
        """Stop (or resume) forwarding the `kind` tracks of a publication (a mute)."""
        ...

    async def start_recording(self, rid: str, mid: str) -> Recording:
        """Record a publication; the recording already running if there is one."""
        ...

    async def stop_recording(self, rid: str, mid: str) -> Recording:
        """Stop and close the file; `SfuError("not-recording")` if none is running."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...
