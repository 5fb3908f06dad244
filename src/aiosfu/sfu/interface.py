"""The one contract between signaling and the media plane.

Signaling holds an `Sfu` and never looks behind it: the embedded server passes a
`LocalSfu`, a cluster passes a remote client with the same methods.
"""

from __future__ import annotations

from typing import Any, Protocol

# The result types and the error live in the contract module (record/ raises SfuError too);
# they are re-exported here because they are part of this contract.
from aiosfu.contract import Published, Recording, SfuError, Subscribed

__all__ = ["Published", "Recording", "Sfu", "SfuError", "SfuListener", "Subscribed"]


class SfuListener(Protocol):
    """Told when a publication's transport first connects (only then is it worth
    announcing), when media ends on its own (the peer's transport failed, closed or never
    connected; `reason` says which, for the peer), and when a recording starts or stops
    (asked for, or on its own: unpublish, disk full)."""

    async def publication_connected(self, rid: str, mid: str) -> None: ...

    async def publication_ended(self, rid: str, mid: str, reason: str) -> None: ...

    async def subscription_ended(self, rid: str, sid: str, reason: str) -> None: ...

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
        """Stop and close the file; `SfuError(NOT_RECORDING)` if none is running."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...
