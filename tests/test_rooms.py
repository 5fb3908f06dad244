"""Room membership rules: pure state, no sockets, no media."""

from __future__ import annotations

import pytest

from aiosfu.room import Member, Publication, Room, RoomError, RoomPolicy, Rooms, Subscription


def member(uid: str) -> Member:
    return Member(uid=uid, signalid="signal-1")


def pub(mid: str, uid: str, rid: str = "r") -> Publication:
    return Publication(mid=mid, uid=uid, rid=rid, sfuid="sfu-1", minfo={"audio": True})


def sub(sid: str, uid: str, mid: str, rid: str = "r") -> Subscription:
    return Subscription(sid=sid, uid=uid, mid=mid, rid=rid)


def code(exc: pytest.ExceptionInfo[RoomError]) -> str:
    return exc.value.code


@pytest.fixture
def rooms() -> Rooms:
    return Rooms()


def test_join_creates_the_room_and_adds_the_member(rooms: Rooms) -> None:
    assert len(rooms) == 0 and rooms.get("r") is None
    room = rooms.join("r", Member(uid="alice", signalid="signal-1", bizid="class"))
    assert rooms.get("r") is room
    assert len(rooms) == 1
    assert room.members["alice"] == Member("alice", "signal-1", "class")
    assert rooms.join("r", member("bob")) is room
    assert sorted(room.members) == ["alice", "bob"]
    assert [m.uid for m in room.others("alice")] == ["bob"]
    assert list(rooms) == [room]


def test_join_twice_is_already_joined(rooms: Rooms) -> None:
    rooms.join("r", member("alice"))
    with pytest.raises(RoomError) as exc:
        rooms.join("r", member("alice"))
    assert code(exc) == "already-joined"
    assert len(rooms.get("r").members) == 1  # type: ignore[union-attr]


def test_the_same_uid_may_be_in_two_rooms(rooms: Rooms) -> None:
    rooms.join("r1", member("alice"))
    rooms.join("r2", member("alice"))
    assert len(rooms) == 2


def test_member_room_requires_membership(rooms: Rooms) -> None:
    with pytest.raises(RoomError) as exc:
        rooms.member_room("r", "alice")  # no such room
    assert code(exc) == "not-in-room"
    room = rooms.join("r", member("alice"))
    assert rooms.member_room("r", "alice") is room
    with pytest.raises(RoomError) as exc:
        rooms.member_room("r", "bob")  # room exists, bob is not in it
    assert code(exc) == "not-in-room"


def test_leave_when_not_in_room(rooms: Rooms) -> None:
    with pytest.raises(RoomError) as exc:
        rooms.leave("r", "alice")
    assert code(exc) == "not-in-room"
    rooms.join("r", member("alice"))
    with pytest.raises(RoomError) as exc:
        rooms.leave("r", "bob")
    assert code(exc) == "not-in-room"
    assert "alice" in rooms.member_room("r", "alice").members


def test_leave_keeps_the_room_while_others_remain(rooms: Rooms) -> None:
    rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    departure = rooms.leave("r", "alice")
    assert departure.member == member("alice")
    room = rooms.get("r")
    assert room is not None and list(room.members) == ["bob"]
    rooms.leave("r", "bob")
    assert rooms.get("r") is None and len(rooms) == 0
    # rejoining makes a fresh, empty room
    fresh = rooms.join("r", member("bob"))
    assert fresh is not room and not fresh.publications


