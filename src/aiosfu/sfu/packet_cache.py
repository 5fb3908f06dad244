"""A bounded per-track cache of recent RTP packets, to answer NACKs without the publisher.

A fixed ring indexed by sequence number: O(1) insert and lookup, memory bounded by
`size` packets whatever the stream does, and a stale slot is told apart from the wanted
packet by comparing the stored sequence number.
"""

from __future__ import annotations

from aiortc.rtp import RtpPacket


class PacketCache:
    def __init__(self, size: int = 512) -> None:
        # A power of two keeps slots aligned across the 16-bit wrap-around.
        self.size = 1 << max(4, (size - 1).bit_length())
        self._mask = self.size - 1
        self._slots: list[RtpPacket | None] = [None] * self.size

    def put(self, packet: RtpPacket) -> None:
        self._slots[packet.sequence_number & self._mask] = packet

    def get(self, sequence_number: int) -> RtpPacket | None:
        packet = self._slots[sequence_number & self._mask]
        if packet is not None and packet.sequence_number == sequence_number:
            return packet
        return None

    def __len__(self) -> int:
        return sum(1 for p in self._slots if p is not None)
