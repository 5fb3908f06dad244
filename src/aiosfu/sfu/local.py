"""The embedded media plane: one aiortc peer connection per publish and per subscribe,
with RTP forwarded between them by Producers and Consumers, never decoded. Each room's
Router (sfu/router.py) holds which consumers and recorders each producer feeds.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs import is_rtx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from aiosfu.contract import ErrorCode, Published, Recording, SfuError, Subscribed
from aiosfu.log import get_logger
from aiosfu.record import RecordingManager
from aiosfu.sfu.aiortc_hooks import (
    ForwardingReceiver,
    ForwardingSender,
    NeverTrack,
    accept_rsa_dtls_servers,
    answer_as_dtls_server,
    cheap_peer_connections,
    connection_packet_io,
    connection_uplink,
    negotiate_transport_cc,
    receive_constrained_baseline_first,
)
from aiosfu.sfu.codec_match import check_publishable, subscriber_preferences
from aiosfu.sfu.consumer import Consumer, SimpleConsumer
from aiosfu.sfu.datachannel import DataRelay
from aiosfu.sfu.downstream import Downstream
from aiosfu.sfu.follow import Publication, PublisherCaps
from aiosfu.sfu.interface import SfuListener
from aiosfu.sfu.nat import announce_public
from aiosfu.sfu.opus import negotiate_opus
from aiosfu.sfu.producer import Producer
from aiosfu.sfu.router import Router
from aiosfu.sfu.uplink import keeps_remb

log = get_logger("aiosfu.sfu")

MEDIA_KINDS = ("audio", "video")


@dataclass(frozen=True)
class SfuSettings:
    sfuid: str = "sfu-1"
    cache_size: int = 512
    keyframe_request_interval: float = 0.5
    keyframe_retry_interval: float = 1.0
    datachannel_max_message_bytes: int = 16384
    datachannel_buffer_bytes: int = 1 << 20
    record_dir: str = "recordings"
    # With several subscribers, the publisher is never asked to go below this (bit/s):
    # one weak downlink must not pull every other subscriber down.
    publisher_cap_floor: int = 300_000
    # Private ICE address -> the public one announced for it (1:1 NAT, sfu/nat.py).
    nat_mapping: dict[str, str] = field(default_factory=dict)
    # Seconds a new transport has to connect; one that has not is removed, so an offer
    # whose peer never connects (no candidates, blocked UDP) holds nothing for long.
    connect_timeout: float = 15.0


@dataclass
class PublisherTransport:
    mid: str
    rid: str
    uid: str
    pc: RTCPeerConnection
    producers: list[Producer] = field(default_factory=list)
    closing: bool = False
    connected: bool = False
    deadline: asyncio.TimerHandle | None = None


@dataclass
class SubscriberTransport:
    sid: str
    rid: str
    uid: str
    mid: str
    pc: RTCPeerConnection
    downstream: Downstream = field(default_factory=Downstream)
    consumers: list[Consumer] = field(default_factory=list)
    closing: bool = False
    connected: bool = False
    deadline: asyncio.TimerHandle | None = None


def _new_id(prefix: str) -> str:
    return f"{prefix}#{secrets.token_hex(4)}"


def _parse_offer(sdp: str) -> SessionDescription:
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the text trips it on
        raise SfuError(ErrorCode.BAD_SDP, f"the offer SDP cannot be parsed: {exc}") from exc
    if not any(m.kind in (*MEDIA_KINDS, "application") for m in description.media):
        raise SfuError(ErrorCode.BAD_SDP, "the offer has no audio, video or application m-line")
    ice = description.media[0].ice if description.media else None
    if ice is None or not ice.usernameFragment:
        raise SfuError(ErrorCode.BAD_SDP, "the offer has no ICE credentials")
    return description


async def _close_refused(pc: RTCPeerConnection) -> None:
    """Close a connection whose offer aiortc refused: it may be half set up and fail to
    close too, and that second failure must not replace the refusal the peer gets."""
    try:
        await pc.close()
    except Exception as exc:
        log.info("refused-connection-close-failed", error=repr(exc))


def _limit_message_size(answer_sdp: str, limit: int) -> str:
    """Advertise the relay's message limit, so compliant peers refuse bigger sends locally."""
    return re.sub(r"a=max-message-size:\d+", f"a=max-message-size:{limit}", answer_sdp)


