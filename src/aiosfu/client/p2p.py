"""Direct (peer-to-peer) connections negotiated through the server's relay.

The server only carries `offer` / `answer` / `candidate` between two peers (docs/p2p.md);
media and data flow between the peers themselves. `P2P` keeps one `PeerLink` (one
RTCPeerConnection) per remote peer, either outside rooms (seed 001: an "answer" peer
waits under its id, an "offer" peer connects to that id) or inside a p2p room, where
`Mesh` applies the offerer rule that rules out glare: peers already in the room offer to
each newcomer (seed 003's new-peer), the newcomer only answers.

aiortc gathers its candidates before it finishes `setLocalDescription`, so our SDP already
carries them and we send no trickle candidates; candidates a browser trickles to us are
added as they come, in order, after the description they belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.sdp import candidate_from_sdp

from aiosfu.client.client import Client
from aiosfu.log import get_logger

log = get_logger("aiosfu.client.p2p")

Notification = dict[str, Any]


@dataclass(eq=False)
class PeerLink:
    """One direct connection to one remote peer."""

    remote: str
    rid: str | None
    pc: RTCPeerConnection
    offerer: bool
    channels: dict[str, RTCDataChannel] = field(default_factory=dict)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    # Every message of every channel, as (label, message), in arrival order.
    messages: asyncio.Queue[tuple[str, str | bytes]] = field(default_factory=asyncio.Queue)
    channel_open: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[tuple[str, Notification]] = field(default_factory=asyncio.Queue)
    pending_candidates: list[RTCIceCandidate | None] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    media_added: bool = False
    closed: bool = False

    def adopt_channel(self, channel: RTCDataChannel) -> None:
        self.channels[channel.label] = channel
        channel.on("message", lambda m: self.messages.put_nowait((channel.label, m)))
        if channel.readyState == "open":
            self.channel_open.set()
        channel.on("open", self.channel_open.set)

    async def wait_channel(self, label: str = "data", timeout: float = 15.0) -> RTCDataChannel:
        async with asyncio.timeout(timeout):
            while True:
                channel = self.channels.get(label)
                if channel is not None and channel.readyState == "open":
                    return channel
                self.channel_open.clear()
                await self.channel_open.wait()

    async def recv(self, timeout: float = 10.0) -> tuple[str, str | bytes]:
        async with asyncio.timeout(timeout):
            return await self.messages.get()

    async def close(self) -> None:
        self.closed = True
        if self.worker is not None and self.worker is not asyncio.current_task():
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        await self.pc.close()


def parse_candidate(init: dict[str, Any] | None) -> RTCIceCandidate | None:
    """A browser's RTCIceCandidateInit as aiortc wants it; None ends the candidates."""
    if init is None or not init.get("candidate"):
        return None
    text = init["candidate"]
    candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


