"""The per-track NACK cache: bounded, exact on lookup, right across the 16-bit wrap."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from aiosfu.sfu.packet_cache import PacketCache


def packet(seq: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 10, payload=b"p%d" % seq)


@pytest.mark.parametrize(
    ("requested", "size"), [(512, 512), (500, 512), (513, 1024), (16, 16), (1, 16), (100, 128)]
)
def test_size_is_a_power_of_two_at_least_the_request(requested: int, size: int) -> None:
    assert PacketCache(requested).size == size


def test_get_returns_the_packet_put() -> None:
    cache = PacketCache(64)
    assert cache.get(5) is None
    assert len(cache) == 0
    p = packet(5)
    cache.put(p)
    assert cache.get(5) is p
    assert cache.get(6) is None
    assert len(cache) == 1


def test_bounded_size_keeps_only_the_latest_packets() -> None:
    cache = PacketCache(32)
    for seq in range(1000):
        cache.put(packet(seq))
    assert len(cache) == 32
    assert all(cache.get(seq) is not None for seq in range(968, 1000))
    assert all(cache.get(seq) is None for seq in range(0, 968))


def test_get_after_overwrite_returns_none_not_the_stale_packet() -> None:
    cache = PacketCache(16)
    cache.put(packet(3))
    cache.put(packet(3 + 16))  # same slot
    assert cache.get(3) is None
    assert cache.get(19).sequence_number == 19  # type: ignore[union-attr]
    # and asking for a sequence number that maps to an occupied slot of another packet
    assert cache.get(3 + 32) is None


def test_a_retransmitted_packet_replaces_its_slot() -> None:
    cache = PacketCache(16)
    first, again = packet(7), packet(7)
    cache.put(first)
    cache.put(again)
    assert cache.get(7) is again
    assert len(cache) == 1


def test_wrap_around() -> None:
    cache = PacketCache(64)
    seqs = [(65500 + i) & 0xFFFF for i in range(64)]  # 65500..65535, 0..27
    for seq in seqs:
        cache.put(packet(seq))
    assert len(cache) == 64
    for seq in seqs:
        got = cache.get(seq)
        assert got is not None and got.sequence_number == seq
    # one more pushes out the oldest, across the wrap
    cache.put(packet(28))
    assert cache.get(65500) is None
    assert cache.get(65501) is not None and cache.get(28) is not None


def test_full_cycle_of_sequence_numbers_leaves_only_the_last_window() -> None:
    cache = PacketCache(16)
    for seq in range(65536 + 10):
        cache.put(packet(seq & 0xFFFF))
    expected = {(65536 + 10 - 16 + i) & 0xFFFF for i in range(16)}
    assert {seq for seq in range(65536) if cache.get(seq) is not None} == expected
