"""P2P / mesh rooms: the server relays offer/answer/candidate, media and data go directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aiosfu.client import Client, Mesh, SignalingError
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

MESSAGES = 1000


def udp_sockets(pid: int) -> int:
    """UDP sockets the process holds: a media transport needs at least one."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    udp = set()
    for table in ("udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        udp.update(line.split()[9] for line in lines)
    return len(inodes & udp)


async def mesh_peer(server: ServerProcess, uid: str, rid: str = "tutoring", **options):  # type: ignore[no-untyped-def]
    client = await Client.connect(server.ws_url, uid)
    mesh = Mesh(client, rid, **options)
    return client, mesh


async def test_two_aiortc_peers_exchange_a_thousand_messages_each_way_directly(
    server: ServerProcess,
) -> None:
    alice, alice_mesh = await mesh_peer(server, "alice")
    joined = await alice_mesh.join(capacity=2)
    assert joined == {"pubs": [], "users": [], "mode": "p2p", "capacity": 2}
    bob, bob_mesh = await mesh_peer(server, "bob")
    joined = await bob_mesh.join()  # omitting mode/capacity joins the room as it is
    assert [u["uid"] for u in joined["users"]] == ["alice"]
    assert (joined["mode"], joined["capacity"]) == ("p2p", 2)

    # Alice was there first, so she offers (seed 003's new-peer rule): no glare.
    await wait_for(lambda: "bob" in alice_mesh.links and "alice" in bob_mesh.links, 10)
    assert alice_mesh.links["bob"].offerer and not bob_mesh.links["alice"].offerer
    to_bob = await alice_mesh.links["bob"].wait_channel()
    to_alice = await bob_mesh.links["alice"].wait_channel()

    for i in range(MESSAGES):
        to_bob.send(f"alice-{i}")
        to_alice.send(f"bob-{i}")
    got_by_bob = [(await bob_mesh.links["alice"].recv())[1] for _ in range(MESSAGES)]
    got_by_alice = [(await alice_mesh.links["bob"].recv())[1] for _ in range(MESSAGES)]
    assert got_by_bob == [f"alice-{i}" for i in range(MESSAGES)]
    assert got_by_alice == [f"bob-{i}" for i in range(MESSAGES)]

    stats = await server.stats()
    assert stats["sfu"]["publications"] == {} and stats["sfu"]["subscriptions"] == {}
    assert stats["sfu"]["datachannels"] == []
    assert stats["signal"]["p2p"]["relayed"] == {"offer": 1, "answer": 1, "candidate": 0}
    assert stats["signal"]["rooms"]["tutoring"] == {
        "mode": "p2p",
        "capacity": 2,
        "members": ["alice", "bob"],
        "publications": [],
        "subscriptions": 0,
    }
    # No media transport at all on the server: not one UDP socket.
    assert udp_sockets(server.pid) == 0
    # ... while the two peers really are connected to each other.
    assert alice_mesh.links["bob"].pc.connectionState == "connected"

    await bob_mesh.leave()
    await wait_for(lambda: "bob" not in alice_mesh.links, 5)
    assert (await server.stats())["signal"]["p2p"]["pairs"] == 0
    await alice.close()
    await bob.close()


async def test_full_mesh_of_three_with_video_from_one(server: ServerProcess) -> None:
    teacher, teacher_mesh = await mesh_peer(server, "teacher", tracks=[PatternTrack(160, 120)])
    await teacher_mesh.join()
    students = []
    for uid in ("s1", "s2"):
        client, mesh = await mesh_peer(server, uid, receive=["video"])
        await mesh.join()
        students.append((client, mesh))
    everyone = [("teacher", teacher_mesh)] + [(c.uid, m) for c, m in students]
    await wait_for(lambda: all(len(m.links) == 2 for _, m in everyone), 10)
    # Each pair has exactly one connection, offered by whoever was there first.
    assert teacher_mesh.links["s1"].offerer and teacher_mesh.links["s2"].offerer
    assert students[0][1].links["s2"].offerer and not students[1][1].links["s1"].offerer

    for uid, mesh in everyone:
        for link in mesh.links.values():
            (await link.wait_channel()).send(f"hello from {uid}")
    for uid, mesh in everyone:
        heard = sorted([(await link.recv())[1] for link in mesh.links.values()])
        assert heard == sorted(f"hello from {o}" for o, _ in everyone if o != uid)

    counters = []
    for _, mesh in students:
        track = await wait_for_track(mesh.links["teacher"], "video")
        counters.append(FrameCounter(track).start())
    await wait_for(lambda: all(c.frames >= 10 for c in counters), 15)
    assert all(c.sizes == {(160, 120)} for c in counters)
    stats = await server.stats()
    assert stats["sfu"]["publications"] == {} and udp_sockets(server.pid) == 0
    for counter in counters:
        await counter.stop()
    for client, _ in students:
        await client.close()
    await teacher.close()


async def test_relay_carries_offer_answer_and_trickle_both_ways(server: ServerProcess) -> None:
    a = await Client.connect(server.ws_url, "a")
    b = await Client.connect(server.ws_url, "b")
    await a.join("r", mode="p2p")
    await b.join("r")
    offer = {"type": "offer", "sdp": "v=0 (opaque to the server)"}
    answer = {"type": "answer", "sdp": "v=0 (answer)"}
    cand_a = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    cand_b = {"candidate": "candidate:2 1 udp 1 127.0.0.1 6000 typ host", "sdpMLineIndex": 0}

    assert await a.request("offer", {"rid": "r", "to": "b", "jsep": offer}) == {}
    got = await b.signaling.wait_for("offer")
    assert got == {"from": "a", "rid": "r", "jsep": offer}
    await a.request("candidate", {"rid": "r", "to": "b", "candidate": cand_a})
    await b.request("answer", {"rid": "r", "to": "a", "jsep": answer})
    await b.request("candidate", {"rid": "r", "to": "a", "candidate": cand_b})
    await b.request("candidate", {"rid": "r", "to": "a", "candidate": None})

    assert (await a.signaling.wait_for("answer"))["jsep"] == answer
    got_a = await b.signaling.wait_for("candidate")
    assert got_a["from"] == "a" and got_a["candidate"]["candidate"] == cand_a["candidate"]
    assert got_a["candidate"]["sdpMid"] == "0"
    got_b = await a.signaling.wait_for("candidate")
    assert got_b["from"] == "b" and got_b["candidate"]["sdpMLineIndex"] == 0
    end = await a.signaling.wait_for("candidate", lambda d: d["candidate"] is None)
    assert end == {"from": "b", "rid": "r", "candidate": None}

    # Outside rooms (seed 001): any two connected peers, no rid anywhere.
    c = await Client.connect(server.ws_url, "c")
    await c.request("offer", {"to": "a", "jsep": offer})
    assert await a.signaling.wait_for("offer", lambda d: d["from"] == "c") == {
        "from": "c",
        "jsep": offer,
    }
    for client in (a, b, c):
        await client.close()


async def test_bad_relay_requests_are_refused_and_reach_nobody(server: ServerProcess) -> None:
    a = await Client.connect(server.ws_url, "a")
    b = await Client.connect(server.ws_url, "b")
    outsider = await Client.connect(server.ws_url, "outsider")
    await a.join("r", mode="p2p")
    await b.join("r")
    offer = {"type": "offer", "sdp": "v=0"}
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    before = b.signaling.received

    ans = {"type": "answer", "sdp": "x"}
    cases: list[tuple[str, dict, str, str]] = [
        ("offer", {"rid": "r", "to": "nobody", "jsep": offer}, "unknown-peer", "nobody"),
        ("offer", {"to": "nobody", "jsep": offer}, "unknown-peer", "not connected"),
        ("offer", {"rid": "r", "to": "outsider", "jsep": offer}, "unknown-peer", "not in room"),
        ("offer", {"rid": "r", "jsep": offer}, "invalid-params", "data.to"),
        ("offer", {"rid": "r", "to": "", "jsep": offer}, "invalid-params", "data.to"),
        ("offer", {"rid": "r", "to": "a", "jsep": offer}, "invalid-params", "itself"),
        ("offer", {"rid": "r", "to": "b"}, "invalid-params", "data.jsep"),
        ("offer", {"rid": "r", "to": "b", "jsep": ans}, "invalid-params", "jsep.type"),
        ("answer", {"rid": "r", "to": "b", "jsep": offer}, "invalid-params", "jsep.type"),
        ("offer", {"rid": "elsewhere", "to": "b", "jsep": offer}, "not-in-room", "elsewhere"),
        ("candidate", {"rid": "r", "to": "b"}, "invalid-params", "data.candidate"),
        ("candidate", {"rid": "r", "to": "b", "candidate": {"sdpMid": "0"}}, "invalid-params", "c"),
        ("candidate", {"rid": "r", "to": "b", "candidate": {"candidate": 5}}, "invalid-params", ""),
        # A candidate or an answer for a connection that was never offered.
        ("candidate", {"rid": "r", "to": "b", "candidate": cand}, "no-connection", "no offer"),
        ("answer", {"rid": "r", "to": "b", "jsep": ans}, "no-connection", "no offer"),
    ]  # fmt: skip
    for method, data, code, words in cases:
        with pytest.raises(SignalingError) as info:
            await a.request(method, data)
        assert info.value.code == code, (method, data, info.value)
        assert words.lower() in info.value.reason.lower(), (method, data, info.value)
    # An oversized offer is refused before it is read (its id too: the reply has id null).
    huge = {"rid": "r", "to": "b", "jsep": {"type": "offer", "sdp": "x" * 300_000}}
    await a.signaling.send_raw(
        json.dumps({"request": True, "id": 99, "method": "offer", "data": huge})
    )
    assert (await a.request("keepalive", {"rid": "r"})) == {}  # answered after the refusal

    # A pair negotiated outside the room is not a connection inside it, and vice versa.
    await a.request("offer", {"to": "b", "jsep": offer})
    with pytest.raises(SignalingError) as info:
        await a.request("candidate", {"rid": "r", "to": "b", "candidate": cand})
    assert info.value.code == "no-connection"
    # Once b is gone, a departed peer is unknown and the pair is forgotten.
    await a.request("offer", {"rid": "r", "to": "b", "jsep": offer})
    await a.request("candidate", {"rid": "r", "to": "b", "candidate": cand})
    assert (await server.stats())["signal"]["p2p"]["pairs"] == 2
    received_by_b = b.signaling.received - before
    assert received_by_b == 3  # exactly the three good requests above
    await b.close()
    await wait_for(lambda: _pairs(server), 5)
    with pytest.raises(SignalingError) as info:
        await a.request("candidate", {"rid": "r", "to": "b", "candidate": cand})
    assert info.value.code == "unknown-peer"
    b = await Client.connect(server.ws_url, "b")
    await b.join("r")
    with pytest.raises(SignalingError) as info:
        await a.request("candidate", {"rid": "r", "to": "b", "candidate": cand})
    assert info.value.code == "no-connection"
    assert b.signaling.received == 0
    assert (await a.request("keepalive", {"rid": "r"})) == {}
    assert "request-failed" not in server.log()
    for client in (a, b, outsider):
        await client.close()


async def _pairs(server: ServerProcess) -> bool:
    return (await server.stats())["signal"]["p2p"]["pairs"] == 0


async def test_third_joiner_of_a_one_to_one_room_is_refused_and_changes_nothing(
    server: ServerProcess,
) -> None:
    tutor = await Client.connect(server.ws_url, "tutor")
    student = await Client.connect(server.ws_url, "student")
    late = await Client.connect(server.ws_url, "late")
    await tutor.join("1v1", mode="p2p", capacity=2)
    await student.join("1v1")
    before = await server.stats()
    heard = tutor.signaling.received, student.signaling.received

    with pytest.raises(SignalingError) as info:
        await late.join("1v1")
    assert info.value.code == "room-full" and "1v1" in info.value.reason
    for data, code in [
        ({"rid": "1v1", "mode": "sfu"}, "room-mismatch"),
        ({"rid": "1v1", "capacity": 3}, "room-mismatch"),
        ({"rid": "1v1", "capacity": 0}, "invalid-params"),
        ({"rid": "1v1", "mode": "mcu"}, "invalid-params"),
        ({"rid": "new", "mode": "p2p", "capacity": 7}, "capacity-too-large"),
        ({"rid": "new", "capacity": "2"}, "invalid-params"),
    ]:
        with pytest.raises(SignalingError) as info:
            await late.request("join", data)
        assert info.value.code == code, (data, info.value)

    after = await server.stats()
    assert after["signal"]["rooms"] == before["signal"]["rooms"]  # no room "new" either
    assert (tutor.signaling.received, student.signaling.received) == heard  # no peer-join
    with pytest.raises(SignalingError) as info:
        await late.request("keepalive", {"rid": "1v1"})
    assert info.value.code == "not-in-room"

    await student.leave("1v1")
    assert (await late.join("1v1"))["users"][0]["uid"] == "tutor"  # the seat is free again
    for client in (tutor, student, late):
        await client.close()


async def test_publish_and_subscribe_in_a_p2p_room_are_refused(server: ServerProcess) -> None:
    alice = await Client.connect(server.ws_url, "alice")
    await alice.join("mesh", mode="p2p")
    with pytest.raises(SignalingError) as info:
        await alice.publish("mesh", [PatternTrack(160, 120)])
    assert info.value.code == "p2p-room" and "publish" in info.value.reason
    with pytest.raises(SignalingError) as info:
        await alice.publish("mesh", [], data_channels=["chat"])
    assert info.value.code == "p2p-room"
    with pytest.raises(SignalingError) as info:
        await alice.subscribe("mesh", "someone#1")
    assert info.value.code == "p2p-room" and "subscribe" in info.value.reason
    stats = await server.stats()
    assert stats["sfu"]["publications"] == {} and udp_sockets(server.pid) == 0
    await alice.close()


async def test_config_fixes_a_rooms_mode_and_capacity(tmp_path: Path) -> None:
    config = tmp_path / "aiosfu.toml"
    config.write_text(
        'room_mode = "p2p"\np2p_room_capacity = 3\n'
        'rooms = { lesson = { mode = "p2p", capacity = 2 }, hall = { mode = "sfu" } }\n'
    )
    server = start_server(tmp_path, "--config", str(config))
    try:
        clients = [await Client.connect(server.ws_url, f"p{i}") for i in range(4)]
        assert (await clients[0].join("lesson"))["capacity"] == 2
        with pytest.raises(SignalingError) as info:
            await clients[1].join("lesson", capacity=3)
        assert info.value.code == "room-mismatch"
        await clients[1].join("lesson")
        with pytest.raises(SignalingError) as info:
            await clients[2].join("lesson")
        assert info.value.code == "room-full"
        assert "mode" not in await clients[2].join("hall")  # a plain sfu room: seed-002 reply
        joined = await clients[3].join("anything")
        assert (joined["mode"], joined["capacity"]) == ("p2p", 3)
        for client in clients:
            await client.close()
    finally:
        stop_server(server)
