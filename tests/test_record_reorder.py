"""Packets back in order across sequence wrap-around; frames only when complete."""

from __future__ import annotations

import random

from aiosfu.record.frames import VIDEO_CODECS, AudioFrames, VideoFrames
from aiosfu.record.reorder import Gap, ReorderBuffer, Unwrapper


def test_unwrapper_crosses_the_wrap_both_ways() -> None:
    seq = Unwrapper(16)
    assert [seq(v) for v in (65533, 65535, 0, 2, 65534, 5)] == [
        65533,
        65535,
        65536,
        65538,
        65534,  # a late packet from before the wrap stays before it
        65541,
    ]
    ts = Unwrapper(32)
    assert ts(0xFFFFFF00) == 0xFFFFFF00
    assert ts(0x00000100) == 0x100000100
    assert ts.nearest(0xFFFFFFF0) == 0xFFFFFFF0  # nearest() does not move the reference
    assert ts(0x00000200) == 0x100000200


def test_reorder_restores_order_across_the_wrap() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(window=1.0)
    sent = [(65530 + i) % 65536 for i in range(20)]
    arrival = [sent[1], sent[0], sent[2], sent[4], sent[3], *sent[5:12]]
    arrival += [sent[15], sent[12], sent[14], sent[13], *sent[16:]]
    out: list[int | Gap] = []
    for n, seq in enumerate(arrival):
        buffer.push(seq, seq, now=n * 0.1)
        out += buffer.pop(now=n * 0.1)
    assert out == sent
    assert buffer.reordered == 5 and buffer.lost == 0 and len(buffer) == 0


def test_missing_packet_is_waited_for_then_declared_lost() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(window=0.3)
    buffer.push(10, 10, now=0.0)
    buffer.push(11, 11, now=0.0)
    assert buffer.pop(now=0.1) == []  # the first packets wait a window: 9 may be late
    buffer.push(13, 13, now=0.1)
    buffer.push(14, 14, now=0.1)
    assert buffer.pop(now=0.3) == [10, 11]  # 12 may still be retransmitted
    buffer.push(12, 12, now=0.35)  # and it is
    assert buffer.pop(now=0.35) == [12, 13, 14]
    for seq in (16, 17):
        buffer.push(seq, seq, now=1.0)
    assert buffer.pop(now=1.29) == []
    assert buffer.pop(now=1.3) == [Gap(1), 16, 17]
    buffer.push(15, 15, now=1.4)  # too late: already given up on
    buffer.push(17, 17, now=1.4)  # a duplicate
    assert buffer.pop(now=1.4) == []
    assert (buffer.lost, buffer.late) == (1, 2)


def test_capacity_bounds_the_wait() -> None:
    buffer: ReorderBuffer[int] = ReorderBuffer(window=10.0, capacity=4)
    buffer.push(1, 1, now=0.0)
    assert buffer.pop(now=10.0) == [1]
    for seq in (3, 4, 5):
        buffer.push(seq, seq, now=10.0)
    assert buffer.pop(now=10.0) == []
    buffer.push(6, 6, now=0.0)
    assert buffer.pop(now=0.0) == [Gap(1), 3, 4, 5, 6]


def test_flush_gives_everything_in_order() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer(window=10.0)
    for seq in (7, 9, 12):
        buffer.push(seq, str(seq), now=0.0)
    assert buffer.flush() == ["7", Gap(1), "9", Gap(2), "12"]


def test_reorder_random_shuffle_within_window() -> None:
    rng = random.Random(7)
    buffer: ReorderBuffer[int] = ReorderBuffer(window=0.5)
    sent = [(60000 + i) % 65536 for i in range(10000)]
    arrival = sent[:]
    for i in range(0, len(arrival) - 8, 8):  # shuffle inside blocks of 8
        block = arrival[i : i + 8]
        rng.shuffle(block)
        arrival[i : i + 8] = block
    lost = set(rng.sample(sent[1:-1], 300))
    out: list[int | Gap] = []
    for n, seq in enumerate(arrival):
        if seq not in lost:
            buffer.push(seq, seq, now=n * 0.001)
        out += buffer.pop(now=n * 0.001)
    out += buffer.flush()
    assert buffer.reordered > 1000
    assert [x for x in out if not isinstance(x, Gap)] == [s for s in sent if s not in lost]
    assert sum(x.count for x in out if isinstance(x, Gap)) == len(lost)