def test_require_member(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    assert room.require_member("alice") == member("alice")
    with pytest.raises(RoomError) as exc:
        room.require_member("bob")
    assert code(exc) == "not-in-room"


def test_publications_and_unknown_mid(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    room.add_publication(pub("m1", "alice"))
    assert room.publication("m1") == pub("m1", "alice")
    with pytest.raises(RoomError) as exc:
        room.publication("nope")
    assert code(exc) == "unknown-mid"


def test_only_members_publish(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    with pytest.raises(RoomError) as exc:
        room.add_publication(pub("m1", "mallory"))
    assert code(exc) == "not-in-room"
    assert not room.publications


def test_ownership(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    room.add_publication(pub("m1", "alice"))
    assert room.own_publication("alice", "m1").mid == "m1"
    with pytest.raises(RoomError) as exc:
        room.own_publication("bob", "m1")
    assert code(exc) == "not-owner"
    with pytest.raises(RoomError) as exc:
        room.own_publication("alice", "m2")
    assert code(exc) == "unknown-mid"


def test_subscriptions_need_a_member_and_a_publication(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    room.add_publication(pub("m1", "alice"))
    with pytest.raises(RoomError) as exc:
        room.add_subscription(sub("s1", "bob", "missing"))
    assert code(exc) == "unknown-mid"
    with pytest.raises(RoomError) as exc:
        room.add_subscription(sub("s1", "mallory", "m1"))
    assert code(exc) == "not-in-room"
    assert not room.subscriptions
    room.add_subscription(sub("s1", "bob", "m1"))
    assert room.subscriptions == {"s1": sub("s1", "bob", "m1")}


def test_own_subscription_and_unknown_sid(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    rooms.join("r", member("carol"))
    room.add_publication(pub("m1", "alice"))
    room.add_publication(pub("m2", "alice"))
    room.add_subscription(sub("s1", "bob", "m1"))
    assert room.own_subscription("bob", "s1") == sub("s1", "bob", "m1")
    assert room.own_subscription("bob", "s1", "m1") == sub("s1", "bob", "m1")
    cases = [
        ("bob", "s9", None),  # no such sid
        ("carol", "s1", None),  # someone else's sid
        ("carol", "s1", "m1"),
        ("bob", "s1", "m2"),  # sid exists, but is to another stream
        ("bob", "s1", "nope"),
    ]
    for uid, sid, mid in cases:
        with pytest.raises(RoomError) as exc:
            room.own_subscription(uid, sid, mid)
        assert code(exc) == "unknown-sid", (uid, sid, mid)
    assert "s1" in room.subscriptions


def test_remove_publication_returns_its_subscriptions(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    rooms.join("r", member("carol"))
    room.add_publication(pub("m1", "alice"))
    room.add_publication(pub("m2", "bob"))
    room.add_subscription(sub("s1", "bob", "m1"))
    room.add_subscription(sub("s2", "carol", "m1"))
    room.add_subscription(sub("s3", "carol", "m2"))
    removed, orphaned = room.remove_publication("m1")
    assert removed == pub("m1", "alice")
    assert sorted(s.sid for s in orphaned) == ["s1", "s2"]
    assert list(room.publications) == ["m2"]
    assert list(room.subscriptions) == ["s3"]
    assert room.remove_subscription("s3") == sub("s3", "carol", "m2")
    assert not room.subscriptions


def test_leave_returns_everything_left_behind(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    rooms.join("r", member("bob"))
    rooms.join("r", member("carol"))
    room.add_publication(pub("a1", "alice"))
    room.add_publication(pub("a2", "alice"))
    room.add_publication(pub("b1", "bob"))
    room.add_subscription(sub("s-bob-a1", "bob", "a1"))
    room.add_subscription(sub("s-carol-a2", "carol", "a2"))
    room.add_subscription(sub("s-carol-b1", "carol", "b1"))
    room.add_subscription(sub("s-alice-b1", "alice", "b1"))
    room.add_subscription(sub("s-alice-a1", "alice", "a1"))  # to her own stream

    departure = rooms.leave("r", "alice")

    assert departure.member == member("alice")
    assert sorted(p.mid for p in departure.publications) == ["a1", "a2"]
    assert sorted(s.sid for s in departure.subscriptions) == ["s-alice-a1", "s-alice-b1"]
    assert sorted(s.sid for s in departure.orphaned) == ["s-bob-a1", "s-carol-a2"]
    assert all(s.uid != "alice" for s in departure.orphaned)
    # what remains belongs to the others only
    assert sorted(room.members) == ["bob", "carol"]
    assert list(room.publications) == ["b1"]
    assert list(room.subscriptions) == ["s-carol-b1"]


def test_leave_without_media_has_an_empty_departure(rooms: Rooms) -> None:
    rooms.join("r", member("alice"))
    departure = rooms.leave("r", "alice")
    assert departure.publications == []
    assert departure.subscriptions == []
    assert departure.orphaned == []


def test_leave_of_last_member_drops_the_room_with_its_state(rooms: Rooms) -> None:
    room = rooms.join("r", member("alice"))
    room.add_publication(pub("a1", "alice"))
    room.add_subscription(sub("s1", "alice", "a1"))
    rooms.join("other", member("bob"))
    departure = rooms.leave("r", "alice")
    assert [p.mid for p in departure.publications] == ["a1"]
    assert [s.sid for s in departure.subscriptions] == ["s1"]
    assert departure.orphaned == []
    assert rooms.get("r") is None
    assert [r.rid for r in rooms] == ["other"]


def test_room_is_empty_and_repr() -> None:
    room = Room("r")
    assert room.is_empty()
    room.members["a"] = member("a")
    assert not room.is_empty()
    assert "members=1" in repr(room)


def test_room_error_carries_code_and_reason() -> None:
    error = RoomError("not-owner", "because")
    assert (error.code, error.reason, str(error)) == ("not-owner", "because", "not-owner: because")


# --- room modes and capacity (P2P / mesh rooms) ---------------------------------------


def test_first_joiner_chooses_mode_and_capacity_later_joiners_repeat_or_omit() -> None:
    rooms = Rooms()
    room = rooms.join("r", member("alice"), mode="p2p", capacity=2)
    assert (room.mode, room.capacity) == ("p2p", 2)
    rooms.join("r", member("bob"), mode="p2p")
    assert sorted(room.members) == ["alice", "bob"]
    default = rooms.join("plain", member("alice"))
    assert (default.mode, default.capacity) == ("sfu", 0)
    mesh = rooms.join("mesh", member("alice"), mode="p2p")
    assert mesh.capacity == 6  # seed 004: a mesh holds about six


def test_mismatched_mode_or_capacity_is_refused_and_changes_nothing() -> None:
    rooms = Rooms()
    room = rooms.join("r", member("alice"), mode="p2p", capacity=3)
    for mode, capacity in (("sfu", None), (None, 4), ("p2p", 2)):
        with pytest.raises(RoomError) as exc:
            rooms.join("r", member("bob"), mode=mode, capacity=capacity)
        assert code(exc) == "room-mismatch"
    assert list(room.members) == ["alice"]


def test_a_full_room_refuses_the_next_joiner_and_changes_nothing() -> None:
    rooms = Rooms()
    room = rooms.join("r", member("alice"), mode="p2p", capacity=2)
    rooms.join("r", member("bob"))
    with pytest.raises(RoomError) as exc:
        rooms.join("r", member("carol"))
    assert code(exc) == "room-full" and "2" in exc.value.reason
    assert sorted(room.members) == ["alice", "bob"]
    with pytest.raises(RoomError) as exc:  # already being in it is reported as such
        rooms.join("r", member("bob"))
    assert code(exc) == "already-joined"
    rooms.leave("r", "bob")
    rooms.join("r", member("carol"))  # a seat freed up
    assert sorted(room.members) == ["alice", "carol"]


def test_capacity_is_limited_per_mode_by_policy() -> None:
    rooms = Rooms(RoomPolicy(capacities={"sfu": 0, "p2p": 4}))
    with pytest.raises(RoomError) as exc:
        rooms.join("r", member("alice"), mode="p2p", capacity=5)
    assert code(exc) == "capacity-too-large" and "1 to 4" in exc.value.reason
    assert rooms.get("r") is None
    assert rooms.join("big", member("alice"), capacity=500).capacity == 500  # sfu: no limit
    for uid in "abcd":
        rooms.join("mesh", member(uid), mode="p2p")
    with pytest.raises(RoomError) as exc:
        rooms.join("mesh", member("e"))
    assert code(exc) == "room-full"


def test_presets_and_default_mode_come_from_policy() -> None:
    rooms = Rooms(RoomPolicy(default_mode="p2p", presets={"tutor": ("p2p", 2), "hall": ("sfu", 0)}))
    assert rooms.join("any", member("alice")).mode == "p2p"
    tutor = rooms.join("tutor", member("alice"))
    assert (tutor.mode, tutor.capacity) == ("p2p", 2)
    with pytest.raises(RoomError) as exc:  # the first joiner cannot override a preset
        rooms.join("hall", member("alice"), mode="p2p")
    assert code(exc) == "room-mismatch"
    assert rooms.get("hall") is None


def test_media_through_the_server_only_in_sfu_rooms() -> None:
    rooms = Rooms()
    rooms.join("s", member("alice")).require_sfu("publish")
    mesh = rooms.join("m", member("alice"), mode="p2p")
    with pytest.raises(RoomError) as exc:
        mesh.require_sfu("publish")
    assert code(exc) == "p2p-room" and "publish" in exc.value.reason


# --- audience mode (docs/large-rooms.md) ---------------------------------------------


def _lecture(threshold: int = 2) -> Rooms:
    return Rooms(RoomPolicy(announce_members_up_to=threshold))


def test_members_past_the_threshold_are_audience_known_only_to_watchers() -> None:
    rooms = _lecture()
    for uid in ("t", "e", "s1", "s2"):
        room = rooms.join("r", Member(uid=uid, signalid="sig"))
    assert room.early == {"t", "e"} and room.audience_mode
    assert sorted(room.promote("t")) == ["s1", "s2"], "a new watcher pairs with the audience"
    assert sorted(room.told_of("e")) == ["t"], "early members: early ones and watchers"
    assert room.told_of("s1") == ["t"], "audience: only watchers"
    assert [m.uid for m in room.listed_for("s2")] == ["t"]
    assert sorted(m.uid for m in room.listed_for("t")) == ["e", "s1", "s2"]


def test_a_publishing_member_is_paired_with_everyone_it_did_not_know_once() -> None:
    rooms = _lecture()
    for uid in ("t", "e", "s1", "s2"):
        room = rooms.join("r", Member(uid=uid, signalid="sig"))
    room.promote("t")
    assert sorted(room.promote("s2")) == ["e", "s1"], "t already knew s2"
    assert room.promote("s2") == []
    assert sorted(room.told_of("s2")) == ["e", "s1", "t"]
    assert sorted(room.promote("e")) == ["s1"]


def test_below_the_threshold_everyone_knows_everyone() -> None:
    rooms = _lecture(3)
    for uid in ("a", "b", "c"):
        room = rooms.join("r", Member(uid=uid, signalid="sig"))
    assert not room.audience_mode
    assert sorted(room.told_of("a")) == ["b", "c"]
    assert room.promote("a") == []


def test_departure_says_who_had_been_told() -> None:
    rooms = _lecture()
    for uid in ("t", "e", "s1"):
        room = rooms.join("r", Member(uid=uid, signalid="sig"))
    room.promote("t")
    assert rooms.leave("r", "s1").told == ["t"]
    assert rooms.leave("r", "e").told == ["t"]


def test_threshold_zero_announces_everyone() -> None:
    rooms = _lecture(0)
    for uid in ("a", "b", "c"):
        room = rooms.join("r", Member(uid=uid, signalid="sig"))
    assert room.early == {"a", "b", "c"} and not room.audience_mode
