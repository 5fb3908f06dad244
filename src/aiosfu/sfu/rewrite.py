"""Per-subscriber RTP header rewrite: the SSRC, payload type, sequence numbers and
timestamps a subscriber sees are its own, whatever the publisher used.

The subscriber's peer connection negotiated its own SSRC, payload type and header
extension IDs, so every forwarded packet gets a fresh 12-byte header and extension
block in front of the publisher's untouched payload. Offsets are fixed at the first
forwarded packet (a keyframe for video), which keeps sequence numbers gap-free as seen
by the subscriber and lets a NACKed sequence number be mapped back to the publisher's.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from aiortc.rtp import RtpPacket

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

_HEADER = struct.Struct("!BBHII")
_SEQ = struct.Struct("!H")
_WORD = struct.Struct("!I")


@dataclass(frozen=True)
class OutputParams:
    """What the subscriber's side negotiated for one track."""

    ssrc: int
    payload_type: int
    clock_rate: int
    rtx_ssrc: int | None = None
    rtx_payload_type: int | None = None
    mid: str | None = None
    extension_ids: dict[str, int] = field(default_factory=dict)


@dataclass
class _Layout:
    """One precomputed header: where the per-packet extension values go."""

    template: bytearray
    ast_at: int  # offset of the abs-send-time element, 0 when absent
    ast_word: int  # its ID/length byte, shifted to sit in front of the 24-bit value
    level_at: int  # offset of the audio-level element, 0 when absent
    tcc_at: int  # offset of the transport-wide sequence number element, 0 when absent
    first_byte: int  # V=2, X when there is an extension block


def random_start_sequence() -> int:
    # Below 32768 so the first wrap is far away (SRTP's rollover guess; aiortc does the same).
    return random.randrange(0, 32768)


