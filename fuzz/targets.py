"""Fuzz targets: every parser that takes bytes or text from a peer.

Each target takes one input and raises only when it found a defect: an exception that
is not the documented refusal, or a response coded `internal-error`. They run under
atheris (`python -m fuzz`, coverage-guided) and, briefly, in the test suite.

- `signaling`: frames into the real `SignalService` (every method model and handler, the
  relay and the stage), with a small in-process media plane so handlers run to the end.
- `sdp`: offers through the pre-check, then (when it lets them through) the real
  `LocalSfu.publish` and `subscribe`, which hand them to aiortc.
- `media`: RTP and RTCP parsing and everything the SFU and the recorder read from a
  packet (keyframe detection, VP8/H264/Opus headers, the header rewrite), and STUN
  parsing, which may raise only what `sfu/ice.py` drops.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import aioice.stun
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket

from aiosfu.record import bitstream
from aiosfu.room import Rooms
from aiosfu.sfu import codecs, ice
from aiosfu.sfu.aiortc_hooks import parse_rtp
from aiosfu.sfu.interface import Published, Recording, SfuError, Subscribed
from aiosfu.sfu.local import LocalSfu, _parse_offer
from aiosfu.sfu.rewrite import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    OutputParams,
    RtpRewriter,
)
from aiosfu.signal.access import AccessControl
from aiosfu.signal.auth import Authenticator, Identity
from aiosfu.signal.grants import for_role
from aiosfu.signal.protocol import ProtocolError
from aiosfu.signal.relay import P2PRelay
from aiosfu.signal.sdp_guard import check_offer
from aiosfu.signal.service import SignalService
from aiosfu.signal.session import PeerSession
from aiosfu.signal.stage import Stage

_loop = asyncio.new_event_loop()
asyncio.set_event_loop(_loop)


class Defect(AssertionError):
    """What a fuzz target raises when it found a bug."""


# --- signaling ---------------------------------------------------------------------


class _Ws:
    closed = False

    async def send_str(self, text: str) -> None:
        pass

    async def close(self, code: int = 1000, message: bytes = b"") -> None:
        pass


class _MediaPlane:
    """The `Sfu` contract with nothing behind it: handlers run to the end."""

    sfuid = "sfu-1"

    def __init__(self) -> None:
        self.count = 0
        self.mids: set[str] = set()

    def set_listener(self, listener: object) -> None:
        pass

    async def publish(self, rid: str, uid: str, offer_sdp: str, minfo: dict[str, Any]) -> Published:
        self.count += 1
        mid = f"{uid}#{self.count}"
        self.mids.add(mid)
        return Published(answer_sdp="v=0\r\n", mid=mid, sfuid=self.sfuid)

    async def unpublish(self, rid: str, mid: str) -> None:
        self.mids.discard(mid)

    async def subscribe(self, rid: str, uid: str, mid: str, offer_sdp: str) -> Subscribed:
        self.count += 1
        return Subscribed(answer_sdp="v=0\r\n", sid=f"{uid}#s{self.count}")

    async def unsubscribe(self, rid: str, sid: str) -> None:
        pass

    async def close_peer(self, rid: str, uid: str) -> None:
        pass

    async def pause(self, rid: str, mid: str, kind: str, paused: bool) -> None:
        if mid not in self.mids:
            raise SfuError("unknown-mid", mid)

    async def start_recording(self, rid: str, mid: str) -> Recording:
        return Recording(rid=rid, mid=mid, uid="x", file="f.webm", started_at=0.0)

    async def stop_recording(self, rid: str, mid: str) -> Recording:
        raise SfuError("not-recording", mid)

    async def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def _service(keys: bool) -> tuple[SignalService, list[PeerSession]]:
    auth = Authenticator({"school": {"K": "k" * 32}} if keys else None)
    service = SignalService(Rooms(), _MediaPlane(), "signal-1", access=AccessControl(auth))  # type: ignore[arg-type]
    P2PRelay(service)
    Stage(service)
    sessions = []
    for uid, role in (("a", "teacher"), ("b", "student"), ("c", "observer")):
        identity = (
            Identity(uid=uid, bizid="school", key="K", grants=for_role(role, "r")) if keys else None
        )
        session = PeerSession(uid, _Ws(), identity=identity)  # type: ignore[arg-type]
        service.sessions[uid] = session
        sessions.append(session)
    return service, sessions


_METHODS = [
    "join", "leave", "keepalive", "publish", "unpublish", "subscribe", "unsubscribe",
    "broadcast", "record", "stop-record", "offer", "answer", "candidate",
    "update-grants", "mute", "remove", "raise-hand", "lower-hand", "nope",
]  # fmt: skip
_OFFER = "v=0\r\na=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\n"
_DATA = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n"
_VALUES: dict[str, list[Any]] = {
    "rid": ["r", "r", "r", "s", "", "r\n", 1, None],
    "uid": ["a", "b", "c", "z", "", None],
    "to": ["a", "b", "c", "z", ""],
    "mid": [f"{u}#{n}" for u in "abc" for n in range(1, 9)] + ["", None],
    "sid": [f"{u}#s{n}" for u in "abc" for n in range(1, 9)] + [""],
    "sfuid": ["", "sfu-1", "sfu-2"],
    "kind": ["audio", "video", "data"],
    "muted": [True, False, "yes"],
    "jsep": [
        {"type": "offer", "sdp": _OFFER},
        {"type": "offer", "sdp": _OFFER.replace("video", "audio")},
        {"type": "offer", "sdp": _OFFER + _DATA},
        {"type": "offer", "sdp": _OFFER.replace("m=video", "m=audio") + _DATA},
        {"type": "answer", "sdp": "v=0"},
        {"type": "offer", "sdp": ""},
    ],
    "minfo": [{}, {"audio": True, "videotype": 1}, {"video": "x"}],
    "grants": [{}, {"canPublish": True}, {"canPublish": False}, {"canSubscribe": False},
               {"canPublishSources": ["camera"]}, {"room": "x"}, {"canPublishData": False}],
    "data": [None, "hi", {"x": [1, 2]}],
    "mode": ["sfu", "p2p", "mesh", None],
    "capacity": [1, 2, 0, -1, 10**9, None],
    "bizid": ["", "school", "other"],
    "candidate": [None, {"candidate": ""}, {"candidate": "x", "sdpMLineIndex": -1}],
}  # fmt: skip
_FIELDS: dict[str, list[str]] = {
    "join": ["rid", "bizid", "mode", "capacity"],
    "leave": ["rid"],
    "keepalive": ["rid"],
    "publish": ["rid", "jsep", "minfo"],
    "unpublish": ["rid", "mid", "sfuid"],
    "subscribe": ["rid", "mid", "jsep", "sfuid"],
    "unsubscribe": ["rid", "mid", "sid", "sfuid"],
    "broadcast": ["rid", "data"],
    "record": ["rid", "mid", "sfuid"],
    "stop-record": ["rid", "mid", "sfuid"],
    "offer": ["to", "jsep", "rid"],
    "answer": ["to", "jsep", "rid"],
    "candidate": ["to", "candidate", "rid"],
    "update-grants": ["rid", "uid", "grants"],
    "mute": ["rid", "mid", "kind", "muted"],
    "remove": ["rid", "uid"],
    "raise-hand": ["rid"],
    "lower-hand": ["rid", "uid"],
}
_services = {keys: _service(keys) for keys in (False, True)}


def signaling(data: bytes) -> None:
    if not data:
        return
    service, sessions = _services[bool(data[0] & 1)]
    session = sessions[data[0] >> 1 & 3] if data[0] >> 1 & 3 < 3 else sessions[0]
    body = data[1:]
    if data[0] & 0x80:  # a raw frame
        text = body.decode("utf-8", "replace")
    else:  # a well-formed request built from the bytes
        method = _METHODS[body[0] % len(_METHODS)] if body else "join"
        fields = {}
        names = _FIELDS.get(method, list(_VALUES))
        for name, byte in zip(names, body[1:], strict=False):
            if byte != 0xFF:  # 0xFF: leave the field out
                pool = _VALUES[name]
                fields[name] = pool[byte % len(pool)]
        text = json.dumps({"request": True, "id": len(body), "method": method, "data": fields})
    response = _loop.run_until_complete(service.handle(session, text))
    if response.get("errorCode") == "internal-error":
        raise Defect(f"internal-error for {text!r}")
    if len(service.rooms) > 64:  # keep state small: start over
        _services[bool(data[0] & 1)] = _service(bool(data[0] & 1))


# --- SDP ---------------------------------------------------------------------------

_sfu = LocalSfu()


def sdp(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        check_offer(text, 16)
    except ProtocolError as exc:
        if exc.code != "bad-sdp":
            raise Defect(exc.code) from exc
        return
    try:
        _parse_offer(text)
    except SfuError:
        return
    _loop.run_until_complete(_publish_and_subscribe(text))


async def _publish_and_subscribe(text: str) -> None:
    try:
        published = await _sfu.publish("r", "fuzz", text, {})
    except SfuError:
        return
    try:
        if published.has_media:
            subscribed = await _sfu.subscribe("r", "fuzz2", published.mid, text)
            await _sfu.unsubscribe("r", subscribed.sid)
    except SfuError:
        pass
    finally:
        await _sfu.unpublish("r", published.mid)


# --- media -------------------------------------------------------------------------


def _extensions_map() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=URI_MID),
                RTCRtpHeaderExtensionParameters(id=2, uri=URI_ABS_SEND_TIME),
                RTCRtpHeaderExtensionParameters(id=3, uri=URI_AUDIO_LEVEL),
            ]
        )
    )
    return extensions


_EXTENSIONS = _extensions_map()
_REWRITER = RtpRewriter(
    OutputParams(
        ssrc=1234,
        payload_type=96,
        clock_rate=90000,
        rtx_ssrc=5678,
        rtx_payload_type=97,
        mid="0",
        extension_ids={URI_MID: 1, URI_ABS_SEND_TIME: 2, URI_AUDIO_LEVEL: 3},
    )
)
# What sfu/ice.py drops as malformed STUN; anything else escaping aioice is a defect.
_STUN_REFUSALS = (ValueError, struct.error, IndexError, UnicodeDecodeError)
assert ice.malformed_stun_dropped >= 0


def media(data: bytes) -> None:
    if data and data[0] <= 3:
        try:
            aioice.stun.parse_message(data)
        except _STUN_REFUSALS:
            pass
        return
    if len(data) > 1 and 192 <= data[1] <= 223:
        try:
            RtcpPacket.parse(data)
        except ValueError:
            pass
        return
    packet = parse_rtp(data, _EXTENSIONS)  # the SFU's ingress (sfu/aiortc_hooks.py)
    if packet is None:
        return
    payload = packet.payload
    for mime in ("video/VP8", "video/H264", "video/VP9", "audio/opus"):
        codecs.keyframe_detector(mime)(payload)
    bitstream.vp8_frame_start(payload)
    bitstream.vp8_picture_id(payload)
    bitstream.vp8_dimensions(payload)
    bitstream.h264_frame_start(payload)
    sets = bitstream.h264_parameter_sets(payload)
    if sets is not None:
        try:
            bitstream.h264_dimensions(sets[0])
        except ValueError:  # the recorder's refusal (record/recorder.py)
            pass
    if payload:
        bitstream.opus_samples(payload)
        bitstream.opus_is_stereo(payload)
    if not _REWRITER.started:
        _REWRITER.start(packet)
    _REWRITER.rewrite(packet, 0x123456)
    _REWRITER.retransmission(packet, 0x123456)


TARGETS = {"signaling": signaling, "sdp": sdp, "media": media}
