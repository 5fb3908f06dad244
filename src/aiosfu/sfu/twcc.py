"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

A browser's send-side controller (GCC) needs to learn when each of its packets arrived,
by transport-wide sequence number, so the server sends it RTCP transport-cc feedback
(RTPFB, FMT=15) for what it receives, and reads the same feedback from subscribers about
what it sends. This module is the pure, I/O-free half of that:

- `TransportFeedback`, `encode` and `decode`: the RTCP packet. aiortc 1.16 has no codec for
  it: `aiortc.rtp.RtcpRtpfbPacket.parse` treats every RTPFB format as a generic NACK (a
  transport-cc packet would come out as a list of bogus lost sequence numbers, or raise on
  a padded length), and pion/libwebrtc are Go/C++. So the wire format is written here,
  against the draft, with libwebrtc's and pion's published vectors as tests.
  `split_compound` takes the transport-cc packets out of a compound RTCP datagram and
  leaves the rest for aiortc's parser, which would otherwise mis-read or reject them.
- `FeedbackGenerator` (receive side, for publishers): records (transport seq, arrival time)
  per packet in a fixed ring and builds feedback at the cadence libwebrtc's own receiver
  uses (every 50 to 250 ms, 5% of the incoming rate spent on feedback).
- `SendHistory` (send side, for subscribers): remembers what went out on egress and turns
  a subscriber's feedback into (send time, arrival time, size) results and losses, the
  input of `aiosfu.sfu.bwe`.

Times are integers in microseconds. Arrival times must be taken when the datagram is read
from the socket, before any queueing in the event loop: feedback that includes the
server's own scheduling delay makes the publisher's GCC see queueing that is not on the
network and back off.

Usage (publisher leg: answering transport-cc)::

    # one per publisher transport: the sequence number spans all its streams
    gen = FeedbackGenerator(sender_ssrc=local_rtcp_ssrc, media_ssrc=publisher_ssrc)
    # per RTP packet that carries the transport-wide sequence number extension:
    gen.record(packet.extensions.transport_sequence_number, arrival_us, len(datagram))
    # from a timer every ~10-25 ms (or on each packet):
    for rtcp in gen.poll(now_us):
        send_rtcp(rtcp)

Usage (subscriber leg: reading its feedback)::

    history = SendHistory()
    # per RTP packet sent: write this number in its transport-wide-cc header extension
    packet.extensions.transport_sequence_number = history.send(send_us, len(datagram))
    feedbacks, rest = split_compound(rtcp_datagram)     # rest goes to aiortc as before
    for fb in feedbacks:
        for result in history.on_feedback(fb):
            estimator.on_packet_result(result)          # see aiosfu.sfu.bwe
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

RTCP_RTPFB = 205
FMT_TRANSPORT_CC = 15
#: The resolution of a receive delta on the wire.
DELTA_TICK_US = 250
#: The resolution of the reference time on the wire (64 ms), a 24-bit counter.
REFERENCE_TICK_US = 64_000
REFERENCE_WRAP = 1 << 24
HEADER_SIZE = 20  # RTCP header + sender SSRC + media SSRC + base seq/count + ref time/fb count

# Packet status symbols (draft §3.1.1). 3 is reserved.
NOT_RECEIVED = 0
SMALL_DELTA = 1  # one byte, 0..63.75 ms
LARGE_DELTA = 2  # two bytes, signed, -8192..8191.75 ms

_MAX_RUN = 0x1FFF  # 13-bit run length
_ONE_BIT_CAPACITY = 14
_TWO_BIT_CAPACITY = 7
_MIN_LARGE = -0x8000
_MAX_LARGE = 0x7FFF

_HEAD = struct.Struct("!BBHIIHHI")


