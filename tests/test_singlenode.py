"""One `aiosfu serve` process, real aiortc peers, media over loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiortc.clock import current_ntp_time
from aiortc.rtp import RtcpSrPacket

from aiosfu.client import Client, SignalingError
from tests.conftest import ServerProcess, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track

pytestmark = pytest.mark.media

WIDTH, HEIGHT = 320, 240


def socket_count(pid: int) -> int:
    fd_dir = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(fd_dir / fd).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def publisher(server: ServerProcess, uid: str = "teacher", rid: str = "class"):  # type: ignore[no-untyped-def]
    client = await Client.connect(server.ws_url, uid)
    await client.join(rid)
    publication = await client.publish(rid, [ToneTrack(), PatternTrack(WIDTH, HEIGHT)])
    return client, publication


async def subscriber(server: ServerProcess, uid: str, mid: str, rid: str = "class"):  # type: ignore[no-untyped-def]
    client = await Client.connect(server.ws_url, uid)
    await client.join(rid)
    subscription = await client.subscribe(rid, mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    audio = FrameCounter(await wait_for_track(subscription, "audio")).start()
    return client, subscription, video, audio


async def test_one_publisher_three_subscribers_decode_without_server_decoding(
    server: ServerProcess,
) -> None:
    idle_threads = server.os_thread_count()
    pub_client, publication = await publisher(server)
    subs = [await subscriber(server, f"student{i}", publication.mid) for i in range(3)]

    await wait_for(lambda: all(v.frames >= 45 and a.frames >= 50 for _, _, v, a in subs), 20)

    for _, _, video, audio in subs:
        assert video.sizes == {(WIDTH, HEIGHT)}
        assert audio.sample_rates == {48000}
    stats = await server.stats()
    sfu = stats["sfu"]
    producers = sfu["publications"][publication.mid]["producers"]
    assert {p["kind"]: p["codec"] for p in producers} == {
        "audio": "audio/opus",
        "video": "video/VP8",
    }
    assert len(sfu["subscriptions"]) == 3
    for sub in sfu["subscriptions"].values():
        assert all(c["packetsOut"] > 0 for c in sub["consumers"])
    # The SFU forwards: no decoder or encoder thread, not even an executor thread.
    assert sfu["decoding"] is False
    assert sfu["threads"] == ["MainThread"]
    assert server.os_thread_count() == idle_threads

    for client, _, video, audio in subs:
        await video.stop()
        await audio.stop()
        await client.close()
    await pub_client.close()


async def test_late_joiner_starts_on_a_keyframe_within_a_second(server: ServerProcess) -> None:
    pub_client, publication = await publisher(server)
    await asyncio.sleep(3)  # well past the publisher's first keyframe
    client, subscription, video, audio = await subscriber(server, "late", publication.mid)
    await wait_for(lambda: video.first_frame_at is not None, 5)
    assert video.first_frame_at is not None
    delay = video.first_frame_at - subscription.answered_at
    assert delay < 1.0, f"first frame {delay:.3f}s after the subscribe answer"

    stats = await server.stats()
    video_producer = next(
        p
        for p in stats["sfu"]["publications"][publication.mid]["producers"]
        if p["kind"] == "video"
    )
    assert video_producer["keyframeRequestsSent"] >= 1
    assert video_producer["keyframesIn"] >= 2
    await video.stop()
    await audio.stop()
    await client.close()
    await pub_client.close()


async def test_subscriber_pli_reaches_publisher_rate_limited(server: ServerProcess) -> None:
    pub_client, publication = await publisher(server)
    client, subscription, video, audio = await subscriber(server, "s1", publication.mid)
    await wait_for(lambda: video.frames >= 10, 10)
    await asyncio.sleep(0.6)  # past the rate-limit window of the subscription's own request
    before = await server.stats()
    sent_before = _producer(before, publication.mid, "video")["keyframeRequestsSent"]
    keyframes_before = _producer(before, publication.mid, "video")["keyframesIn"]

    receiver = next(r for r in subscription.pc.getReceivers() if r.track.kind == "video")
    ssrc = next(iter(receiver._RTCRtpReceiver__remote_streams))
    for _ in range(10):
        await receiver._send_rtcp_pli(ssrc)
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)

    after = await server.stats()
    producer = _producer(after, publication.mid, "video")
    consumer = _consumer(after, subscription.sid, "video")
    assert consumer["keyframeRequestsReceived"] >= 10
    assert 1 <= producer["keyframeRequestsSent"] - sent_before <= 2
    assert producer["keyframeRequestsSuppressed"] >= 8
    assert producer["keyframesIn"] > keyframes_before
    await video.stop()
    await audio.stop()
    await client.close()
    await pub_client.close()


async def test_lost_packets_are_repaired_from_the_server_cache(server: ServerProcess) -> None:
    pub_client, publication = await publisher(server)
    client = await Client.connect(server.ws_url, "lossy")
    await client.join("class")
    subscription = await client.subscribe("class", publication.mid)

    # Drop every 15th video packet on arrival at the subscriber, as a lossy link would.
    transport = subscription.pc.getReceivers()[0].transport
    original = transport._handle_rtp_data
    arrivals = {"n": 0}

    async def lossy(data: bytes, arrival_time_ms: int) -> None:
        if data[1] & 0x7F != 111:  # not Opus
            arrivals["n"] += 1
            if arrivals["n"] % 15 == 0:
                return
        await original(data, arrival_time_ms)

    transport._handle_rtp_data = lossy
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 60, 20)

    consumer = _consumer(await server.stats(), subscription.sid, "video")
    assert consumer["nacksReceived"] > 0
    assert consumer["retransmitted"] > 0
    await video.stop()
    await client.close()
    await pub_client.close()


async def test_sender_reports_keep_the_publisher_clock(server: ServerProcess) -> None:
    pub_client, publication = await publisher(server)
    client = await Client.connect(server.ws_url, "sync")
    await client.join("class")
    subscription = await client.subscribe("class", publication.mid)
    samples: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
    reports: dict[str, list[tuple[int, int]]] = {"audio": [], "video": []}
    for receiver in subscription.pc.getReceivers():
        kind = receiver.track.kind
        on_rtp, on_rtcp = receiver._handle_rtp_packet, receiver._handle_rtcp_packet

        async def rtp(packet, arrival_time_ms, kind=kind, on_rtp=on_rtp):  # type: ignore[no-untyped-def]
            samples[kind].append((current_ntp_time(), packet.timestamp))
            await on_rtp(packet, arrival_time_ms)

        async def rtcp(packet, kind=kind, on_rtcp=on_rtcp):  # type: ignore[no-untyped-def]
            if isinstance(packet, RtcpSrPacket):
                info = packet.sender_info
                reports[kind].append((info.ntp_timestamp, info.rtp_timestamp))
            await on_rtcp(packet)

        receiver._handle_rtp_packet = rtp
        receiver._handle_rtcp_packet = rtcp
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    audio = FrameCounter(await wait_for_track(subscription, "audio")).start()
    await wait_for(lambda: len(reports["audio"]) >= 3 and len(reports["video"]) >= 3, 15)

    for kind, clock_rate in (("audio", 48000), ("video", 90000)):
        ntp, rtp = reports[kind][-1]
        # The packet whose arrival is closest to the report's wallclock.
        arrival, timestamp = min(samples[kind], key=lambda s: abs(s[0] - ntp))
        wallclock_gap = (arrival - ntp) / 2**32
        media_gap = ((timestamp - rtp + 2**31) % 2**32 - 2**31) / clock_rate
        assert abs(wallclock_gap - media_gap) < 0.1, (kind, wallclock_gap, media_gap)
    await video.stop()
    await audio.stop()
    await client.close()
    await pub_client.close()


async def test_disconnect_unpublishes_and_tells_the_room(server: ServerProcess) -> None:
    watcher = await Client.connect(server.ws_url, "watcher")
    await watcher.join("class")
    baseline = await server.stats()
    baseline_sockets = socket_count(server.pid)

    pub_client, publication = await publisher(server)
    added = await watcher.signaling.wait_for("stream-add")
    assert added == {
        "rid": "class",
        "uid": "teacher",
        "mid": publication.mid,
        "sfuid": "sfu-1",
        "minfo": {"audio": True, "video": True, "audiotype": 0, "videotype": 0},
    }
    subscription = await watcher.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    assert socket_count(server.pid) > baseline_sockets

    await pub_client.signaling.close()  # the teacher's browser tab dies: no leave, no unpublish
    removed = await watcher.signaling.wait_for("stream-remove")
    left = await watcher.signaling.wait_for("peer-leave")
    assert removed == {"rid": "class", "uid": "teacher", "mid": publication.mid}
    assert left == {"rid": "class", "uid": "teacher"}

    async def all_freed() -> bool:
        stats = await server.stats()
        return (
            not stats["sfu"]["publications"]
            and not stats["sfu"]["subscriptions"]
            and stats["tasks"] <= baseline["tasks"]
            and socket_count(server.pid) == baseline_sockets
        )

    await wait_for(all_freed, 10)
    with pytest.raises(SignalingError) as refused:
        await watcher.unsubscribe(subscription)
    assert refused.value.code == "unknown-sid"
    await video.stop()
    await watcher.close()
    await pub_client.close()


async def test_unpublish_and_unsubscribe_free_everything(server: ServerProcess) -> None:
    watcher = await Client.connect(server.ws_url, "watcher")
    await watcher.join("class")
    pub_client = await Client.connect(server.ws_url, "teacher")
    await pub_client.join("class")
    baseline = await server.stats()
    baseline_sockets = socket_count(server.pid)

    publication = await pub_client.publish("class", [ToneTrack(), PatternTrack(WIDTH, HEIGHT)])
    subscription = await watcher.subscribe("class", publication.mid)
    video = FrameCounter(await wait_for_track(subscription, "video")).start()
    await wait_for(lambda: video.frames >= 5, 10)
    await video.stop()

    await watcher.unsubscribe(subscription)
    stats = await server.stats()
    assert stats["sfu"]["subscriptions"] == {}
    assert stats["signal"]["rooms"]["class"]["subscriptions"] == 0
    await pub_client.unpublish(publication)
    removed = await watcher.signaling.wait_for("stream-remove")
    assert removed["mid"] == publication.mid

    async def all_freed() -> bool:
        stats = await server.stats()
        return (
            not stats["sfu"]["publications"]
            and stats["tasks"] <= baseline["tasks"]
            and socket_count(server.pid) == baseline_sockets
        )

    await wait_for(all_freed, 10)
    await watcher.close()
    await pub_client.close()


async def test_silent_peer_is_removed_after_keepalive_timeout(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--keepalive-timeout", "1.5")
    try:
        watcher = await Client.connect(server.ws_url, "watcher", keepalive_interval=0.3)
        await watcher.join("class")
        silent = await Client.connect(server.ws_url, "silent", keepalive_interval=3600)
        await silent.join("class")
        publication = await silent.publish("class", [PatternTrack(WIDTH, HEIGHT)])
        await watcher.signaling.wait_for("stream-add")

        removed = await watcher.signaling.wait_for("stream-remove", timeout=6)
        left = await watcher.signaling.wait_for("peer-leave", timeout=2)
        assert removed["mid"] == publication.mid
        assert left == {"rid": "class", "uid": "silent"}
        await wait_for(lambda: silent.signaling.closed, 2)
        assert silent.signaling._ws.close_code == 4000
        stats = await server.stats()
        assert stats["signal"]["rooms"]["class"]["members"] == ["watcher"]
        assert stats["sfu"]["publications"] == {}
        await watcher.close()
        await silent.close()
    finally:
        stop_server(server)


async def test_second_connection_with_same_uid_replaces_the_first(server: ServerProcess) -> None:
    first = await Client.connect(server.ws_url, "alice")
    await first.join("class")
    second = await Client.connect(server.ws_url, "alice")
    await wait_for(lambda: first.signaling.closed, 5)
    assert first.signaling._ws.close_code == 4001
    result = await second.join("class")
    assert result == {"pubs": [], "users": []}
    await first.close()
    await second.close()


def _producer(stats: dict, mid: str, kind: str) -> dict:
    return next(p for p in stats["sfu"]["publications"][mid]["producers"] if p["kind"] == kind)


def _consumer(stats: dict, sid: str, kind: str) -> dict:
    return next(c for c in stats["sfu"]["subscriptions"][sid]["consumers"] if c["kind"] == kind)


def _candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_without_ice_ip_a_loopback_only_machine_uses_loopback(tmp_path: Path) -> None:
    # The tests run in a network namespace that has nothing but `lo`.
    server = start_server(tmp_path, ice_ips=())
    try:
        pub_client, publication = await publisher(server)
        assert _candidate_addresses(publication.pc.remoteDescription.sdp) == {"127.0.0.1"}
        client, _, video, audio = await subscriber(server, "s1", publication.mid)
        await wait_for(lambda: video.frames >= 5, 10)
        await video.stop()
        await audio.stop()
        await client.close()
        await pub_client.close()
    finally:
        stop_server(server)


async def test_ice_ip_restricts_candidates_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    server = start_server(tmp_path, ice_ips=("127.0.0.2",))
    try:
        pub_client, publication = await publisher(server)
        assert _candidate_addresses(publication.pc.remoteDescription.sdp) == {"127.0.0.2"}
        await pub_client.close()
    finally:
        stop_server(server)
    with pytest.raises(RuntimeError, match="does not appear to be an IPv4 or IPv6 address"):
        start_server(tmp_path, ice_ips=("not-an-ip",))