def _primary_codec(codecs: list[RTCRtpCodecParameters]) -> RTCRtpCodecParameters | None:
    return next((c for c in codecs if not is_rtx(c)), None)


class LocalSfu:
    def __init__(self, settings: SfuSettings | None = None) -> None:
        self.settings = settings or SfuSettings()
        negotiate_transport_cc()
        accept_rsa_dtls_servers()
        cheap_peer_connections()
        self.sfuid = self.settings.sfuid
        self.publishers: dict[str, PublisherTransport] = {}
        self.subscribers: dict[str, SubscriberTransport] = {}
        self.routers: dict[str, Router] = {}  # rid -> that room's Router
        self._listener: SfuListener | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.data = DataRelay(
            max_message_bytes=self.settings.datachannel_max_message_bytes,
            buffer_bytes=self.settings.datachannel_buffer_bytes,
        )
        self.caps = PublisherCaps(self._followed, floor=self.settings.publisher_cap_floor)
        self.recordings = RecordingManager(
            self.settings.record_dir,
            on_started=lambda r: self._tell_listener("recording_started", r),
            on_stopped=lambda r: self._tell_listener("recording_stopped", r),
        )

    def _followed(self) -> Iterator[Publication]:
        """Each publication with its subscribers' downlinks, for the publisher's ceiling."""
        for mid, publisher in self.publishers.items():
            yield Publication(
                key=mid,
                uplink=connection_uplink(publisher.pc),
                media_ssrcs=[
                    p.ssrc for p in publisher.producers if p.kind == "video" and p.ssrc is not None
                ],
                downstreams=[
                    s.downstream
                    for s in self.subscribers.values()
                    if s.mid == mid and not s.closing
                ],
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def set_listener(self, listener: SfuListener) -> None:
        self._listener = listener

    def _new_peer_connection(self) -> RTCPeerConnection:
        # Never let aiortc fall back to a public STUN server: media stays on our addresses.
        return RTCPeerConnection(RTCConfiguration(iceServers=[]))

    async def publish(self, rid: str, uid: str, offer_sdp: str, minfo: dict[str, Any]) -> Published:
        offer = _parse_offer(offer_sdp)
        for offered in offer.media:
            if offered.kind in MEDIA_KINDS:  # aiortc refuses any m-line it has no codec for
                check_publishable(offered.kind, offered.rtp.codecs)
        with_data = any(m.kind == "application" for m in offer.media)
        mid = _new_id(uid)
        pc = self._new_peer_connection()
        transport = PublisherTransport(mid=mid, rid=rid, uid=uid, pc=pc)
        pc.on("datachannel", lambda channel: self.data.attach(rid, uid, mid, channel))
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=keeps_remb(offer_sdp), type="offer")
            )
            answer_as_dtls_server(pc, offer)
            receive_constrained_baseline_first(pc)
            await pc.setLocalDescription(await pc.createAnswer())
        except SfuError:  # no UDP port left for ICE
            await _close_refused(pc)
            raise
        except Exception as exc:
            await _close_refused(pc)
            raise SfuError(ErrorCode.BAD_SDP, f"the offer was refused: {exc}") from exc
        answer = SessionDescription.parse(pc.localDescription.sdp)
        answered = {m.rtp.muxId: m for m in answer.media if m.kind in MEDIA_KINDS}
        for transceiver in pc.getTransceivers():
            media = answered.get(transceiver.mid or "")
            if media is None:
                continue
            codec = _primary_codec(media.rtp.codecs)
            if codec is None or media.direction not in ("recvonly", "sendrecv"):
                continue
            producer = Producer(
                transceiver.kind,
                codec,
                upstream=transceiver.receiver,  # type: ignore[arg-type]
                cache_size=self.settings.cache_size,
                keyframe_request_interval=self.settings.keyframe_request_interval,
            )
            ForwardingReceiver.adopt(
                transceiver.receiver,
                on_rtp=producer.on_rtp,
                on_sender_report=producer.on_sender_report,
            )
            transport.producers.append(producer)
        if not transport.producers and not with_data:
            await pc.close()
            raise SfuError(
                ErrorCode.CODEC_UNSUPPORTED, "no offered audio/video codec can be received"
            )
        self.publishers[mid] = transport
        router = self._router(rid)
        for producer in transport.producers:
            router.add_producer(producer)
        pc.on("connectionstatechange", lambda: self._on_publisher_state(transport))
        transport.deadline = self._connect_deadline(lambda: self._publisher_timed_out(transport))
        log.info(
            "publish",
            rid=rid,
            uid=uid,
            mid=mid,
            tracks=",".join(f"{p.kind}:{p.mime_type}" for p in transport.producers),
            data=with_data,
        )
        return Published(
            answer_sdp=self._answer_text(
                offer_sdp,
                _limit_message_size(
                    pc.localDescription.sdp, self.settings.datachannel_max_message_bytes
                ),
            ),
            mid=mid,
            sfuid=self.sfuid,
            has_media=bool(transport.producers),
        )

    async def subscribe(self, rid: str, uid: str, mid: str, offer_sdp: str) -> Subscribed:
        publisher = self.publishers.get(mid)
        if publisher is None or publisher.rid != rid:
            raise SfuError(ErrorCode.UNKNOWN_MID, f"no stream {mid!r} on this SFU")
        offer = _parse_offer(offer_sdp)
        sid = _new_id(uid)
        pc = self._new_peer_connection()
        transport = SubscriberTransport(sid=sid, rid=rid, uid=uid, mid=mid, pc=pc)
        router = self._router(rid)
        available = {k: deque(p for p in publisher.producers if p.kind == k) for k in MEDIA_KINDS}
        for media in offer.media:
            if media.kind not in MEDIA_KINDS or not available[media.kind]:
                continue
            producer = available[media.kind].popleft()
            try:
                preferences = subscriber_preferences(
                    media.kind, mid, producer.codec, media.rtp.codecs
                )
            except SfuError:
                await self._close_subscriber(transport)
                raise
            transceiver = pc.addTransceiver(NeverTrack(media.kind), direction="sendonly")
            transceiver.setCodecPreferences(preferences)
            sender = ForwardingSender.adopt(transceiver.sender, transport.downstream)
            consumer = SimpleConsumer(
                producer,
                sender,
                keyframe_retry_interval=self.settings.keyframe_retry_interval,
                downstream=transport.downstream,
            )
            sender.on_negotiated = consumer.activate
            sender.on_nack = consumer.on_nack
            sender.on_keyframe_request = consumer.on_keyframe_request
            router.attach(producer, consumer)  # it forwards once its sender negotiated
            transport.consumers.append(consumer)
        if not transport.consumers:
            await pc.close()
            raise SfuError(
                ErrorCode.BAD_SDP, f"the offer asks for no kind of media stream {mid!r} has"
            )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            answer_as_dtls_server(pc, offer)
            await pc.setLocalDescription(await pc.createAnswer())
        except SfuError:  # no UDP port left for ICE
            await self._close_subscriber(transport)
            raise
        except Exception as exc:
            await self._close_subscriber(transport)
            code = ErrorCode.CODEC_UNSUPPORTED if "parameters" in str(exc) else ErrorCode.BAD_SDP
            raise SfuError(code, f"the offer was refused: {exc}") from exc
        self.subscribers[sid] = transport
        self.caps.start()
        pc.on("connectionstatechange", lambda: self._on_subscriber_state(transport))
        transport.deadline = self._connect_deadline(lambda: self._subscriber_timed_out(transport))
        log.info("subscribe", rid=rid, uid=uid, mid=mid, sid=sid)
        return Subscribed(answer_sdp=self._answer_text(offer_sdp, pc.localDescription.sdp), sid=sid)

    def _answer_text(self, offer_sdp: str, answer_sdp: str) -> str:
        """What aiortc wrote, with the offer's Opus parameters kept and the addresses
        peers must use."""
        return announce_public(negotiate_opus(offer_sdp, answer_sdp), self.settings.nat_mapping)

    async def unpublish(self, rid: str, mid: str) -> None:
        transport = self.publishers.pop(mid, None)
        if transport is None:
            return
        await self.recordings.stop(mid, "unpublished")
        for sid in [s.sid for s in self.subscribers.values() if s.mid == mid]:
            await self._close_subscriber(self.subscribers.pop(sid))
        transport.closing = True
        if transport.deadline is not None:
            transport.deadline.cancel()
        router = self.routers.get(rid)
        for producer in transport.producers:
            if router is not None:
                router.close_producer(producer)
            else:
                producer.close()
        if router is not None and router.empty:
            del self.routers[rid]
        self.data.close_mid(mid)
        await transport.pc.close()
        log.info("unpublish", rid=rid, mid=mid)

    async def unsubscribe(self, rid: str, sid: str) -> None:
        transport = self.subscribers.pop(sid, None)
        if transport is not None:
            await self._close_subscriber(transport)
            log.info("unsubscribe", rid=rid, sid=sid)

    async def close_peer(self, rid: str, uid: str) -> None:
        for sid in [s.sid for s in self.subscribers.values() if s.rid == rid and s.uid == uid]:
            await self.unsubscribe(rid, sid)
        for mid in [p.mid for p in self.publishers.values() if p.rid == rid and p.uid == uid]:
            await self.unpublish(rid, mid)

    async def pause(self, rid: str, mid: str, kind: str, paused: bool) -> None:
        publisher = self.publishers.get(mid)
        if publisher is None or publisher.rid != rid:
            raise SfuError(ErrorCode.UNKNOWN_MID, f"no stream {mid!r} on this SFU")
        producers = [p for p in publisher.producers if p.kind == kind]
        if not producers:
            raise SfuError(ErrorCode.UNKNOWN_KIND, f"stream {mid!r} has no {kind} track")
        for producer in producers:
            producer.paused = paused
            if not paused:  # subscribers' decoders need a fresh start
                await producer.request_keyframe()
        log.info("pause", rid=rid, mid=mid, kind=kind, paused=paused)

    async def close(self) -> None:
        self.caps.stop()
        await self.recordings.close()
        for sid in list(self.subscribers):
            await self.unsubscribe(self.subscribers[sid].rid, sid)
        for mid in list(self.publishers):
            await self.unpublish(self.publishers[mid].rid, mid)

    async def start_recording(self, rid: str, mid: str) -> Recording:
        publisher = self.publishers.get(mid)
        if publisher is None or publisher.rid != rid:
            raise SfuError(ErrorCode.UNKNOWN_MID, f"no stream {mid!r} on this SFU")
        router = self._router(rid)
        tracks = [router.recordable(p) for p in publisher.producers]
        return await self.recordings.start(rid, publisher.uid, mid, tracks)

    async def stop_recording(self, rid: str, mid: str) -> Recording:
        publisher = self.publishers.get(mid)
        if publisher is None or publisher.rid != rid:
            raise SfuError(ErrorCode.UNKNOWN_MID, f"no stream {mid!r} on this SFU")
        recording = await self.recordings.stop(mid, "requested")
        if recording is None:
            raise SfuError(ErrorCode.NOT_RECORDING, f"stream {mid!r} is not being recorded")
        return recording

    def _tell_listener(self, event: str, recording: Recording) -> None:
        if self._listener is not None:
            self._spawn(getattr(self._listener, event)(recording))

    async def _close_subscriber(self, transport: SubscriberTransport) -> None:
        transport.closing = True
        if not any(not s.closing for s in self.subscribers.values()):
            self.caps.stop()  # nobody's downlink to follow: no task left behind
        if transport.deadline is not None:
            transport.deadline.cancel()
        router = self.routers.get(transport.rid)
        for consumer in transport.consumers:
            if router is not None:
                router.remove_sink(consumer)
            consumer.close()
        if router is not None and router.empty:
            del self.routers[transport.rid]
        await transport.pc.close()

    def _router(self, rid: str) -> Router:
        router = self.routers.get(rid)
        if router is None:
            router = self.routers[rid] = Router(rid)
        return router

    def _connect_deadline(self, expire: Any) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(self.settings.connect_timeout, expire)

    def _on_publisher_state(self, transport: PublisherTransport) -> None:
        state = transport.pc.connectionState
        log.info("publisher-state", rid=transport.rid, mid=transport.mid, state=state)
        if state == "connected" and not transport.connected and not transport.closing:
            transport.connected = True
            if transport.deadline is not None:
                transport.deadline.cancel()
            if self._listener is not None:
                self._spawn(self._listener.publication_connected(transport.rid, transport.mid))
        if state in ("failed", "closed") and not transport.closing:
            transport.closing = True
            self._spawn(self._publication_ended(transport, f"the media transport {state}"))

    def _on_subscriber_state(self, transport: SubscriberTransport) -> None:
        state = transport.pc.connectionState
        log.info("subscriber-state", rid=transport.rid, sid=transport.sid, state=state)
        if state == "connected" and not transport.connected:
            transport.connected = True
            if transport.deadline is not None:
                transport.deadline.cancel()
        if state in ("failed", "closed") and not transport.closing:
            transport.closing = True
            self._spawn(self._subscription_ended(transport, f"the media transport {state}"))

    def _timeout_reason(self, state: str) -> str:
        return (
            f"the media transport did not connect within {self.settings.connect_timeout:g} s"
            f" (ICE/DTLS state: {state})"
        )

    def _publisher_timed_out(self, transport: PublisherTransport) -> None:
        if transport.connected or transport.closing:
            return
        transport.closing = True
        state = transport.pc.connectionState
        log.info("publisher-connect-timeout", rid=transport.rid, mid=transport.mid, state=state)
        self._spawn(self._publication_ended(transport, self._timeout_reason(state)))

    def _subscriber_timed_out(self, transport: SubscriberTransport) -> None:
        if transport.connected or transport.closing:
            return
        transport.closing = True
        state = transport.pc.connectionState
        log.info("subscriber-connect-timeout", rid=transport.rid, sid=transport.sid, state=state)
        self._spawn(self._subscription_ended(transport, self._timeout_reason(state)))

    async def _publication_ended(self, transport: PublisherTransport, reason: str) -> None:
        if self._listener is not None:
            await self._listener.publication_ended(transport.rid, transport.mid, reason)
        await self.unpublish(transport.rid, transport.mid)

    async def _subscription_ended(self, transport: SubscriberTransport, reason: str) -> None:
        if self._listener is not None:
            await self._listener.subscription_ended(transport.rid, transport.sid, reason)
        await self.unsubscribe(transport.rid, transport.sid)

    async def stats(self) -> dict[str, Any]:
        return {
            "sfuid": self.sfuid,
            "publications": {
                mid: {
                    "rid": t.rid,
                    "uid": t.uid,
                    "state": t.pc.connectionState,
                    "producers": [p.stats() for p in t.producers],
                    "uplink": (u.stats() if (u := connection_uplink(t.pc)) else None),
                    "packetIO": (io.stats() if (io := connection_packet_io(t.pc)) else None),
                }
                for mid, t in self.publishers.items()
            },
            "subscriptions": {
                sid: {
                    "rid": t.rid,
                    "uid": t.uid,
                    "mid": t.mid,
                    "state": t.pc.connectionState,
                    "consumers": [c.stats() for c in t.consumers],
                    "downstream": t.downstream.stats(),
                    "packetIO": (io.stats() if (io := connection_packet_io(t.pc)) else None),
                }
                for sid, t in self.subscribers.items()
            },
            "decoding": any(
                isinstance(t.receiver, ForwardingReceiver) and t.receiver.decoding
                for p in self.publishers.values()
                for t in p.pc.getTransceivers()
            ),
            "threads": sorted(t.name for t in threading.enumerate()),
            "datachannels": self.data.stats(),
            "recordings": self.recordings.stats(),
        }
