"""Baseline 1: how Python users relay WebRTC today, with aiortc's `MediaRelay`.

Each published track is decoded once, and every subscriber gets its own encoder fed
from `MediaRelay.subscribe()` (aiortc's documented way to share a track between peer
connections). It speaks just enough of our signaling protocol (join, publish, subscribe,
keepalive, leave over the same WebSocket envelope) for `aiosfu.client.Client`, and so the
same load generator, to drive it. Run as `python -m bench.relay_server --port N`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
from typing import Any

from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaBlackhole, MediaRelay

from aiosfu.sfu.ice import drop_unverified_datagrams, use_host_addresses


class RelayServer:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.tracks: dict[str, list[MediaStreamTrack]] = {}
        self.pcs: dict[str, list[RTCPeerConnection]] = {}
        self.ids = itertools.count(1)

    async def publish(self, uid: str, data: dict[str, Any]) -> dict[str, Any]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        mid = f"{uid}#{next(self.ids)}"
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        await pc.setRemoteDescription(RTCSessionDescription(**data["jsep"]))
        await pc.setLocalDescription(await pc.createAnswer())
        self.tracks[mid] = tracks
        self.pcs.setdefault(uid, []).append(pc)
        # A track nobody subscribes to yet still has to be drained, or the decoder stalls.
        sink = MediaBlackhole()
        for track in tracks:
            sink.addTrack(self.relay.subscribe(track, buffered=False))
        await sink.start()
        return {"jsep": {"type": "answer", "sdp": pc.localDescription.sdp}, "mid": mid, "sfuid": ""}

    async def subscribe(self, uid: str, data: dict[str, Any]) -> dict[str, Any]:
        tracks = self.tracks.get(data["mid"])
        if tracks is None:
            raise KeyError(data["mid"])
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await pc.setRemoteDescription(RTCSessionDescription(**data["jsep"]))
        for track in tracks:
            pc.addTrack(self.relay.subscribe(track))
        await pc.setLocalDescription(await pc.createAnswer())
        self.pcs.setdefault(uid, []).append(pc)
        sid = f"s{next(self.ids)}"
        return {"jsep": {"type": "answer", "sdp": pc.localDescription.sdp}, "sid": sid}

    async def close_peer(self, uid: str) -> None:
        for pc in self.pcs.pop(uid, []):
            await pc.close()

    async def handle(self, uid: str, frame: dict[str, Any]) -> dict[str, Any]:
        method, data = frame.get("method"), frame.get("data") or {}
        try:
            if method == "publish":
                result = await self.publish(uid, data)
            elif method == "subscribe":
                result = await self.subscribe(uid, data)
            elif method in ("join", "keepalive", "leave", "unsubscribe", "unpublish"):
                result = {"pubs": [], "users": []} if method == "join" else {}
            else:
                raise ValueError(f"unknown method {method!r}")
        except Exception as exc:
            return {
                "response": True,
                "id": frame.get("id"),
                "ok": False,
                "errorCode": "relay-error",
                "errorReason": str(exc),
            }
        return {"response": True, "id": frame.get("id"), "ok": True, "data": result}

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        uid = request.query.get("peer", "")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    response = await self.handle(uid, json.loads(message.data))
                    await ws.send_str(json.dumps(response))
        finally:
            await self.close_peer(uid)
        return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    use_host_addresses([args.host])
    drop_unverified_datagrams()
    server = RelayServer()
    app = web.Application()
    app.router.add_get("/ws", server.websocket)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