class P2P:
    def __init__(
        self,
        client: Client,
        rid: str | None = None,
        *,
        tracks: Sequence[MediaStreamTrack] = (),
        receive: Sequence[str] = (),
        data_channel: str | None = "data",
        on_link: Callable[[PeerLink], None] | None = None,
    ) -> None:
        """`tracks` go to every peer; `receive` adds receive-only slots for kinds we do not
        send; the offerer opens `data_channel`; `on_link` sees each new link first."""
        self.client = client
        self.rid = rid
        self.tracks = list(tracks)
        self.receive = list(receive)
        self.data_channel = data_channel
        self.on_link = on_link
        self.links: dict[str, PeerLink] = {}
        self.ignored = 0  # relayed messages for no connection of ours
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        for method in ("offer", "answer", "candidate"):
            client.signaling.on(method, functools.partial(self._dispatch, method))
        client.attached.append(self)  # closed with the client

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- links ----------------------------------------------------------------------------

    def _new_link(self, remote: str, offerer: bool) -> PeerLink:
        # Explicit ICE servers: aiortc would otherwise reach out to a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.client.ice_servers))
        link = PeerLink(remote=remote, rid=self.rid, pc=pc, offerer=offerer)
        old = self.links.get(remote)
        if old is not None:
            self._spawn(old.close())
        self.links[remote] = link
        link.pc.on("track", lambda track: link.tracks.__setitem__(track.kind, track))
        link.pc.on("datachannel", link.adopt_channel)
        link.pc.on("connectionstatechange", lambda: self._state_changed(link))
        link.worker = asyncio.ensure_future(self._work(link))
        if self.on_link is not None:
            self.on_link(link)
        return link

    def _state_changed(self, link: PeerLink) -> None:
        state = link.pc.connectionState
        log.info("p2p-state", remote=link.remote, rid=link.rid or "", state=state)
        if state in ("failed", "closed") and self.links.get(link.remote) is link:
            del self.links[link.remote]
            if not link.closed:
                self._spawn(link.close())

    def _add_local_media(self, link: PeerLink) -> None:
        """Our tracks on the link; as offerer, also receive-only slots for `receive`
        (an answerer's tracks take the slots the offer made, its answer can add none)."""
        link.media_added = True
        for track in self.tracks:
            link.pc.addTrack(track)
        sent = {t.kind for t in self.tracks}
        for kind in self.receive if link.offerer else ():
            if kind not in sent:
                link.pc.addTransceiver(kind, direction="recvonly")

    def _relay_data(self, remote: str, body: dict[str, Any]) -> dict[str, Any]:
        data = {"to": remote, **body}
        if self.rid is not None:
            data["rid"] = self.rid
        return data

    async def connect(self, remote: str) -> PeerLink:
        """Offer a connection to `remote`; returns once the offer is delivered."""
        link = self._new_link(remote, offerer=True)
        pc = link.pc
        self._add_local_media(link)
        if self.data_channel:
            link.adopt_channel(pc.createDataChannel(self.data_channel))
        try:
            await pc.setLocalDescription(await pc.createOffer())
            jsep = {"type": "offer", "sdp": pc.localDescription.sdp}
            await self.client.request("offer", self._relay_data(remote, {"jsep": jsep}))
        except BaseException:
            if self.links.get(remote) is link:
                del self.links[remote]
            await link.close()
            raise
        log.info("p2p-offer", remote=remote, rid=self.rid or "")
        return link

    async def close(self) -> None:
        self.closed = True
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- relayed messages ---------------------------------------------------------------

    def _dispatch(self, method: str, data: Notification) -> None:
        """Called in notification order: queue each message on its link, in order."""
        if self.closed or data.get("rid") != self.rid or not isinstance(data.get("from"), str):
            return
        remote = data["from"]
        if method == "offer":
            link = self.links.get(remote)
            if link is None or link.closed:
                link = self._new_link(remote, offerer=False)
            # else a renegotiation (the remote added a track): answered on the same link
        else:
            link = self.links.get(remote)
            if link is None:
                self.ignored += 1
                log.info("p2p-ignored", method=method, remote=remote)
                return
        link.inbox.put_nowait((method, data))

    async def _work(self, link: PeerLink) -> None:
        while True:
            method, data = await link.inbox.get()
            try:
                if method == "offer":
                    await self._answer(link, data)
                elif method == "answer":
                    await link.pc.setRemoteDescription(RTCSessionDescription(**data["jsep"]))
                    await self._flush_candidates(link)
                else:
                    link.pending_candidates.append(parse_candidate(data.get("candidate")))
                    if link.pc.remoteDescription is not None:
                        await self._flush_candidates(link)
            except Exception as exc:  # one bad message must not stop the link's inbox
                self.ignored += 1
                log.info("p2p-message-failed", method=method, remote=link.remote, error=str(exc))

    async def _answer(self, link: PeerLink, data: Notification) -> None:
        pc = link.pc
        try:
            await pc.setRemoteDescription(RTCSessionDescription(**data["jsep"]))
        except Exception:
            if pc.remoteDescription is None:
                raise
            # Not a renegotiation aiortc can follow (the remote started over, new ICE
            # and DTLS): a fresh connection replaces this one.
            log.info("p2p-restart", remote=link.remote, rid=self.rid or "")
            fresh = self._new_link(link.remote, offerer=False)
            fresh.inbox.put_nowait(("offer", data))
            return
        if not link.media_added:
            self._add_local_media(link)
        await pc.setLocalDescription(await pc.createAnswer())
        jsep = {"type": "answer", "sdp": pc.localDescription.sdp}
        await self.client.request("answer", self._relay_data(link.remote, {"jsep": jsep}))
        log.info("p2p-answer", remote=link.remote, rid=self.rid or "")
        await self._flush_candidates(link)

    async def _flush_candidates(self, link: PeerLink) -> None:
        pending, link.pending_candidates = link.pending_candidates, []
        for candidate in pending:
            await link.pc.addIceCandidate(candidate)


class Mesh(P2P):
    """A p2p room: existing members offer to each newcomer; links close on peer-leave."""

    def __init__(self, client: Client, rid: str, **options: Any) -> None:
        super().__init__(client, rid, **options)
        client.signaling.on("peer-join", self._peer_joined)
        client.signaling.on("peer-leave", self._peer_left)

    async def join(self, capacity: int | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {"mode": "p2p"}
        if capacity is not None:
            extra["capacity"] = capacity
        return await self.client.join(self.rid or "", **extra)

    def _peer_joined(self, data: Notification) -> None:
        if not self.closed and data.get("rid") == self.rid and data.get("uid") != self.client.uid:
            self._spawn(self._connect_quietly(data["uid"]))

    async def _connect_quietly(self, remote: str) -> None:
        try:
            await self.connect(remote)
        except Exception as exc:  # the newcomer may already be gone again
            log.info("p2p-connect-failed", remote=remote, error=str(exc))

    def _peer_left(self, data: Notification) -> None:
        if data.get("rid") == self.rid and (link := self.links.pop(data.get("uid", ""), None)):
            self._spawn(link.close())

    async def leave(self) -> None:
        await self.close()
        await self.client.leave(self.rid or "")
