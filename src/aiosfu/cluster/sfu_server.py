"""An SFU node's gRPC service: the `Sfu` contract of a `LocalSfu`, served to signal nodes.

Every call carries the room's epoch (the revision of its owner key in etcd). The node keeps
the newest epoch it has seen per room and refuses older ones with `stale-epoch`: a signal
node that still believes in a placement that has since moved cannot change the room.
Epoch 0 means "no placement" (a single signal node with a fixed SFU node) and is never
refused.

The listener events of the local SFU (media that ended on its own, recordings started or
stopped) go to every signal node connected to the `Events` server stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from aiosfu.cluster import wire
from aiosfu.cluster.proto import sfu_pb2 as pb
from aiosfu.cluster.proto import sfu_pb2_grpc
from aiosfu.contract import CodedError, ErrorCode, Recording, SfuError
from aiosfu.log import get_logger
from aiosfu.sfu.interface import Sfu

log = get_logger("aiosfu.cluster.sfu_server")

T = TypeVar("T")

# Events waiting for a slow signal node; past this the stream is ended and the signal node
# reconnects (it then learns the room state again from its own calls).
EVENT_BACKLOG = 10_000


class Epochs:
    """The newest owner epoch seen per room."""

    def __init__(self) -> None:
        self._newest: dict[str, int] = {}

    def check(self, room: pb.RoomRef) -> None:
        newest = self._newest.get(room.rid, 0)
        if room.epoch and room.epoch < newest:
            raise SfuError(
                ErrorCode.STALE_EPOCH,
                f"room {room.rid!r} moved: epoch {room.epoch} is older than {newest}",
            )
        if room.epoch > newest:
            self._newest[room.rid] = room.epoch

    def forget(self, rid: str) -> None:
        self._newest.pop(rid, None)


class SfuServicer(sfu_pb2_grpc.SfuServicer):
    def __init__(self, sfu: Sfu) -> None:
        self.sfu = sfu
        self.epochs = Epochs()
        self._streams: set[asyncio.Queue[pb.Event | None]] = set()
        sfu.set_listener(self)

    # --- SfuListener: fan the local events out to every connected signal node ---------

    def _emit(self, event: pb.Event) -> None:
        for queue in list(self._streams):
            if queue.qsize() >= EVENT_BACKLOG:
                log.warning("event-stream-overflow")
                self._streams.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(event)

    async def publication_connected(self, rid: str, mid: str) -> None:
        self._emit(pb.Event(publication_connected=pb.PublicationConnected(rid=rid, mid=mid)))

    async def publication_ended(self, rid: str, mid: str, reason: str) -> None:
        ended = pb.PublicationEnded(rid=rid, mid=mid, reason=reason)
        self._emit(pb.Event(publication_ended=ended))

    async def subscription_ended(self, rid: str, sid: str, reason: str) -> None:
        ended = pb.SubscriptionEnded(rid=rid, sid=sid, reason=reason)
        self._emit(pb.Event(subscription_ended=ended))

    async def recording_started(self, recording: Recording) -> None:
        self._emit(pb.Event(recording_started=wire.recording_to_pb(recording)))

    async def recording_stopped(self, recording: Recording) -> None:
        self._emit(pb.Event(recording_stopped=wire.recording_to_pb(recording)))

    # --- the calls ----------------------------------------------------------------------

    async def _call(
        self, room: pb.RoomRef, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            self.epochs.check(room)
            return await call()
        except CodedError as exc:
            context.set_trailing_metadata(((wire.ERROR_CODE_KEY, exc.code.value),))
            await context.abort(wire.status_for(exc.code), exc.reason)
            raise  # abort() raises; this line is for the type checker

    async def Publish(
        self, request: pb.PublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.PublishReply:
        try:
            minfo = json.loads(request.minfo_json) if request.minfo_json else {}
        except json.JSONDecodeError:
            minfo = None
        if not isinstance(minfo, dict):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "minfo_json is not an object")
            raise AssertionError("abort() raises")
        published = await self._call(
            request.room,
            context,
            lambda: self.sfu.publish(request.room.rid, request.uid, request.offer_sdp, minfo),
        )
        return pb.PublishReply(
            answer_sdp=published.answer_sdp,
            mid=published.mid,
            sfuid=published.sfuid,
            has_media=published.has_media,
        )

    async def Unpublish(
        self, request: pb.UnpublishRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self._call(
            request.room, context, lambda: self.sfu.unpublish(request.room.rid, request.mid)
        )
        return pb.Empty()

    async def Pause(self, request: pb.PauseRequest, context: grpc.aio.ServicerContext) -> pb.Empty:
        await self._call(
            request.room,
            context,
            lambda: self.sfu.pause(request.room.rid, request.mid, request.kind, request.paused),
        )
        return pb.Empty()

    async def Subscribe(
        self, request: pb.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.SubscribeReply:
        subscribed = await self._call(
            request.room,
            context,
            lambda: self.sfu.subscribe(
                request.room.rid, request.uid, request.mid, request.offer_sdp
            ),
        )
        return pb.SubscribeReply(answer_sdp=subscribed.answer_sdp, sid=subscribed.sid)

    async def Unsubscribe(
        self, request: pb.UnsubscribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self._call(
            request.room, context, lambda: self.sfu.unsubscribe(request.room.rid, request.sid)
        )
        return pb.Empty()

    async def ClosePeer(
        self, request: pb.ClosePeerRequest, context: grpc.aio.ServicerContext
    ) -> pb.Empty:
        await self._call(
            request.room, context, lambda: self.sfu.close_peer(request.room.rid, request.uid)
        )
        return pb.Empty()

    async def StartRecording(
        self, request: pb.RecordingRequest, context: grpc.aio.ServicerContext
    ) -> pb.Recording:
        recording = await self._call(
            request.room,
            context,
            lambda: self.sfu.start_recording(request.room.rid, request.mid),
        )
        return wire.recording_to_pb(recording)

    async def StopRecording(
        self, request: pb.RecordingRequest, context: grpc.aio.ServicerContext
    ) -> pb.Recording:
        recording = await self._call(
            request.room,
            context,
            lambda: self.sfu.stop_recording(request.room.rid, request.mid),
        )
        return wire.recording_to_pb(recording)

    async def Stats(
        self, request: pb.StatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatsReply:
        stats: dict[str, Any] = await self.sfu.stats()
        return pb.StatsReply(stats_json=json.dumps(stats, default=str))

    async def Events(
        self, request: pb.EventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Event]:
        queue: asyncio.Queue[pb.Event | None] = asyncio.Queue()
        self._streams.add(queue)
        log.info("events-subscribed", subscriber=request.subscriber or "-")
        try:
            await context.send_initial_metadata(())  # the subscriber knows it is connected
            while (event := await queue.get()) is not None:
                yield event
        finally:
            self._streams.discard(queue)
            log.info("events-unsubscribed", subscriber=request.subscriber or "-")

    async def close(self) -> None:
        for queue in list(self._streams):
            queue.put_nowait(None)
        self._streams.clear()


async def start_server(sfu: Sfu, address: str) -> tuple[grpc.aio.Server, SfuServicer, int]:
    """Serve `sfu` on `address` ("127.0.0.1:0" picks a port); returns the bound port too."""
    # Signal nodes ping every 2 s to find a dead node on an idle channel: allow it.
    server = grpc.aio.server(
        options=[
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 1000),
            ("grpc.http2.max_ping_strikes", 0),
        ]
    )
    servicer = SfuServicer(sfu)
    sfu_pb2_grpc.add_SfuServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    if not port:
        raise ValueError(f"cannot listen for gRPC on {address}")
    await server.start()
    return server, servicer, port
