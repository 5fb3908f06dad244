"""A room participant: one signaling connection, one peer connection per publish and
per subscribe, as the protocol prescribes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from aiosfu.client.datachannel import RoomChannel
from aiosfu.client.signaling import SignalingClient
from aiosfu.sfu.ice import drop_unverified_datagrams, use_host_addresses


@dataclass
class Publication:
    rid: str
    mid: str
    sfuid: str
    pc: RTCPeerConnection
    channels: dict[str, RoomChannel] = field(default_factory=dict)  # by label
    # What it was published with, to publish it again (aiosfu.client.recovery).
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    minfo: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subscription:
    rid: str
    mid: str
    sid: str
    sfuid: str
    pc: RTCPeerConnection
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    answered_at: float = 0.0
    kinds: tuple[str, ...] = ("audio", "video")
    uid: str = ""  # the publisher, when known (aiosfu.client.recovery)


class Client:
    def __init__(
        self,
        signaling: SignalingClient,
        uid: str,
        ice_servers: Sequence[RTCIceServer] = (),
        keepalive_interval: float = 10.0,
    ) -> None:
        self.signaling = signaling
        self.uid = uid
        self.ice_servers = list(ice_servers)
        self.keepalive_interval = keepalive_interval
        self.rooms: set[str] = set()
        self.publications: dict[str, Publication] = {}
        self.subscriptions: dict[str, Subscription] = {}
        # Things built on this client that hold their own peer connections (aiosfu.client.p2p).
        self.attached: list[Any] = []
        # Set by aiosfu.client.recovery: published tracks go out through it.
        self.relay: MediaRelay | None = None
        self._keepalive = asyncio.ensure_future(self._keep_alive())

    @classmethod
    async def connect(
        cls,
        url: str,
        uid: str,
        *,
        token: str | None = None,
        ice_servers: Sequence[RTCIceServer] = (),
        ice_ips: Sequence[str] | None = None,
        keepalive_interval: float = 10.0,
    ) -> Client:
        """Connect to `ws://host:port/ws`. `ice_ips` pins this process's ICE addresses."""
        use_host_addresses(ice_ips)
        drop_unverified_datagrams()
        signaling = await SignalingClient.connect(url, uid, token)
        return cls(signaling, uid, ice_servers, keepalive_interval)

    def _peer_connection(self) -> RTCPeerConnection:
        # Explicit ICE servers: aiortc would otherwise reach out to a public STUN server.
        return RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))

    async def request(self, method: str, data: dict[str, Any]) -> dict[str, Any]:
        return await self.signaling.request(method, data)

    async def join(self, rid: str, **extra: Any) -> dict[str, Any]:
        result = await self.request("join", {"rid": rid, **extra})
        self.rooms.add(rid)
        return result

    async def leave(self, rid: str) -> None:
        await self.request("leave", {"rid": rid})
        self.rooms.discard(rid)
        for key in [k for k, p in self.publications.items() if p.rid == rid]:
            await self.publications.pop(key).pc.close()
        for key in [k for k, s in self.subscriptions.items() if s.rid == rid]:
            await self.subscriptions.pop(key).pc.close()

    async def publish(
        self,
        rid: str,
        tracks: Sequence[MediaStreamTrack],
        minfo: dict[str, Any] | None = None,
        *,
        data_channels: Sequence[str] = (),
        codecs: Mapping[str, str] | None = None,
    ) -> Publication:
        """Publish `tracks`; `data_channels` labels open channels the SFU relays to the
        other peers of the room with a channel of the same label (tracks may then be empty).
        `codecs` offers only that codec for a kind (`{"video": "video/H264"}`), for tracks
        that yield packets already encoded with it."""
        pc = self._peer_connection()
        for track in tracks:
            # aiortc stops a track when its sender ends: through a relay, the source
            # outlives the peer connection and can be published again.
            sent = self.relay.subscribe(track, buffered=False) if self.relay else track
            transceiver = pc.addTransceiver(sent, direction="sendonly")
            wanted = (codecs or {}).get(track.kind)
            if wanted:
                transceiver.setCodecPreferences(
                    [
                        codec
                        for codec in RTCRtpSender.getCapabilities(track.kind).codecs
                        if codec.mimeType.lower() in (wanted.lower(), f"{track.kind}/rtx")
                    ]
                )
        channels = {label: RoomChannel(pc.createDataChannel(label)) for label in data_channels}
        await pc.setLocalDescription(await pc.createOffer())
        if minfo is None:
            kinds = {t.kind for t in tracks}
            minfo = {
                "audio": "audio" in kinds,
                "video": "video" in kinds,
                "audiotype": 0,
                "videotype": 0,
            }
            if channels:
                minfo["data"] = True
        try:
            result = await self.request(
                "publish",
                {
                    "rid": rid,
                    "jsep": {"type": "offer", "sdp": pc.localDescription.sdp},
                    "minfo": minfo,
                },
            )
            await pc.setRemoteDescription(RTCSessionDescription(**result["jsep"]))
        except BaseException:
            await pc.close()
            raise
        publication = Publication(
            rid=rid,
            mid=result["mid"],
            sfuid=result["sfuid"],
            pc=pc,
            channels=channels,
            tracks=list(tracks),
            minfo=minfo,
        )
        self.publications[publication.mid] = publication
        return publication

    async def unpublish(self, publication: Publication) -> None:
        self.publications.pop(publication.mid, None)
        try:
            await self.request(
                "unpublish",
                {"rid": publication.rid, "mid": publication.mid, "sfuid": publication.sfuid},
            )
        finally:
            await publication.pc.close()

    async def subscribe(
        self,
        rid: str,
        mid: str,
        sfuid: str = "",
        kinds: Sequence[str] = ("audio", "video"),
    ) -> Subscription:
        pc = self._peer_connection()
        tracks: dict[str, MediaStreamTrack] = {}
        pc.on("track", lambda track: tracks.__setitem__(track.kind, track))
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        try:
            result = await self.request(
                "subscribe",
                {
                    "rid": rid,
                    "mid": mid,
                    "sfuid": sfuid,
                    "jsep": {"type": "offer", "sdp": pc.localDescription.sdp},
                },
            )
            answered_at = asyncio.get_running_loop().time()
            await pc.setRemoteDescription(RTCSessionDescription(**result["jsep"]))
        except BaseException:
            await pc.close()
            raise
        subscription = Subscription(
            rid=rid,
            mid=mid,
            sid=result["sid"],
            sfuid=sfuid,
            pc=pc,
            tracks=tracks,
            answered_at=answered_at,
            kinds=tuple(kinds),
        )
        self.subscriptions[subscription.sid] = subscription
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.pop(subscription.sid, None)
        try:
            await self.request(
                "unsubscribe",
                {
                    "rid": subscription.rid,
                    "mid": subscription.mid,
                    "sid": subscription.sid,
                    "sfuid": subscription.sfuid,
                },
            )
        finally:
            await subscription.pc.close()

    async def broadcast(self, rid: str, data: Any) -> None:
        await self.request("broadcast", {"rid": rid, "data": data})

    async def record(self, rid: str, mid: str) -> dict[str, Any]:
        """Start recording stream `mid` on the server; the response names the file."""
        return await self.request("record", {"rid": rid, "mid": mid})

    async def stop_record(self, rid: str, mid: str) -> dict[str, Any]:
        """Stop it; the response describes the closed file (duration, size)."""
        return await self.request("stop-record", {"rid": rid, "mid": mid})

    # --- the classroom stage (docs/security.md): the server checks the grants ---------

    async def update_grants(self, rid: str, uid: str, **grants: Any) -> dict[str, Any]:
        """Change what `uid` may do, e.g. `canPublish=True` brings a student on stage and
        `canPublish=False` takes them off (their streams end at once). Needs roomAdmin."""
        return await self.request("update-grants", {"rid": rid, "uid": uid, "grants": grants})

    async def mute(self, rid: str, mid: str, kind: str, muted: bool = True) -> None:
        """Stop (or resume) forwarding the audio or video of stream `mid`."""
        await self.request("mute", {"rid": rid, "mid": mid, "kind": kind, "muted": muted})

    async def remove(self, rid: str, uid: str) -> None:
        """Remove `uid` from the room for as long as it lasts. Needs roomAdmin."""
        await self.request("remove", {"rid": rid, "uid": uid})

    async def raise_hand(self, rid: str) -> None:
        await self.request("raise-hand", {"rid": rid})

    async def lower_hand(self, rid: str, uid: str | None = None) -> None:
        """Lower our hand, or (roomAdmin) someone else's."""
        await self.request("lower-hand", {"rid": rid, **({"uid": uid} if uid else {})})

    async def resume(self, url: str, *, token: str | None = None) -> dict[str, list[str]]:
        """Carry on through another signal node of a cluster after this one's was lost
        (docs/cluster.md, "Resume"): a new signaling connection with the same uid joins our
        rooms again, and the server adopts our publications, still live on their SFU node,
        within its grace period. Returns the resumed mids per room; a publication not
        among them has ended and is dropped. Subscriptions are made again (the new node
        does not know their ids), in place, so code holding them goes on with them."""
        old = self.signaling
        fresh = await SignalingClient.connect(url, self.uid, token)
        fresh.take_handlers(old)
        self.signaling = fresh
        with contextlib.suppress(Exception):
            await old.close()
        resumed: dict[str, list[str]] = {}
        for rid in sorted(self.rooms):
            resumed[rid] = list((await self.join(rid)).get("resumed", []))
            for mid, publication in list(self.publications.items()):
                if publication.rid == rid and mid not in resumed[rid]:
                    await self.publications.pop(mid).pc.close()
            for sid, subscription in list(self.subscriptions.items()):
                if subscription.rid == rid:
                    del self.subscriptions[sid]
                    await self._subscribe_again(subscription)
        return resumed

    async def _subscribe_again(self, subscription: Subscription) -> None:
        old_pc = subscription.pc
        fresh = await self.subscribe(
            subscription.rid, subscription.mid, subscription.sfuid, subscription.kinds
        )
        self.subscriptions.pop(fresh.sid, None)
        subscription.sid, subscription.pc = fresh.sid, fresh.pc
        subscription.tracks, subscription.answered_at = fresh.tracks, fresh.answered_at
        self.subscriptions[subscription.sid] = subscription
        await old_pc.close()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.keepalive_interval)
            for rid in list(self.rooms):
                with contextlib.suppress(Exception):
                    await self.request("keepalive", {"rid": rid})

    async def close(self) -> None:
        """Close every peer connection and the socket (the server cleans up after us)."""
        self._keepalive.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keepalive
        for publication in self.publications.values():
            await publication.pc.close()
        for subscription in self.subscriptions.values():
            await subscription.pc.close()
        for attached in self.attached:
            await attached.close()
        self.publications.clear()
        self.subscriptions.clear()
        await self.signaling.close()