# --- frames -------------------------------------------------------------------------

# RTP payloads: a VP8 payload descriptor (X, S, PID 0, 7-bit picture id), then data
# whose first byte's low bit is the VP8 inter-frame flag.
KEY = bytes([0x90, 0x80, 0x01, 0x00])
START = bytes([0x90, 0x80, 0x01, 0x01])
MIDDLE = bytes([0x80, 0x80, 0x01, 0x22])  # no S bit: a continuation


def _frames(assembler: VideoFrames, packets: list[tuple[int, int, bytes, bool]]) -> list[int]:
    out = []
    for ts, marker, payload, keyframe in packets:
        out += [f.timestamp for f in assembler.push(ts, marker, payload, keyframe)]
    return out


def test_video_frames_join_packets_until_the_marker() -> None:
    frames = VideoFrames(VIDEO_CODECS["video/vp8"])
    out = frames.push(100, 0, KEY + b"a", True)
    out += frames.push(100, 0, MIDDLE + b"b", False)
    out += frames.push(100, 1, MIDDLE + b"c", False)
    assert [(f.timestamp, f.data, f.keyframe) for f in out] == [(100, b"\x00a\x22b\x22c", True)]


def test_video_waits_for_a_keyframe_at_start_and_after_loss() -> None:
    frames = VideoFrames(VIDEO_CODECS["video/vp8"])
    assert _frames(frames, [(1, 1, START, False), (2, 1, START, False)]) == []
    assert frames.waiting_for_keyframe
    assert _frames(frames, [(3, 0, KEY, True), (3, 1, MIDDLE, False), (4, 1, START, False)]) == [
        3,
        4,
    ]
    assert not frames.waiting_for_keyframe
    frames.push(5, 0, START, False)
    frames.gap()  # the rest of frame 5 was lost
    assert _frames(frames, [(5, 1, MIDDLE, False), (6, 1, START, False)]) == []
    assert frames.waiting_for_keyframe
    assert _frames(frames, [(7, 1, KEY, True)]) == [7]
    assert frames.dropped == 4  # 1 and 2 (no keyframe yet), 5 (incomplete), 6 (after loss)


def test_video_frame_missing_its_start_is_dropped() -> None:
    frames = VideoFrames(VIDEO_CODECS["video/vp8"])
    assert _frames(frames, [(1, 1, KEY, True)]) == [1]
    frames.gap()  # lost: the first packets of frame 2
    assert _frames(frames, [(2, 1, MIDDLE, False)]) == []
    # An unmarked frame followed by a new timestamp (no gap) is complete; one left open
    # at the end is not.
    assert _frames(frames, [(3, 0, KEY, True), (4, 0, START, False)]) == [3]
    assert frames.flush() == []


def test_audio_frames_are_packets() -> None:
    frames = AudioFrames()
    assert [f.data for f in frames.push(960, 1, b"\xfc\x01", False)] == [b"\xfc\x01"]
    frames.gap()
    assert not frames.waiting_for_keyframe and frames.flush() == []


def _vp8(picture_id: int, start: bool, key: bool) -> bytes:
    """A VP8 payload with a 15-bit PictureID, as Chromium sends them."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF])
    return descriptor + bytes([0x00 if key else 0x01])


def test_gap_between_consecutive_pictures_is_padding_not_loss() -> None:
    frames = VideoFrames(VIDEO_CODECS["video/vp8"])
    assert _frames(frames, [(1, 1, _vp8(32767, True, True), True)]) == [1]
    frames.gap()  # padding-only probes the SFU kept from the recorder
    assert _frames(frames, [(2, 1, _vp8(0, True, False), False)]) == [2]  # id wrapped
    frames.gap()  # this time a whole picture (id 1) is missing
    assert _frames(frames, [(4, 1, _vp8(2, True, False), False)]) == []
    assert frames.waiting_for_keyframe
    assert _frames(frames, [(5, 1, _vp8(3, True, True), True)]) == [5]
