"""The `Sfu` contract over gRPC: what a signal node holds for one SFU node.

Every call has a deadline. Only idempotent calls are retried (unpublish, unsubscribe,
close_peer, start_recording, stats: doing them twice leaves the same state), and only when
the node could not be reached; a publish or subscribe that timed out may have taken effect
on the node, so it is answered `sfu-unavailable` and the client decides.

The listener's events arrive over one `Events` server stream, reopened with backoff while
the node is unreachable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from aiosfu.cluster import wire
from aiosfu.cluster.proto import sfu_pb2 as pb
from aiosfu.cluster.proto import sfu_pb2_grpc
from aiosfu.contract import Published, Recording, Subscribed
from aiosfu.log import get_logger
from aiosfu.sfu.interface import SfuListener

log = get_logger("aiosfu.cluster.sfu_client")

T = TypeVar("T")

# Keepalive pings find a dead node on an idle channel (the Events stream has no deadline).
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class Deadlines:
    """Seconds each call may take. Negotiation gathers ICE candidates on the node."""

    negotiate: float = 10.0
    control: float = 3.0
    retries: int = 3
    retry_backoff: float = 0.1


class RemoteSfu:
    def __init__(
        self,
        target: str,
        sfuid: str,
        epoch: Callable[[str], int] = lambda rid: 0,
        deadlines: Deadlines | None = None,
        subscriber: str = "",
    ) -> None:
        self.target = target
        self.sfuid = sfuid
        self.epoch = epoch  # rid -> the owner epoch this signal node acts on
        self.deadlines = deadlines or Deadlines()
        self.subscriber = subscriber
        self.channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        self.stub = sfu_pb2_grpc.SfuStub(self.channel)  # type: ignore[no-untyped-call]
        self._listener: SfuListener | None = None
        self._events: asyncio.Task[None] | None = None
        self.events_connected = asyncio.Event()

    def _room(self, rid: str) -> pb.RoomRef:
        return pb.RoomRef(rid=rid, epoch=self.epoch(rid))

    async def _once(self, call: Callable[..., Awaitable[T]], request: Any, timeout: float) -> T:
        try:
            return await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise wire.error_from_rpc(exc, self.sfuid) from exc

    async def _idempotent(self, call: Callable[..., Awaitable[T]], request: Any) -> T:
        """Retried while the node cannot be reached, all tries within one deadline."""
        deadline = time.monotonic() + self.deadlines.control
        backoff = self.deadlines.retry_backoff
        for attempt in range(self.deadlines.retries + 1):
            left = deadline - time.monotonic()
            try:
                return await call(request, timeout=max(left, 0.01))
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() == grpc.StatusCode.UNAVAILABLE
                if not retry or attempt == self.deadlines.retries or left <= backoff:
                    raise wire.error_from_rpc(exc, self.sfuid) from exc
                log.info("sfu-call-retry", sfuid=self.sfuid, attempt=attempt + 1)
                await asyncio.sleep(backoff)
                backoff *= 2
        raise AssertionError("unreachable")

    async def publish(self, rid: str, uid: str, offer_sdp: str, minfo: dict[str, Any]) -> Published:
        request = pb.PublishRequest(
            room=self._room(rid), uid=uid, offer_sdp=offer_sdp, minfo_json=json.dumps(minfo)
        )
        reply: pb.PublishReply = await self._once(
            self.stub.Publish, request, self.deadlines.negotiate
        )
        return Published(
            answer_sdp=reply.answer_sdp, mid=reply.mid, sfuid=reply.sfuid, has_media=reply.has_media
        )

    async def subscribe(self, rid: str, uid: str, mid: str, offer_sdp: str) -> Subscribed:
        request = pb.SubscribeRequest(room=self._room(rid), uid=uid, mid=mid, offer_sdp=offer_sdp)
        reply: pb.SubscribeReply = await self._once(
            self.stub.Subscribe, request, self.deadlines.negotiate
        )
        return Subscribed(answer_sdp=reply.answer_sdp, sid=reply.sid)

    async def unpublish(self, rid: str, mid: str) -> None:
        await self._idempotent(
            self.stub.Unpublish, pb.UnpublishRequest(room=self._room(rid), mid=mid)
        )

    async def unsubscribe(self, rid: str, sid: str) -> None:
        await self._idempotent(
            self.stub.Unsubscribe, pb.UnsubscribeRequest(room=self._room(rid), sid=sid)
        )

    async def pause(self, rid: str, mid: str, kind: str, paused: bool) -> None:
        """Idempotent: pausing twice leaves the track paused."""
        await self._idempotent(
            self.stub.Pause,
            pb.PauseRequest(room=self._room(rid), mid=mid, kind=kind, paused=paused),
        )

    async def close_peer(self, rid: str, uid: str) -> None:
        await self._idempotent(
            self.stub.ClosePeer, pb.ClosePeerRequest(room=self._room(rid), uid=uid)
        )

    async def start_recording(self, rid: str, mid: str) -> Recording:
        request = pb.RecordingRequest(room=self._room(rid), mid=mid)
        reply: pb.Recording = await self._idempotent(self.stub.StartRecording, request)
        return wire.recording_from_pb(reply)

    async def stop_recording(self, rid: str, mid: str) -> Recording:
        # Not retried: a second stop after a lost answer is refused with not-recording.
        request = pb.RecordingRequest(room=self._room(rid), mid=mid)
        reply: pb.Recording = await self._once(
            self.stub.StopRecording, request, self.deadlines.control
        )
        return wire.recording_from_pb(reply)

    async def stats(self) -> dict[str, Any]:
        reply: pb.StatsReply = await self._idempotent(self.stub.Stats, pb.StatsRequest())
        stats: dict[str, Any] = json.loads(reply.stats_json)
        return stats

    # --- events ---------------------------------------------------------------------

    def set_listener(self, listener: SfuListener) -> None:
        self._listener = listener
        if self._events is None:
            self._events = asyncio.ensure_future(self._follow_events())

    async def _follow_events(self) -> None:
        backoff = 0.1
        while True:
            try:
                stream = self.stub.Events(pb.EventsRequest(subscriber=self.subscriber))
                await stream.wait_for_connection()
                self.events_connected.set()
                backoff = 0.1
                async for event in stream:
                    await self._dispatch(event)
                log.info("events-ended", sfuid=self.sfuid)
            except grpc.aio.AioRpcError as exc:
                log.info("events-lost", sfuid=self.sfuid, code=exc.code().name)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("events-failed", sfuid=self.sfuid)
            self.events_connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _dispatch(self, event: pb.Event) -> None:
        listener = self._listener
        if listener is None:
            return
        kind = event.WhichOneof("kind")
        if kind == "publication_connected":
            connected = event.publication_connected
            await listener.publication_connected(connected.rid, connected.mid)
        elif kind == "publication_ended":
            ended = event.publication_ended
            await listener.publication_ended(ended.rid, ended.mid, ended.reason)
        elif kind == "subscription_ended":
            gone = event.subscription_ended
            await listener.subscription_ended(gone.rid, gone.sid, gone.reason)
        elif kind == "recording_started":
            await listener.recording_started(wire.recording_from_pb(event.recording_started))
        elif kind == "recording_stopped":
            await listener.recording_stopped(wire.recording_from_pb(event.recording_stopped))

    async def close(self) -> None:
        """Closes this signal node's channel; the SFU node and its media go on."""
        if self._events is not None:
            self._events.cancel()
            self._events = None
        await self.channel.close()