class RtpRewriter:
    def __init__(
        self,
        params: OutputParams,
        start_sequence: int | None = None,
        start_timestamp: int | None = None,
    ) -> None:
        self.params = params
        self._start_sequence = random_start_sequence() if start_sequence is None else start_sequence
        self._start_timestamp = (
            random.getrandbits(32) if start_timestamp is None else start_timestamp
        )
        self.sequence_offset = 0
        self.timestamp_offset = 0
        self.started = False
        self._rtx_sequence = random_start_sequence()
        ids = params.extension_ids
        self._mid_id = ids.get(URI_MID) if params.mid else None
        self._ast_id = ids.get(URI_ABS_SEND_TIME)
        self._level_id = ids.get(URI_AUDIO_LEVEL)
        self._tcc_id = ids.get(URI_TRANSPORT_CC)
        self._mid_element = b""
        if self._mid_id is not None and params.mid:
            mid = params.mid.encode()[:16]
            self._mid_element = bytes([(self._mid_id << 4) | (len(mid) - 1)]) + mid
        self._build_template()

    def _build_template(self) -> None:
        """The headers of the common cases, laid out once, with the same bytes
        `_extensions` would build: per packet only the changing fields are packed in."""
        self._plain = self._layout(with_level=False)
        self._leveled = self._layout(with_level=True) if self._level_id is not None else None

    def _layout(self, with_level: bool) -> _Layout:
        elements = len(self._mid_element)
        ast_at = level_at = tcc_at = 0
        if self._ast_id is not None:
            ast_at = 16 + elements
            elements += 4
        if self._tcc_id is not None:
            tcc_at = 16 + elements
            elements += 3
        if with_level and self._level_id is not None:
            level_at = 16 + elements
            elements += 2
        elements += -elements % 4
        template = bytearray(12 + (4 + elements if elements else 0))
        if elements:
            template[12:16] = b"\xbe\xde" + _SEQ.pack(elements // 4)
            template[16 : 16 + len(self._mid_element)] = self._mid_element
        if level_at:
            template[level_at] = (self._level_id or 0) << 4
        if tcc_at:
            template[tcc_at] = (self._tcc_id or 0) << 4 | 1
        ast_word = ((self._ast_id or 0) << 4 | 2) << 24
        return _Layout(template, ast_at, ast_word, level_at, tcc_at, 0x90 if elements else 0x80)

    def start(self, packet: RtpPacket) -> None:
        """Pin the offsets so `packet` goes out with the chosen start sequence/timestamp."""
        self.sequence_offset = (self._start_sequence - packet.sequence_number) & 0xFFFF
        self.timestamp_offset = (self._start_timestamp - packet.timestamp) & 0xFFFFFFFF
        self.started = True

    def sequence(self, sequence_number: int) -> int:
        return (sequence_number + self.sequence_offset) & 0xFFFF

    def original_sequence(self, sequence_number: int) -> int:
        return (sequence_number - self.sequence_offset) & 0xFFFF

    def timestamp(self, timestamp: int) -> int:
        return (timestamp + self.timestamp_offset) & 0xFFFFFFFF

    def _extensions(
        self, packet: RtpPacket, abs_send_time: int | None, transport_sequence: int | None
    ) -> bytes:
        block = self._mid_element
        if self._ast_id is not None and abs_send_time is not None:
            block += bytes([(self._ast_id << 4) | 2]) + abs_send_time.to_bytes(3, "big")
        if self._tcc_id is not None and transport_sequence is not None:
            block += bytes([(self._tcc_id << 4) | 1]) + _SEQ.pack(transport_sequence)
        if self._level_id is not None:
            level = packet.extensions.audio_level
            if level is not None:
                block += bytes([(self._level_id << 4), (level[0] << 7) | (level[1] & 0x7F)])
        if not block:
            return b""
        block += b"\x00" * (-len(block) % 4)
        return b"\xbe\xde" + _SEQ.pack(len(block) // 4) + block

    def header(
        self,
        packet: RtpPacket,
        abs_send_time: int | None = None,
        transport_sequence: int | None = None,
    ) -> bytearray | None:
        """The rewritten header (and extension block) for `packet`, packed into a buffer
        this rewriter reuses (valid until its next call), so the sender can copy it
        straight into its SRTP buffer in front of the untouched payload. None when the
        packet needs the general path (padding, a negotiated extension with no value)."""
        level = packet.extensions.audio_level if self._leveled is not None else None
        layout = self._plain if level is None else self._leveled
        assert layout is not None
        if (
            (layout.ast_at and abs_send_time is None)
            or (layout.tcc_at and transport_sequence is None)
            or packet.padding_size
        ):
            return None
        template = layout.template
        if layout.tcc_at:
            _SEQ.pack_into(template, layout.tcc_at + 1, transport_sequence)
        if level is not None:
            template[layout.level_at + 1] = (level[0] << 7) | (level[1] & 0x7F)
        if layout.ast_at and abs_send_time is not None:
            _WORD.pack_into(template, layout.ast_at, layout.ast_word | abs_send_time)
        _HEADER.pack_into(
            template,
            0,
            layout.first_byte,
            (packet.marker << 7) | self.params.payload_type,
            (packet.sequence_number + self.sequence_offset) & 0xFFFF,
            (packet.timestamp + self.timestamp_offset) & 0xFFFFFFFF,
            self.params.ssrc,
        )
        return template

    def rewrite(
        self,
        packet: RtpPacket,
        abs_send_time: int | None = None,
        transport_sequence: int | None = None,
    ) -> bytes:
        """The packet as this subscriber gets it."""
        header = self.header(packet, abs_send_time, transport_sequence)
        if header is None:
            return self.rewrite_general(packet, abs_send_time, transport_sequence)
        return b"".join((header, packet.payload))

    def rewrite_general(
        self,
        packet: RtpPacket,
        abs_send_time: int | None,
        transport_sequence: int | None = None,
    ) -> bytes:
        """Any packet, any extension set: the general (slower) path."""
        ext = self._extensions(packet, abs_send_time, transport_sequence)
        padding = packet.padding_size
        header = _HEADER.pack(
            (0x90 if ext else 0x80) | (0x20 if padding else 0),
            (packet.marker << 7) | self.params.payload_type,
            (packet.sequence_number + self.sequence_offset) & 0xFFFF,
            (packet.timestamp + self.timestamp_offset) & 0xFFFFFFFF,
            self.params.ssrc,
        )
        if padding:
            return header + ext + packet.payload + bytes(padding - 1) + bytes((padding,))
        return header + ext + packet.payload

    def retransmission(
        self,
        packet: RtpPacket,
        abs_send_time: int | None = None,
        transport_sequence: int | None = None,
    ) -> bytes:
        """The packet again, as RFC 4588 RTX when negotiated, else as it was first sent."""
        params = self.params
        if params.rtx_payload_type is None or params.rtx_ssrc is None:
            return self.rewrite(packet, abs_send_time, transport_sequence)
        ext = self._extensions(packet, abs_send_time, transport_sequence)
        header = _HEADER.pack(
            0x90 if ext else 0x80,
            (packet.marker << 7) | params.rtx_payload_type,
            self._rtx_sequence,
            (packet.timestamp + self.timestamp_offset) & 0xFFFFFFFF,
            params.rtx_ssrc,
        )
        self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        original = _SEQ.pack((packet.sequence_number + self.sequence_offset) & 0xFFFF)
        return header + ext + original + packet.payload

    def padding(self, size: int, transport_sequence: int | None) -> bytes | None:
        """A padding-only packet of `size` padding bytes (1-255) on the RTX stream, for
        probing the downlink (sfu/probe.py): the subscriber counts it in its transport-cc
        feedback and discards it. It takes the RTX stream's next sequence number, as a
        retransmission does (SRTP would reject a repeated one). None without RTX."""
        params = self.params
        if params.rtx_payload_type is None or params.rtx_ssrc is None or not self.started:
            return None
        size = max(1, min(255, size))
        ext = b""
        if self._tcc_id is not None and transport_sequence is not None:
            block = bytes([(self._tcc_id << 4) | 1]) + _SEQ.pack(transport_sequence)
            block += b"\x00" * (-len(block) % 4)
            ext = b"\xbe\xde" + _SEQ.pack(len(block) // 4) + block
        header = _HEADER.pack(
            (0x90 if ext else 0x80) | 0x20,
            params.rtx_payload_type,
            self._rtx_sequence,
            self._start_timestamp,
            params.rtx_ssrc,
        )
        self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        return header + ext + bytes(size - 1) + bytes((size,))
