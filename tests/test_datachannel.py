"""Data channels through the SFU: chat and app data relayed among a room's peers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiosfu.client import Client, DataMessage, RoomChannel
from tests.conftest import ROOT, ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, wait_for_track

pytestmark = pytest.mark.media

MESSAGES = 1000


async def chat_peer(server: ServerProcess, uid: str, label: str = "chat", rid: str = "class"):  # type: ignore[no-untyped-def]
    client = await Client.connect(server.ws_url, uid)
    await client.join(rid)
    publication = await client.publish(rid, [], data_channels=[label])
    channel = publication.channels[label]
    await channel.wait_open()
    return client, publication, channel


async def received(channel: RoomChannel, count: int, timeout: float = 20.0) -> list[DataMessage]:
    return [await channel.recv(timeout) for _ in range(count)]


async def until_relayed(server: ServerProcess, uids: set[str]) -> None:
    """The server relays a channel from when its open reaches it, just after ours opened."""

    async def ready() -> bool:
        stats = await server.stats()
        return {e["uid"] for e in stats["sfu"]["datachannels"]} >= uids

    await wait_for(ready, 10)


async def test_chat_reaches_everyone_else_in_order_or_one_peer_when_addressed(
    server: ServerProcess,
) -> None:
    teacher = await Client.connect(server.ws_url, "teacher")
    await teacher.join("class")
    lesson = await teacher.publish("class", [PatternTrack(160, 120)], data_channels=["chat"])
    teacher_chat = lesson.channels["chat"]
    await teacher_chat.wait_open()
    s1, s1_pub, s1_chat = await chat_peer(server, "s1")
    s2, _, s2_chat = await chat_peer(server, "s2")
    s3, _, s3_other = await chat_peer(server, "s3", label="whiteboard")
    await until_relayed(server, {"teacher", "s1", "s2", "s3"})

    # A data-only publication is not a stream: nobody is told to subscribe to it.
    observer = await Client.connect(server.ws_url, "observer")
    joined = await observer.join("class")
    assert [p["mid"] for p in joined["pubs"]] == [lesson.mid]
    assert not any(
        name == "stream-add" and data["uid"] != "teacher"
        for client in (teacher, s1, s2, s3)
        for name, data in client.signaling.notifications
    )
    # The teacher's camera and chat share one connection; the video still flows.
    watcher = await Client.connect(server.ws_url, "watcher")
    await watcher.join("class")
    video = FrameCounter(
        await wait_for_track(await watcher.subscribe("class", lesson.mid), "video")
    ).start()

    teacher_chat.send({"text": "good morning"})
    for channel in (s1_chat, s2_chat):
        assert await channel.recv() == DataMessage("teacher", {"text": "good morning"})
    s1_chat.send("psst", to="s2")
    assert await s2_chat.recv() == DataMessage("s1", "psst", to="s2")
    s1_chat.send_bytes(b"\x00\xffpicture", to="teacher")
    assert await teacher_chat.recv() == DataMessage("s1", b"\x00\xffpicture")

    # A thousand messages each way between two students, in order, none lost; the others
    # on the chat hear both streams; the whiteboard channel hears nothing.
    for i in range(MESSAGES):
        s1_chat.send(i)
        s2_chat.send(-i)
    got_by_s2 = await received(s2_chat, MESSAGES)
    got_by_s1 = await received(s1_chat, MESSAGES)
    assert [m.data for m in got_by_s2] == list(range(MESSAGES))
    assert [m.data for m in got_by_s1] == [-i for i in range(MESSAGES)]
    assert {m.sender for m in got_by_s2} == {"s1"} and {m.sender for m in got_by_s1} == {"s2"}
    heard = await received(teacher_chat, 2 * MESSAGES)
    assert [m.data for m in heard if m.sender == "s1"] == list(range(MESSAGES))
    assert [m.data for m in heard if m.sender == "s2"] == [-i for i in range(MESSAGES)]
    assert s3_other.messages.empty()
    await wait_for(lambda: video.frames >= 10, 10)

    stats = {e["uid"]: e for e in (await server.stats())["sfu"]["datachannels"]}
    assert stats["s1"]["messagesIn"] == MESSAGES + 2 and stats["s1"]["dropped"] == 0
    assert stats["teacher"]["messagesOut"] == 2 * MESSAGES + 1
    assert stats["s3"]["label"] == "whiteboard" and stats["s3"]["messagesOut"] == 0

    # Unpublishing closes the relay for that connection; the others keep chatting.
    await s1.unpublish(s1_pub)
    await wait_for(lambda: _without(server, "s1"), 5)
    s2_chat.send("still here")
    assert await teacher_chat.recv() == DataMessage("s2", "still here")
    await video.stop()
    for client in (teacher, s1, s2, s3, watcher, observer):
        await client.close()


async def _without(server: ServerProcess, uid: str) -> bool:
    return all(e["uid"] != uid for e in (await server.stats())["sfu"]["datachannels"])


async def test_bad_data_channel_messages_are_refused_in_band(server: ServerProcess) -> None:
    _, _, alice = await chat_peer(server, "alice")
    bob_client, _, bob = await chat_peer(server, "bob")
    # Mallory ignores the advertised max-message-size, as a broken client would.
    mallory = await Client.connect(server.ws_url, "mallory")
    await mallory.join("class")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    raw = pc.createDataChannel("chat")
    mine = RoomChannel(raw)
    await pc.setLocalDescription(await pc.createOffer())
    offer = {"type": "offer", "sdp": pc.localDescription.sdp}
    minfo = {"audio": False, "video": False, "audiotype": 0, "videotype": 0}
    result = await mallory.request("publish", {"rid": "class", "jsep": offer, "minfo": minfo})
    answer = result["jsep"]["sdp"]
    assert "a=max-message-size:16384" in answer  # what compliant peers hold to
    unlimited = answer.replace("max-message-size:16384", "max-message-size:0")
    await pc.setRemoteDescription(RTCSessionDescription(unlimited, "answer"))
    await mine.wait_open()
    await until_relayed(server, {"alice", "bob", "mallory"})
    with pytest.raises(ValueError):  # a compliant client refuses locally
        alice.send("x" * 20_000)

    bad: list[tuple[str | bytes, str]] = [
        ("x" * 20_000, "message-too-large"),
        (b"\x00" * 20_000, "message-too-large"),
        ("not json", "bad-message"),
        ('["data"]', "bad-message"),
        ('{"text": "no data key"}', "bad-message"),
        ('{"data": 1, "to": 5}', "bad-message"),
        ('{"data": 1, "to": "nobody"}', "unknown-peer"),
        ('{"data": 1, "to": "mallory"}', "unknown-peer"),
        ("[" * 5000 + "]" * 5000, "bad-message"),  # nested past the JSON parser's depth
        (b"\x00", "bad-message"),
        (b"\x00\x09short", "bad-message"),
        (b"\x00\x02\xff\xfeuid not utf-8", "bad-message"),
    ]
    for message, _ in bad:
        raw.send(message)
    raw.send(json.dumps({"data": "finally fine"}))
    assert await alice.recv() == DataMessage("mallory", "finally fine")
    await wait_for(lambda: len(mine.errors) == len(bad), 5)
    assert [e.code for e in mine.errors] == [code for _, code in bad]
    assert all(e.reason for e in mine.errors)
    assert alice.messages.empty() and await bob.recv() == DataMessage("mallory", "finally fine")

    stats = {e["uid"]: e for e in (await server.stats())["sfu"]["datachannels"]}
    assert stats["mallory"]["refused"] == len(bad)
    assert "request-failed" not in server.log() and "Traceback" not in server.log()
    bob.send("and the room carries on", to="alice")
    assert await alice.recv() == DataMessage("bob", "and the room carries on", to="alice")
    await pc.close()
    await mallory.close()
    await bob_client.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_stalled_receiver_costs_bounded_memory_and_slows_nobody(tmp_path: Path) -> None:
    limit = 256 * 1024
    config = tmp_path / "aiosfu.toml"
    config.write_text(f"datachannel_buffer_bytes = {limit}\n")
    server = start_server(tmp_path, "--config", str(config))
    slow_log = (tmp_path / "slow.log").open("wb")
    slow = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "tests.datachannel_peer", server.ws_url, "slow", "class"],
        stdout=subprocess.PIPE,
        stderr=slow_log,
        cwd=ROOT,
    )

    async def line() -> str:
        assert slow.stdout is not None
        return (await asyncio.wait_for(slow.stdout.readline(), 30)).decode()

    try:
        sender_client, _, sender = await chat_peer(server, "sender")
        healthy_client, _, healthy = await chat_peer(server, "healthy")
        assert await line() == "ready\n"
        await until_relayed(server, {"sender", "healthy", "slow"})
        rss_before = rss_bytes(server.pid)
        os.kill(slow.pid, signal.SIGSTOP)

        # 12 MB to a peer that takes nothing. The relay does not slow a sender down, so the
        # sender paces itself on what the healthy peer has taken (a window of 32 messages).
        count, payload = 3000, "x" * 4000
        got: list[DataMessage] = []
        progress = asyncio.Event()

        async def take() -> None:
            while len(got) < count:
                got.append(await healthy.recv(30))
                progress.set()

        taker = asyncio.ensure_future(take())
        for i in range(count):
            while i - len(got) >= 32:
                progress.clear()
                await progress.wait()
            sender.send([i, payload])
        await asyncio.wait_for(taker, 60)
        assert [m.data[0] for m in got] == list(range(count))  # in order, none lost
        assert healthy.dropped == 0

        stats = {e["uid"]: e for e in (await server.stats())["sfu"]["datachannels"]}
        stalled = stats["slow"]
        assert stalled["dropped"] > 0 and stats["healthy"]["dropped"] == 0
        assert stalled["maxBuffered"] <= limit
        growth = rss_bytes(server.pid) - rss_before
        assert growth < 4 * 1024 * 1024, f"server grew {growth} bytes for a stalled peer"

        # Back again: told exactly how many it missed, then the stream resumes.
        os.kill(slow.pid, signal.SIGCONT)

        async def drained() -> bool:
            stats = (await server.stats())["sfu"]["datachannels"]
            return next(e for e in stats if e["uid"] == "slow")["buffered"] == 0

        await wait_for(drained, 10)  # the gap was reported on the way below half the limit
        sender.send("end")
        lines = [await line(), await line()]
        assert lines[0].startswith("dropped ")
        _, received_count, dropped = lines[1].split()
        assert int(received_count) + int(dropped) == count
        assert int(dropped) == stalled["dropped"]
        assert await asyncio.wait_for(slow.wait(), 10) == 0
        await sender_client.close()
        await healthy_client.close()
    finally:
        if slow.returncode is None:
            os.kill(slow.pid, signal.SIGCONT)
            slow.kill()
            await slow.wait()
        stop_server(server)
