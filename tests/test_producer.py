"""Producer behaviour the fan-out relies on, with a fake publisher (no WebRTC)."""

from __future__ import annotations

import asyncio

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from aiosfu.sfu.producer import Producer

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
SSRC = 0xAAAA0001


class Upstream:
    def __init__(self) -> None:
        self.keyframe_requests: list[float] = []

    async def request_keyframe(self, ssrc: int) -> None:
        self.keyframe_requests.append(asyncio.get_running_loop().time())

    async def request_retransmission(self, ssrc: int, sequence_numbers: list[int]) -> None:
        pass


async def test_a_keyframe_request_inside_the_interval_is_deferred_not_lost() -> None:
    upstream = Upstream()
    producer = Producer("video", VP8, upstream, keyframe_request_interval=0.2)
    await producer.on_rtp(RtpPacket(payload_type=96, ssrc=SSRC, payload=b"\x10\x31\x2a\x00"))
    start = asyncio.get_running_loop().time()
    assert await producer.request_keyframe() is True
    for _ in range(5):  # five subscribers ask right after: held back...
        assert await producer.request_keyframe() is False
    assert len(upstream.keyframe_requests) == 1
    await asyncio.sleep(0.35)
    # ...and answered by exactly one more request once the interval is over
    assert len(upstream.keyframe_requests) == 2
    assert upstream.keyframe_requests[1] - start >= 0.19
    assert producer.keyframe_requests_sent == 2
    assert producer.keyframe_requests_suppressed == 5
    await asyncio.sleep(0.3)
    assert len(upstream.keyframe_requests) == 2  # nothing more without new requests


async def test_closing_cancels_a_deferred_keyframe_request() -> None:
    upstream = Upstream()
    producer = Producer("video", VP8, upstream, keyframe_request_interval=0.1)
    await producer.on_rtp(RtpPacket(payload_type=96, ssrc=SSRC, payload=b"\x10\x31\x2a\x00"))
    await producer.request_keyframe()
    await producer.request_keyframe()
    producer.close()
    await asyncio.sleep(0.2)
    assert len(upstream.keyframe_requests) == 1
