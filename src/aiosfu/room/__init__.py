"""Rooms, members, publications and subscriptions: pure state and rules, no I/O."""

from aiosfu.room.rooms import (
    Departure,
    Member,
    Publication,
    Room,
    RoomError,
    Rooms,
    Subscription,
)

__all__ = ["Departure", "Member", "Publication", "Room", "RoomError", "Rooms", "Subscription"]
