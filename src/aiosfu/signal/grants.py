"""What a peer may do in a room: LiveKit-style video grants and the classroom roles.

The names and defaults follow LiveKit's `VideoGrant`, so an institution backend that
already mints LiveKit tokens needs no new vocabulary: `canPublish`, `canSubscribe` and
`canPublishData` are allowed unless a token says false, while `roomJoin`, `roomAdmin`,
`roomRecord`, `roomList` and `hidden` are off unless a token says true. An empty
`canPublishSources` allows every source.

A role is only a preset: a token carries the grants themselves, and a teacher may change
a student's grants during the class (`update-grants`), which is how a student is brought
on stage and taken off it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

Source = Literal["camera", "microphone", "screen_share", "screen_share_audio"]
SOURCES: tuple[Source, ...] = ("camera", "microphone", "screen_share", "screen_share_audio")
Role = Literal["teacher", "student", "observer"]
ROLES: tuple[Role, ...] = ("teacher", "student", "observer")


class Grants(BaseModel):
    """The `video` claim of a token (LiveKit's field names)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    room: str = Field(default="", max_length=256)
    roomJoin: StrictBool = False
    roomAdmin: StrictBool = False
    roomRecord: StrictBool = False
    roomList: StrictBool = False  # the server API and /stats: every room of the server
    canPublish: StrictBool = True
    canPublishSources: tuple[Source, ...] = ()  # empty: every source
    canSubscribe: StrictBool = True
    canPublishData: StrictBool = True
    hidden: StrictBool = False

    def may_publish(self, source: Source) -> bool:
        return self.canPublish and (not self.canPublishSources or source in self.canPublishSources)

    def claim(self) -> dict[str, Any]:
        """The grants as they go into a token or a notification (defaults included, so the
        reader needs no knowledge of them)."""
        return self.model_dump(mode="json")


# A room's grants for a peer in open mode (no keys configured): everything but admin,
# which nobody needs in a room where anyone may do anything to their own streams.
OPEN = Grants(roomJoin=True, roomRecord=True)

_PRESETS: dict[Role, dict[str, Any]] = {
    # Runs the class: everything, including other members' streams and grants.
    "teacher": {"roomJoin": True, "roomAdmin": True, "roomRecord": True},
    # Watches, listens and chats; publishes only once a teacher brings them on stage.
    "student": {"roomJoin": True, "canPublish": False},
    # Watches, unseen: a supervisor, an inspector, a recorder bot.
    "observer": {"roomJoin": True, "canPublish": False, "canPublishData": False, "hidden": True},
}

# What `update-grants` sets when a teacher brings a student on stage or takes them off.
ON_STAGE: dict[str, Any] = {"canPublish": True, "canPublishSources": ()}
OFF_STAGE: dict[str, Any] = {"canPublish": False}


def for_role(role: Role, room: str) -> Grants:
    return Grants(room=room, **_PRESETS[role])


def updated(grants: Grants, changes: dict[str, Any]) -> Grants:
    """`grants` with `changes` applied; the room itself never changes."""
    merged = {**grants.model_dump(), **changes, "room": grants.room}
    return Grants.model_validate(merged)


def source_of(kind: str, minfo: dict[str, Any]) -> Source:
    """Which source a published m-line carries. Seed 002's `minfo` types tell a camera
    (videotype 0) from a screen (videotype 1), and a microphone (audiotype 0) from a
    screen's sound (audiotype 1)."""
    if kind == "video":
        return "screen_share" if minfo.get("videotype") == 1 else "camera"
    return "screen_share_audio" if minfo.get("audiotype") == 1 else "microphone"
