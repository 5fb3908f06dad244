"""One contract, two transports: every test here runs against a `LocalSfu` in-process and
against an SFU node's gRPC service (`RemoteSfu` -> `SfuServicer` -> `LocalSfu`), so the
remote contract cannot drift from the embedded one.

Media is real: aiortc peers publish and subscribe, and subscribers decode what arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from aiosfu.cluster.sfu_client import Deadlines, RemoteSfu
from aiosfu.cluster.sfu_server import start_server
from aiosfu.contract import ErrorCode, Recording, SfuError
from aiosfu.sfu.ice import use_host_addresses
from aiosfu.sfu.interface import Sfu
from aiosfu.sfu.local import LocalSfu, SfuSettings
from tests.conftest import free_port, wait_for
from tests.media import FrameCounter, PatternTrack

pytestmark = pytest.mark.media

MINFO = {"audio": False, "video": True, "audiotype": 0, "videotype": 0}


@dataclass
class Events:
    """An SfuListener that remembers what it heard."""

    connected_publications: list[tuple[str, str]] = field(default_factory=list)
    ended_publications: list[tuple[str, str]] = field(default_factory=list)
    ended_subscriptions: list[tuple[str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    started: list[Recording] = field(default_factory=list)
    stopped: list[Recording] = field(default_factory=list)

    async def publication_connected(self, rid: str, mid: str) -> None:
        self.connected_publications.append((rid, mid))

    async def publication_ended(self, rid: str, mid: str, reason: str) -> None:
        self.ended_publications.append((rid, mid))
        self.reasons.append(reason)

    async def subscription_ended(self, rid: str, sid: str, reason: str) -> None:
        self.ended_subscriptions.append((rid, sid))
        self.reasons.append(reason)

    async def recording_started(self, recording: Recording) -> None:
        self.started.append(recording)

    async def recording_stopped(self, recording: Recording) -> None:
        self.stopped.append(recording)


@dataclass
class Harness:
    sfu: Sfu
    events: Events
    local: LocalSfu
    remote: bool


@pytest.fixture(params=["local", "grpc"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    use_host_addresses(["127.0.0.1"])
    local = LocalSfu(SfuSettings(sfuid="sfu-a", record_dir=str(tmp_path / "rec")))
    events = Events()
    if request.param == "local":
        local.set_listener(events)
        yield Harness(local, events, local, remote=False)
        await local.close()
        return
    server, servicer, port = await start_server(local, "127.0.0.1:0")
    remote = RemoteSfu(f"127.0.0.1:{port}", "sfu-a", subscriber="test")
    remote.set_listener(events)
    await asyncio.wait_for(remote.events_connected.wait(), 5)
    yield Harness(remote, events, local, remote=True)
    await remote.close()
    await servicer.close()
    await server.stop(0)
    await local.close()


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def _publish(sfu: Sfu, rid: str = "room", uid: str = "alice", size=(320, 240)):
    pc = _pc()
    pc.addTrack(PatternTrack(*size))
    await pc.setLocalDescription(await pc.createOffer())
    published = await sfu.publish(rid, uid, pc.localDescription.sdp, MINFO)
    await pc.setRemoteDescription(RTCSessionDescription(published.answer_sdp, "answer"))
    return pc, published


async def _subscribe(sfu: Sfu, mid: str, rid: str = "room", uid: str = "bob"):
    pc = _pc()
    pc.addTransceiver("video", direction="recvonly")
    tracks: list = []
    pc.on("track", tracks.append)
    await pc.setLocalDescription(await pc.createOffer())
    subscribed = await sfu.subscribe(rid, uid, mid, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(subscribed.answer_sdp, "answer"))
    return pc, subscribed, tracks


async def test_published_video_is_decoded_by_a_subscriber(harness: Harness) -> None:
    publisher, published = await _publish(harness.sfu, size=(320, 240))
    assert published.sfuid == "sfu-a" and published.has_media and published.mid
    subscriber, subscribed, tracks = await _subscribe(harness.sfu, published.mid)
    assert subscribed.sid
    await wait_for(lambda: tracks, 10)
    counter = FrameCounter(tracks[0]).start()
    await wait_for(lambda: counter.frames >= 10, 15)
    assert counter.sizes == {(320, 240)}
    stats = await harness.sfu.stats()
    assert published.mid in stats["publications"] and subscribed.sid in stats["subscriptions"]
    assert stats["decoding"] is False
    # The room's Router feeds the subscriber's consumer, which shares its connection's
    # downlink; nothing of the room is left once both are gone.
    router = harness.local.routers["room"]
    (producer,) = harness.local.publishers[published.mid].producers
    subscription = harness.local.subscribers[subscribed.sid]
    assert router.producers == [producer] and router.sinks_of(producer) == subscription.consumers
    assert all(c.downstream is subscription.downstream for c in subscription.consumers)
    await counter.stop()
    await harness.sfu.unsubscribe("room", subscribed.sid)
    assert router.sinks_of(producer) == []
    await harness.sfu.unpublish("room", published.mid)
    assert not harness.local.publishers and not harness.local.subscribers
    assert harness.local.routers == {}
    await subscriber.close()
    await publisher.close()


async def test_refusals_keep_their_code_and_reason(harness: Harness) -> None:
    with pytest.raises(SfuError) as bad:
        await harness.sfu.publish("room", "alice", "v=0\r\nnot sdp", MINFO)
    assert bad.value.code == ErrorCode.BAD_SDP and bad.value.reason
    with pytest.raises(SfuError) as unknown:
        await harness.sfu.subscribe("room", "bob", "nobody#0", "v=0\r\n")
    assert unknown.value.code == ErrorCode.UNKNOWN_MID and "nobody#0" in unknown.value.reason
    with pytest.raises(SfuError) as record:
        await harness.sfu.start_recording("room", "nobody#0")
    assert record.value.code == ErrorCode.UNKNOWN_MID
    assert not harness.local.publishers  # nothing was left behind


async def test_ending_calls_are_idempotent(harness: Harness) -> None:
    publisher, published = await _publish(harness.sfu)
    await harness.sfu.unpublish("room", published.mid)
    await harness.sfu.unpublish("room", published.mid)
    await harness.sfu.unsubscribe("room", "nobody#0")
    await harness.sfu.close_peer("room", "alice")
    assert not harness.local.publishers
    await publisher.close()


async def test_recording_events_reach_the_listener(harness: Harness) -> None:
    publisher, published = await _publish(harness.sfu)
    await asyncio.sleep(0.5)
    started = await harness.sfu.start_recording("room", published.mid)
    again = await harness.sfu.start_recording("room", published.mid)
    assert again.file == started.file and started.mid == published.mid
    await asyncio.sleep(1.0)
    stopped = await harness.sfu.stop_recording("room", published.mid)
    assert stopped.reason == "requested" and stopped.file == started.file
    with pytest.raises(SfuError) as twice:
        await harness.sfu.stop_recording("room", published.mid)
    assert twice.value.code == ErrorCode.NOT_RECORDING
    await wait_for(lambda: harness.events.started and harness.events.stopped, 5)
    assert harness.events.started[0].mid == published.mid
    assert harness.events.stopped[0].reason == "requested"
    await harness.sfu.unpublish("room", published.mid)
    await publisher.close()


async def test_a_publisher_that_goes_away_ends_its_publication(harness: Harness) -> None:
    publisher, published = await _publish(harness.sfu)
    await wait_for(lambda: harness.local.publishers[published.mid].pc.connectionState
                   == "connected", 10)  # fmt: skip
    # Announcing waits for this event: it must cross the transport too.
    await wait_for(lambda: harness.events.connected_publications, 5)
    assert harness.events.connected_publications == [("room", published.mid)]
    await publisher.close()  # DTLS close_notify: the SFU sees the transport close
    await wait_for(lambda: harness.events.ended_publications, 15)
    assert harness.events.ended_publications == [("room", published.mid)]
    assert harness.events.reasons and harness.events.reasons[0], "the peer is told why"


# --- what only the remote transport has ---------------------------------------------


async def test_a_stale_epoch_is_refused(tmp_path: Path) -> None:
    use_host_addresses(["127.0.0.1"])
    local = LocalSfu(SfuSettings(sfuid="sfu-a", record_dir=str(tmp_path)))
    server, _servicer, port = await start_server(local, "127.0.0.1:0")
    epochs = {"room": 7}
    sfu = RemoteSfu(f"127.0.0.1:{port}", "sfu-a", epoch=epochs.__getitem__)
    try:
        publisher, published = await _publish(sfu)
        epochs["room"] = 5  # a signal node that missed the room moving on
        with pytest.raises(SfuError) as stale:
            await sfu.unpublish("room", published.mid)
        assert stale.value.code == ErrorCode.STALE_EPOCH and "7" in stale.value.reason
        assert published.mid in local.publishers  # the refused call changed nothing
        epochs["room"] = 8
        await sfu.unpublish("room", published.mid)
        assert not local.publishers
        await publisher.close()
    finally:
        await sfu.close()
        await server.stop(0)
        await local.close()


async def test_an_unreachable_node_is_answered_within_the_deadline() -> None:
    sfu = RemoteSfu(f"127.0.0.1:{free_port()}", "sfu-gone", deadlines=Deadlines(control=1.0))
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(SfuError) as gone:
            await sfu.unpublish("room", "alice#1")  # idempotent: retried, then refused
        assert gone.value.code == ErrorCode.SFU_UNAVAILABLE and "sfu-gone" in gone.value.reason
        assert loop.time() - began < 5
        with pytest.raises(SfuError) as gone:
            await sfu.publish("room", "alice", "v=0\r\n", MINFO)  # not retried
        assert gone.value.code == ErrorCode.SFU_UNAVAILABLE
    finally:
        await sfu.close()