@dataclass(slots=True)
class TransportFeedback:
    """One transport-cc feedback packet, in wire units.

    `deltas[i]` is about transport sequence number `base_seq + i` (mod 2**16): None if it
    was not received, otherwise its receive delta in 250 µs ticks from the previous
    received packet (the first one's from `reference_time`). Keeping the wire units makes
    encode/decode exact; `arrivals` converts.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int  # 24 bits, in 64 ms units of the receiver's clock
    fb_count: int  # 8 bits, counts feedback packets so the sender can see a lost one
    deltas: list[int | None] = field(default_factory=list)

    def arrivals(self) -> Iterator[tuple[int, int | None]]:
        """(16-bit sequence number, arrival µs in the receiver's clock or None if lost).

        The clock starts at this packet's own reference time (not unwrapped across
        packets; `SendHistory` does that).
        """
        t = self.reference_time * REFERENCE_TICK_US
        seq = self.base_seq
        for delta in self.deltas:
            if delta is None:
                yield seq, None
            else:
                t += delta * DELTA_TICK_US
                yield seq, t
            seq = (seq + 1) & 0xFFFF


def _chunks(symbols: list[int]) -> Iterator[int]:
    """Greedy chunking: at each position take whichever chunk covers the most symbols.

    A vector chunk in the middle must be full (its symbols are all consumed), so a 1-bit
    vector is only an option when the next 14 symbols (or all that remain) need no large
    delta. This reproduces libwebrtc's chunk counts on its published cases.
    """
    n = len(symbols)
    i = 0
    while i < n:
        first = symbols[i]
        run = 1
        while i + run < n and run < _MAX_RUN and symbols[i + run] == first:
            run += 1
        one_bit = min(_ONE_BIT_CAPACITY, n - i)
        if LARGE_DELTA in symbols[i : i + one_bit]:
            one_bit = 0
        two_bit = min(_TWO_BIT_CAPACITY, n - i)
        if run >= one_bit and run >= two_bit:
            yield (first << 13) | run
            i += run
        elif one_bit >= two_bit:
            word = 0x8000
            for k in range(one_bit):
                word |= symbols[i + k] << (13 - k)
            yield word
            i += one_bit
        else:
            word = 0xC000
            for k in range(two_bit):
                word |= symbols[i + k] << (12 - 2 * k)
            yield word
            i += two_bit


def encode(fb: TransportFeedback) -> bytes:
    """The RTCP packet, padded to 32 bits with the padding bit set as libwebrtc does."""
    if not fb.deltas:
        raise ValueError("transport-cc feedback needs at least one packet status")
    if len(fb.deltas) > 0xFFFF:
        raise ValueError("transport-cc feedback reports at most 65535 packets")
    # One pass for the symbols and the receive deltas (this runs every 50 ms per
    # publisher, over every packet since the last feedback).
    symbols: list[int] = []
    deltas = bytearray()
    for delta in fb.deltas:
        if delta is None:
            symbols.append(NOT_RECEIVED)
        elif 0 <= delta <= 0xFF:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        elif _MIN_LARGE <= delta <= _MAX_LARGE:
            symbols.append(LARGE_DELTA)
            deltas += delta.to_bytes(2, "big", signed=True)
        else:
            raise ValueError(f"receive delta {delta} ticks does not fit 16 bits")
    body = bytearray()
    for word in _chunks(symbols):
        body += word.to_bytes(2, "big")
    body += deltas
    size = HEADER_SIZE + len(body)
    padding = -size % 4
    if padding:
        body += bytes(padding - 1) + bytes([padding])
    length_words = (size + padding) // 4 - 1
    head = _HEAD.pack(
        0x80 | (0x20 if padding else 0) | FMT_TRANSPORT_CC,
        RTCP_RTPFB,
        length_words,
        fb.sender_ssrc,
        fb.media_ssrc,
        fb.base_seq & 0xFFFF,
        len(fb.deltas),
        ((fb.reference_time % REFERENCE_WRAP) << 8) | (fb.fb_count & 0xFF),
    )
    return head + bytes(body)


def decode(data: bytes) -> TransportFeedback:
    """Parse one transport-cc RTCP packet (header included); ValueError if malformed.

    Padding is honoured as RFC 3550 says (libwebrtc pads with the bit set). A packet that
    reports no statuses (pion's empty feedback) decodes to an empty `deltas`. Feedback
    without receive deltas (libwebrtc's rarely used timestamp-less mode) is refused as
    truncated: without arrival times it is of no use to an estimator.
    """
    if len(data) < HEADER_SIZE:
        raise ValueError("transport-cc feedback is shorter than its 20-byte header")
    first, packet_type, length_words, sender, media, base, count, ref_fb = _HEAD.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError("RTCP version is not 2")
    if packet_type != RTCP_RTPFB or first & 0x1F != FMT_TRANSPORT_CC:
        raise ValueError("not a transport-cc feedback packet (RTPFB FMT=15)")
    end = (length_words + 1) * 4
    if end > len(data):
        raise ValueError("transport-cc feedback is truncated")
    if first & 0x20:
        pad = data[end - 1]
        if pad == 0 or pad > end - HEADER_SIZE:
            raise ValueError("transport-cc feedback has an invalid padding length")
        end -= pad
    symbols: list[int] = []
    pos = HEADER_SIZE
    while len(symbols) < count:
        if pos + 2 > end:
            raise ValueError("transport-cc feedback ends inside its status chunks")
        word = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if not word & 0x8000:
            symbols.extend([(word >> 13) & 0x3] * min(word & _MAX_RUN, count - len(symbols)))
        elif not word & 0x4000:
            for k in range(min(_ONE_BIT_CAPACITY, count - len(symbols))):
                symbols.append((word >> (13 - k)) & 0x1)
        else:
            for k in range(min(_TWO_BIT_CAPACITY, count - len(symbols))):
                symbols.append((word >> (12 - 2 * k)) & 0x3)
    deltas: list[int | None] = []
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            deltas.append(None)
        elif symbol == SMALL_DELTA:
            if pos + 1 > end:
                raise ValueError("transport-cc feedback ends inside its receive deltas")
            deltas.append(data[pos])
            pos += 1
        elif symbol == LARGE_DELTA:
            if pos + 2 > end:
                raise ValueError("transport-cc feedback ends inside its receive deltas")
            deltas.append(int.from_bytes(data[pos : pos + 2], "big", signed=True))
            pos += 2
        else:
            raise ValueError("transport-cc feedback uses the reserved status symbol 3")
    return TransportFeedback(
        sender_ssrc=sender,
        media_ssrc=media,
        base_seq=base,
        reference_time=ref_fb >> 8,
        fb_count=ref_fb & 0xFF,
        deltas=deltas,
    )


def is_transport_feedback(data: bytes, pos: int = 0) -> bool:
    """Whether the RTCP packet at `pos` is transport-cc feedback (two byte compares)."""
    return (
        len(data) >= pos + 2
        and data[pos + 1] == RTCP_RTPFB
        and data[pos] & 0x1F == FMT_TRANSPORT_CC
    )


def split_compound(data: bytes) -> tuple[list[TransportFeedback], bytes]:
    """Take the transport-cc packets out of a compound RTCP datagram.

    Returns them decoded, and the remaining packets as bytes for aiortc's parser (empty
    if there are none). Malformed transport-cc packets are dropped; a compound whose
    framing is broken raises ValueError, as aiortc's parser would.
    """
    feedbacks: list[TransportFeedback] = []
    rest = bytearray()
    pos = 0
    n = len(data)
    while pos < n:
        if pos + 4 > n:
            raise ValueError("RTCP packet is shorter than its header")
        end = pos + (((data[pos + 2] << 8) | data[pos + 3]) + 1) * 4
        if end > n:
            raise ValueError("RTCP packet is truncated")
        if is_transport_feedback(data, pos):
            try:
                feedbacks.append(decode(data[pos:end]))
            except ValueError:
                pass
        else:
            rest += data[pos:end]
        pos = end
    return feedbacks, bytes(rest)


# --- receive side ----------------------------------------------------------------------

#: libwebrtc budgets feedback as if each packet were 68 bytes and spends 5% of the
#: incoming rate on it, at least every 250 ms and at most every 50 ms.
_REPORT_BITS = 68 * 8
_MIN_INTERVAL_US = 50_000
_MAX_INTERVAL_US = 250_000
_DEFAULT_INTERVAL_US = 100_000


class FeedbackGenerator:
    """Collects arrivals on a publisher's transport and builds its transport-cc feedback.

    A fixed ring indexed by sequence number keeps `record` O(1) with nothing allocated
    beyond the two stored integers; each slot also keeps the unwrapped sequence number so
    a stale slot (a lost packet, or one from a previous lap) reads as not received.

    Reordering inside a feedback interval costs nothing. A packet that arrives after its
    sequence number was reported lost (still within the ring) is reported again in the
    next feedback, as libwebrtc's receiver does; a duplicate keeps its first arrival.
    """

    def __init__(
        self,
        sender_ssrc: int,
        media_ssrc: int,
        *,
        size: int = 8192,
        max_received_per_packet: int = 300,
        max_packet_bytes: int = 1200,
        interval_us: int | None = None,
    ) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc
        # A power of two up to 2**15 so slots stay aligned and a lap is less than half
        # the 16-bit sequence space.
        self.size = 1 << max(4, min(15, (size - 1).bit_length()))
        self._mask = self.size - 1
        self._seqs: list[int] = [-1] * self.size
        self._times: list[int] = [0] * self.size
        self.max_received_per_packet = max_received_per_packet
        self.max_packet_bytes = max_packet_bytes
        self._fixed_interval = interval_us
        self._last_ext = -1  # highest unwrapped sequence number seen
        self._start = 0  # first unwrapped sequence number not yet reported
        self._fb_count = 0
        self._bytes = 0
        self._last_poll_us: int | None = None
        self.interval_us = interval_us or _DEFAULT_INTERVAL_US
        self.duplicates = 0
        self.too_late = 0

    def record(self, seq: int, arrival_us: int, size: int = 0) -> None:
        """Note one packet's arrival; `arrival_us` is the socket read time."""
        last = self._last_ext
        if last < 0:
            # Start one lap up so packets reordered before the first one stay positive.
            ext = (seq & 0xFFFF) + 0x10000
            self._last_ext = ext
            self._start = ext
        else:
            diff = (seq - last) & 0xFFFF
            if diff >= 0x8000:
                diff -= 0x10000
            ext = last + diff
            if ext > last:
                self._last_ext = ext
            elif ext <= last - self.size:
                self.too_late += 1
                return
        slot = ext & self._mask
        if self._seqs[slot] == ext:
            self.duplicates += 1
            return
        self._seqs[slot] = ext
        self._times[slot] = arrival_us
        self._bytes += size
        if ext < self._start:
            self._start = ext

    @property
    def pending(self) -> int:
        """Sequence numbers not yet covered by a feedback packet."""
        return 0 if self._last_ext < 0 else self._last_ext + 1 - self._start

    def poll(self, now_us: int) -> list[bytes]:
        """Feedback packets due at `now_us` (often none); call every 10-25 ms."""
        last = self._last_poll_us
        if last is None:
            self._last_poll_us = now_us
            return []
        elapsed = now_us - last
        if elapsed < self.interval_us:
            return []
        if self._fixed_interval is None and elapsed > 0:
            rate_bps = self._bytes * 8 * 1_000_000 // elapsed
            budget = rate_bps * 0.05
            interval = _MAX_INTERVAL_US if budget <= 0 else int(_REPORT_BITS * 1e6 / budget)
            self.interval_us = max(_MIN_INTERVAL_US, min(_MAX_INTERVAL_US, interval))
        self._bytes = 0
        self._last_poll_us = now_us
        return self.flush()

    def flush(self) -> list[bytes]:
        """Feedback for everything recorded and not yet reported, now."""
        if self.pending <= 0:
            return []
        end = self._last_ext + 1
        start = max(self._start, end - self.size)
        self._start = end
        out: list[bytes] = []
        window: list[tuple[int, int | None]] = []
        received = 0
        prev_ticks = 0
        seqs, times, mask = self._seqs, self._times, self._mask
        for ext in range(start, end):
            slot = ext & mask
            if seqs[slot] != ext:
                window.append((ext, None))
                continue
            ticks = (times[slot] + DELTA_TICK_US // 2) // DELTA_TICK_US
            if received and (
                received >= self.max_received_per_packet
                or not _MIN_LARGE <= ticks - prev_ticks <= _MAX_LARGE
            ):
                out.extend(self._build(window))
                window = []
                received = 0
            window.append((ext, ticks))
            received += 1
            prev_ticks = ticks
        if window:
            out.extend(self._build(window))
        return out

    def _build(self, window: list[tuple[int, int | None]]) -> list[bytes]:
        # The reference time comes from the first received packet; losses before it
        # (the window opens where the last feedback ended) are still reported.
        received_at = [i for i, (_, ticks) in enumerate(window) if ticks is not None]
        first_ticks = window[received_at[0]][1]
        assert first_ticks is not None
        reference = first_ticks // 256
        prev = reference * 256
        deltas: list[int | None] = []
        for _, ticks in window:
            if ticks is None:
                deltas.append(None)
            else:
                deltas.append(ticks - prev)
                prev = ticks
        packet = encode(
            TransportFeedback(
                sender_ssrc=self.sender_ssrc,
                media_ssrc=self.media_ssrc,
                base_seq=window[0][0] & 0xFFFF,
                reference_time=reference % REFERENCE_WRAP,
                fb_count=self._fb_count,
                deltas=deltas,
            )
        )
        if len(packet) > self.max_packet_bytes and len(received_at) > 1:
            # Rare (long interleaved loss runs): halve by received packets and try again.
            half = received_at[len(received_at) // 2]
            return self._build(window[:half]) + self._build(window[half:])
        self._fb_count = (self._fb_count + 1) & 0xFF
        return [packet]


# --- send side -------------------------------------------------------------------------


class PacketResult(NamedTuple):
    """What feedback says about one packet we sent. `arrival_us` is None if lost.

    Arrival times are in the remote's clock (unknown offset): only their differences mean
    anything, which is all a delay-based estimator uses.
    """

    seq: int
    send_us: int
    size: int
    arrival_us: int | None


_UNREPORTED = 0
_REPORTED_LOST = 1
_ACKED = 2


class SendHistory:
    """What went out on one subscriber's transport, matched against its feedback.

    A fixed ring by transport sequence number (the same trick as the NACK cache): O(1)
    per sent packet, bounded memory, stale slots told apart by the stored unwrapped
    sequence number. Each packet is reported once as received; a packet first reported
    lost and later received (reordering) is reported again as received.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = 1 << max(4, min(15, (size - 1).bit_length()))
        self._mask = self.size - 1
        self._seqs: list[int] = [-1] * self.size
        self._send: list[int] = [0] * self.size
        self._sizes: list[int] = [0] * self.size
        self._state: list[int] = [0] * self.size
        self._last_ext = -1
        self._ref_ext: int | None = None  # unwrapped reference time of the last feedback
        self._next_seq = 0
        self.unknown = 0  # statuses about packets not (or no longer) in the history
        self.feedbacks = 0

    def _unwrap(self, seq: int) -> int:
        last = self._last_ext
        if last < 0:
            return (seq & 0xFFFF) + 0x10000  # one lap up, as in FeedbackGenerator
        diff = (seq - last) & 0xFFFF
        if diff >= 0x8000:
            diff -= 0x10000
        return last + diff

    def send(self, send_us: int, size: int) -> int:
        """Allocate the next transport-wide sequence number for a packet going out now,
        and remember it: one counter per subscriber transport, across all its streams."""
        seq = self._next_seq
        self._next_seq = (seq + 1) & 0xFFFF
        self.on_sent(seq, send_us, size)
        return seq

    def on_sent(self, seq: int, send_us: int, size: int) -> None:
        """Note one packet sent with transport-wide sequence number `seq` (16 bits)."""
        ext = self._unwrap(seq)
        if ext > self._last_ext:
            self._last_ext = ext
        slot = ext & self._mask
        self._seqs[slot] = ext
        self._send[slot] = send_us
        self._sizes[slot] = size
        self._state[slot] = _UNREPORTED

    def on_feedback(self, fb: TransportFeedback) -> list[PacketResult]:
        """The newly known fates of our packets, in sequence order."""
        self.feedbacks += 1
        ref = fb.reference_time
        if self._ref_ext is None:
            self._ref_ext = ref
        else:
            diff = (ref - self._ref_ext) % REFERENCE_WRAP
            if diff >= REFERENCE_WRAP // 2:
                diff -= REFERENCE_WRAP
            self._ref_ext += diff
        t = self._ref_ext * REFERENCE_TICK_US
        results: list[PacketResult] = []
        if self._last_ext < 0:
            self.unknown += len(fb.deltas)
            return results
        ext = self._unwrap(fb.base_seq)
        seqs, state, mask = self._seqs, self._state, self._mask
        for delta in fb.deltas:
            slot = ext & mask
            if delta is not None:
                t += delta * DELTA_TICK_US
            if seqs[slot] != ext:
                self.unknown += 1
            elif delta is None:
                if state[slot] == _UNREPORTED:
                    state[slot] = _REPORTED_LOST
                    results.append(
                        PacketResult(ext & 0xFFFF, self._send[slot], self._sizes[slot], None)
                    )
            elif state[slot] != _ACKED:
                state[slot] = _ACKED
                results.append(PacketResult(ext & 0xFFFF, self._send[slot], self._sizes[slot], t))
            ext += 1
        return results
