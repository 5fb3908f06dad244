"""Rooms, members, publications and subscriptions: pure state and rules, no I/O."""

from aiosfu.room.rooms import (
    Departure,
    Member,
    Mode,
    Publication,
    Room,
    RoomError,
    RoomPolicy,
    Rooms,
    Subscription,
)

__all__ = [
    "Departure",
    "Member",
    "Mode",
    "Publication",
    "Room",
    "RoomError",
    "RoomPolicy",
    "Rooms",
    "Subscription",
]
