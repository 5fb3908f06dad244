"""One publisher connection's receive side of congestion control: transport-cc feedback.

A browser's send-side controller (GCC) sets its encoder's target from when each of its
packets arrived. Audio and video share one transport-wide sequence (BUNDLE), so there is
one `Uplink` per publisher connection, fed by every receiver on it. Arrival times are the
socket read times the fast ingress takes (`sfu/packet_io.PacketIO`), never the time a
packet got its turn on the event loop: feedback that includes the server's own scheduling
delay reads to GCC as queueing on the network, and it backs off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from aiosfu.log import get_logger
from aiosfu.sfu.twcc import FeedbackGenerator

log = get_logger("aiosfu.sfu.uplink")

POLL_INTERVAL = 0.02  # seconds between looks at whether feedback is due (it is every 50-250 ms)
IDLE_AFTER_US = 2_000_000  # stop polling after this long without a packet

SendRtcp = Callable[[bytes], Awaitable[None]]
# A REMB this high lifts an earlier ceiling (the browser keeps the last REMB it got).
NO_CEILING_BPS = 100_000_000
RELEASES = 3  # times the lifted ceiling is repeated, in case one is lost


def now_us() -> int:
    """The clock arrival and send times are taken on (time.monotonic, in µs)."""
    return int(time.monotonic() * 1_000_000)


def keeps_remb(offer_sdp: str) -> str:
    """The offer as answered for a publisher whose controller is left on REMB: Firefox's.

    Firefox publishing with transport-cc feedback from us settles at 480x360 where with
    REMB it sends 640x480 (tests/test_interop_firefox.py); until that is understood its
    offers are answered without transport-cc (its subscriptions keep it: the downlink
    estimate works). Chromium's offers are untouched."""
    if "mozilla" not in offer_sdp.split("\n", 2)[1]:  # the o= line names the stack
        return offer_sdp
    lines = offer_sdp.split("\r\n")
    kept = [
        line
        for line in lines
        if not (line.startswith("a=rtcp-fb:") and line.endswith(" transport-cc"))
        and not (line.startswith("a=extmap:") and "transport-wide-cc" in line)
    ]
    return "\r\n".join(kept)


def transport_sequence_of(data: bytes, extension_id: int) -> int | None:
    """The transport-wide sequence number in an RTP datagram's one-byte header
    extension (RFC 8285), read without parsing the rest: SRTP encrypts only the payload,
    so this works on a datagram not yet unprotected. None if it carries none."""
    if not data[0] & 0x10 or not extension_id:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if len(data) < pos + 4 or data[pos] != 0xBE or data[pos + 1] != 0xDE:
        return None
    end = pos + 4 + 4 * ((data[pos + 2] << 8) | data[pos + 3])
    pos += 4
    if end > len(data):
        return None
    while pos < end:
        byte = data[pos]
        if byte == 0:  # padding
            pos += 1
            continue
        element, length = byte >> 4, (byte & 0x0F) + 1
        if element == 15:
            return None
        if element == extension_id:
            return (data[pos + 1] << 8) | data[pos + 2] if length == 2 else None
        pos += 1 + length
    return None


class Uplink:
    def __init__(self, send_rtcp: SendRtcp, sender_ssrc: int, extension_id: int = 0) -> None:
        self._send_rtcp = send_rtcp
        self.extension_id = extension_id  # the transport-wide sequence number's header ID
        self.feedback = FeedbackGenerator(sender_ssrc=sender_ssrc, media_ssrc=0)
        self._timer: asyncio.TimerHandle | None = None
        self._last_arrival_us = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.packets = 0
        self.feedback_sent = 0
        self.cap_bps: int | None = None  # the ceiling the publisher was last told
        self._releases_left = 0

    def record(self, sequence_number: int, ssrc: int, arrival_us: int, size: int) -> None:
        """One packet that carried the transport-wide sequence number extension."""
        self.packets += 1
        self._last_arrival_us = arrival_us
        if not self.feedback.media_ssrc:
            self.feedback.media_ssrc = ssrc
        self.feedback.record(sequence_number, arrival_us, size)
        if self._timer is None and not self.closed:
            self._timer = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._poll)

    def _poll(self) -> None:
        self._timer = None
        if self.closed:
            return
        now = now_us()
        for packet in self.feedback.poll(now):
            self.feedback_sent += 1
            task = asyncio.ensure_future(self._send(packet))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if now - self._last_arrival_us < IDLE_AFTER_US:
            self._timer = asyncio.get_running_loop().call_later(POLL_INTERVAL, self._poll)

    def set_cap(self, cap_bps: int | None, media_ssrcs: list[int]) -> None:
        """Tell the publisher the most its subscribers' downlinks take (REMB), or that
        they no longer limit it. Called periodically: a REMB may be lost."""
        if cap_bps is None:
            if self.cap_bps is not None:
                self._releases_left = RELEASES
            self.cap_bps = None
            if not self._releases_left:
                return
            self._releases_left -= 1
            bitrate = NO_CEILING_BPS
        else:
            self.cap_bps = bitrate = cap_bps
            self._releases_left = 0
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP,
            ssrc=self.feedback.sender_ssrc,
            media_ssrc=0,
            fci=pack_remb_fci(bitrate, media_ssrcs),
        )
        task = asyncio.ensure_future(self._send(bytes(remb)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, packet: bytes) -> None:
        try:
            await self._send_rtcp(packet)
        except ConnectionError:
            pass  # the connection is going away; its state change cleans up

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stats(self) -> dict[str, object]:
        return {
            "transportCcPackets": self.packets,
            "transportCcFeedbackSent": self.feedback_sent,
            "feedbackIntervalMs": self.feedback.interval_us / 1000,
            "publisherCapBps": self.cap_bps,
        }
