"""A RecordingSession fed by fake Producers with aiortc's real encoders and packetizers.

Faster than real time and fully controlled: RTP sequence numbers and timestamps that
wrap, Sender Reports that say where each track is, a video track that starts half a
second after the audio but is delivered first, loss, reordering and duplicates. The
file must put everything where the RTP clocks and Sender Reports say, not where the
arrival order would.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.codecs import get_capabilities, get_encoder
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from av import AudioFrame, VideoFrame

from aiosfu.contract import Recording, SfuError
from aiosfu.record import RecordingManager, recording_name
from aiosfu.record.bitstream import h264_frame_start, vp8_frame_start
from aiosfu.sfu.codecs import keyframe_detector
from tests.test_recording import analyse, decode_errors, probe

SECONDS = 4.0
VIDEO_STARTS = 0.5  # content time of the first video frame
MARKS = (1.0, 3.0)
NTP_BASE = 3_900_000_000  # seconds since 1900, any value


def ntp(seconds: float) -> int:
    return int((NTP_BASE + seconds) * (1 << 32))


def codec(mime_type: str) -> RTCRtpCodecParameters:
    kind = mime_type.split("/")[0]
    capability = next(c for c in get_capabilities(kind).codecs if c.mimeType == mime_type)
    return RTCRtpCodecParameters(
        mimeType=capability.mimeType,
        clockRate=capability.clockRate,
        channels=capability.channels,
        payloadType=96,
        parameters=dict(capability.parameters),
    )


class FakeProducer:
    """The Producer's sink API, and a publisher that obeys keyframe requests."""

    def __init__(self, mime_type: str) -> None:
        self.codec = codec(mime_type)
        self.kind = self.codec.mimeType.split("/")[0]
        self.sinks: list[Any] = []
        self.keyframe_requests = 0
        self.keyframe_wanted = False
        self.is_keyframe = keyframe_detector(mime_type)

    def add_sink(self, sink: Any) -> None:
        self.sinks.append(sink)

    def remove_sink(self, sink: Any) -> None:
        self.sinks.remove(sink)

    async def request_keyframe(self) -> bool:
        self.keyframe_requests += 1
        self.keyframe_wanted = True
        return True

    def deliver(self, packet: RtpPacket) -> None:
        keyframe = self.kind == "video" and self.is_keyframe(packet.payload)
        for sink in self.sinks:
            sink.on_rtp(packet, keyframe)

    def report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        for sink in self.sinks:
            sink.on_sender_report(ntp_timestamp, rtp_timestamp)


def audio_frame(index: int) -> AudioFrame:
    """20 ms of stereo: a beep on the left at the marks, a quiet tone on the right."""
    t = (np.arange(960) + index * 960) / 48000
    beep = np.zeros(960)
    for mark in MARKS:
        beep += np.sin(2 * np.pi * 1000 * t) * ((t >= mark) & (t < mark + 0.1))
    pcm = np.stack([beep * 0.5, np.sin(2 * np.pi * 300 * t) * 0.1]) * 32767
    frame = AudioFrame.from_ndarray(
        pcm.T.reshape(1, -1).astype(np.int16), format="s16", layout="stereo"
    )
    frame.sample_rate, frame.pts = 48000, index * 960
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


def video_frame(index: int) -> VideoFrame:
    """A moving bar, all white at the marks."""
    t = index / 30
    image = np.full((240, 320, 3), 40, np.uint8)
    image[:, (index * 4) % 320] = 255
    if any(mark <= t < mark + 0.1 for mark in MARKS):
        image[:] = 255
    frame = VideoFrame.from_ndarray(image, format="bgr24")
    frame.pts, frame.time_base = index * 3000, fractions.Fraction(1, 90000)
    return frame


class Stream:
    """One track's packets, numbered as a sender starting near the wrap would."""

    def __init__(self, producer: FakeProducer, seq: int, ts: int) -> None:
        self.producer = producer
        self.encoder = get_encoder(producer.codec)
        self.seq, self.ts_origin = seq, ts

    def packets(self, frame: Any) -> list[RtpPacket]:
        force = self.producer.keyframe_wanted
        self.producer.keyframe_wanted = False
        payloads, timestamp = self.encoder.encode(frame, force)
        out = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=96,
                sequence_number=self.seq,
                timestamp=(self.ts_origin + timestamp) & 0xFFFFFFFF,
                marker=int(i == len(payloads) - 1),
            )
            packet.payload = payload
            out.append(packet)
            self.seq = (self.seq + 1) & 0xFFFF
        return out


async def record_synthetic(
    tmp_path: Path,
    video_mime: str | None,
    *,
    loss: float,
    seed: int = 3,
    muted: tuple[float, float] | None = None,
) -> tuple[Recording, dict[str, Any], list[FakeProducer]]:
    rng = random.Random(seed)
    audio = FakeProducer("audio/opus")
    producers = [audio]
    streams = {"audio": Stream(audio, seq=65500, ts=0xFFFF0000)}
    if video_mime is not None:
        video = FakeProducer(video_mime)
        producers.append(video)
        streams["video"] = Stream(video, seq=65450, ts=0xFFFC0000)
    # Windows scaled to a feed about five times faster than real time.
    manager = RecordingManager(
        tmp_path, poll_interval=0.02, reorder_window=0.2, sync_wait=10.0, keyframe_retry=0.1
    )
    started = await manager.start("room", "teacher", "teacher#1", producers)

    # Sender Reports: the sender's wall clock at content time 0 is NTP_BASE.
    audio.report(ntp(0.0), streams["audio"].ts_origin)
    if video_mime is not None:
        video.report(ntp(0.0), streams["video"].ts_origin)

    queue: list[tuple[float, FakeProducer, RtpPacket]] = []
    late: list[tuple[int, FakeProducer, RtpPacket]] = []
    for step in range(int(SECONDS * 50)):
        t = step / 50
        for packet in streams["audio"].packets(audio_frame(step)):
            if muted is None or not muted[0] <= t < muted[1]:  # muted: nothing is sent
                queue.append((t, audio, packet))
        if video_mime is not None:
            for index in range(int(t * 30), int((t + 0.02) * 30)):
                if index / 30 >= VIDEO_STARTS:
                    # Delivered 0.3 s early: arrival order must not decide where it goes.
                    for packet in streams["video"].packets(video_frame(index)):
                        queue.append((t - 0.3, video, packet))
        queue.sort(key=lambda item: item[0])
        due = [item for item in queue if item[0] <= t]
        queue = [item for item in queue if item[0] > t]
        for _, producer, packet in due:
            if rng.random() < loss:
                continue
            if rng.random() < 0.05:
                late.append((step + 8, producer, packet))  # overtaken by the next ones
                continue
            producer.deliver(packet)
            if rng.random() < 0.02:
                producer.deliver(packet)  # a duplicate (a retransmission that was not needed)
        for _, producer, packet in [x for x in late if x[0] <= step]:
            producer.deliver(packet)
        late = [x for x in late if x[0] > step]
        await asyncio.sleep(0.004)  # the writer thread gets its turn; keyframe requests
    for _, producer, packet in queue + late:
        producer.deliver(packet)
    await asyncio.sleep(0.3)
    stats = manager.stats()["teacher#1"]
    stopped = await manager.stop("teacher#1", "requested")
    assert stopped is not None and stopped.file == started.file
    return stopped, stats, producers


@pytest.mark.parametrize(
    ("video_mime", "extension", "video_codec"),
    [("video/VP8", ".webm", "vp8"), ("video/H264", ".mkv", "h264"), (None, ".ogg", None)],
)
@pytest.mark.parametrize("loss", [0.0, 0.05])
async def test_rtp_clocks_and_sender_reports_place_every_frame(
    tmp_path: Path, video_mime: str | None, extension: str, video_codec: str | None, loss: float
) -> None:
    stopped, stats, producers = await record_synthetic(tmp_path, video_mime, loss=loss)
    path = tmp_path / stopped.file
    assert path.suffix == extension and stopped.reason == "requested" and not stopped.error
    assert path.stat().st_size == stopped.size
    assert decode_errors(path) == ""
    info = probe(path)
    assert info["streams"]["audio"]["channels"] == 2
    assert abs(info["duration"] - SECONDS) <= 0.1, info
    content = analyse(path)
    # Lost audio packets are concealed, so the audio still lasts as long as it was sent.
    assert abs(content.audio_seconds - SECONDS) <= 0.05, content
    # A lost packet leaves Opus's energy prediction off for a few frames: an onset
    # right after one is heard a little late.
    assert len(content.beeps) == len(MARKS), content.beeps
    for beep, mark in zip(content.beeps, MARKS, strict=True):
        assert abs(beep - mark) <= (0.08 if loss else 0.02), content.beeps
    assert content.right_rms > 5 * content.left_rms
    audio_stats = stats["tracks"][0]
    assert audio_stats["packetsReordered"] > 0 and audio_stats["packetsLate"] == 0
    if loss:
        assert audio_stats["packetsLost"] > 0
        assert audio_stats["framesConcealed"] == audio_stats["packetsLost"]
    else:  # every packet overtaken by others was waited for and put back in its place
        assert audio_stats["packetsLost"] == 0 and audio_stats["framesConcealed"] == 0
    if video_codec is None:
        assert "video" not in info["streams"]
        return
    assert info["streams"]["video"]["codec_name"] == video_codec
    video_stats = stats["tracks"][1]
    assert video_stats["packetsReordered"] > 0
    if not loss:
        assert video_stats["framesDropped"] == 0 and video_stats["packetsLost"] == 0
    assert content.first_video_keyframe
    with_keyframes = producers[1].keyframe_requests
    if loss:
        assert with_keyframes >= 1  # resumed at keyframes it asked for
        sent = (SECONDS - VIDEO_STARTS) * 30
        assert sent * 0.3 <= content.video_frames < sent, content  # lost some, not most
    else:
        assert len(content.flashes) == len(MARKS)
    # Each flash where its beep is (the beeps were checked against the marks above). With
    # loss the first white pictures may be among those skipped until a keyframe: the
    # flash then shows from a later one of its three pictures, never outside them.
    late = 0.1 if loss else 0.035
    assert all(any(m - 0.035 <= f <= m + late for m in MARKS) for f in content.flashes), content
    import av

    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        # The video began 0.5 s into the content, and was delivered before the audio.
        assert abs(first.time - VIDEO_STARTS) <= 0.04 + (0.5 if loss else 0.0)
    assert not [t for t in threading.enumerate() if t.name == "aiosfu-record"]


def test_file_names_stay_inside_the_directory() -> None:
    name = recording_name("../../etc", "a/b c", "a/b c#12ab", 0.0, ".webm")
    assert name.as_posix() == "_.._etc/19700101T000000Z_a_b_c_12ab.webm"
    assert recording_name("..", ".hidden", "x#1", 0.0, ".ogg").parts[0] == "_"
    assert not recording_name("..", ".hidden", "x#1", 0.0, ".ogg").name.startswith(".")


async def test_start_refusals(tmp_path: Path) -> None:
    manager = RecordingManager(tmp_path)
    with pytest.raises(SfuError) as info:
        await manager.start("r", "u", "u#1", [FakeProducer("audio/PCMU")])
    assert info.value.code == "codec-unsupported" and "audio/pcmu" in info.value.reason
    with pytest.raises(SfuError) as info:
        await manager.start("r", "u", "u#1", [])
    assert info.value.code == "codec-unsupported"
    (tmp_path / "file").write_text("")
    blocked = RecordingManager(tmp_path / "file" / "rec")
    with pytest.raises(SfuError) as info:
        await blocked.start("r", "u", "u#1", [FakeProducer("audio/opus")])
    assert info.value.code == "record-failed" and "Not a directory" in info.value.reason


async def test_nothing_received_leaves_no_file_and_starting_twice_is_one_recording(
    tmp_path: Path,
) -> None:
    started: list[Recording] = []
    stopped: list[Recording] = []
    manager = RecordingManager(tmp_path, on_started=started.append, on_stopped=stopped.append)
    producer = FakeProducer("audio/opus")
    first = await manager.start("r", "u", "u#1", [producer])
    assert await manager.start("r", "u", "u#1", [producer]) == first
    assert len(producer.sinks) == 1 and started == [first]
    result = await manager.stop("u#1", "requested")
    assert result is not None and result.size == 0 and result.duration == 0
    assert not (tmp_path / first.file).exists()
    assert producer.sinks == [] and stopped == [result]
    assert await manager.stop("u#1", "requested") is None


def test_frame_start_detectors_match_the_producers() -> None:
    # The recorder's frame-start check and the SFU's keyframe check agree on keyframes.
    assert vp8_frame_start(bytes([0x10, 0x00])) and keyframe_detector("video/VP8")(
        bytes([0x10, 0x00, 0x00])
    )
    assert h264_frame_start(bytes([0x67, 0x42])) and keyframe_detector("video/H264")(
        bytes([0x67, 0x42])
    )


def test_muxer_opens_no_codec(tmp_path: Path) -> None:
    """Streams are made from templates: parameters only, no encoder is ever opened."""
    from aiosfu.record.bitstream import opus_head
    from aiosfu.record.muxer import Muxer, file_format

    muxer = Muxer(str(tmp_path / "x.webm"), file_format(["audio/opus", "video/VP8"]))
    muxer.add_opus(2)
    muxer.add_video("video/VP8", 320, 240)
    muxer.start()
    contexts = [o.stream.codec_context for o in muxer.outputs]
    assert not any(c.is_open for c in contexts)
    assert contexts[0].extradata == opus_head(2)
    assert muxer.write(0, b"\xfc\xff\xfe", 0.0, 0.02, True)
    assert not muxer.write(0, b"\xfc\xff\xfe", 0.0, 0.02, True)  # back in time: refused
    muxer.close()
    assert probe(tmp_path / "x.webm")["streams"]["video"]["width"] == 320


async def test_stop_does_not_wait_on_hung_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiosfu.record.muxer import Muxer

    release = threading.Event()
    close = Muxer.close
    monkeypatch.setattr(Muxer, "close", lambda self: (release.wait(10), close(self)))
    stopped: list[Recording] = []
    manager = RecordingManager(tmp_path, on_stopped=stopped.append, sync_wait=0.0, stop_timeout=0.3)
    audio = FakeProducer("audio/opus")
    stream = Stream(audio, seq=1, ts=0)
    await manager.start("r", "u", "u#1", [audio])
    for index in range(25):
        for packet in stream.packets(audio_frame(index)):
            audio.deliver(packet)
    await asyncio.sleep(0.6)  # past the reorder window: written
    loop = asyncio.get_running_loop()
    asked = loop.time()
    result = await manager.stop("u#1", "unpublished")
    assert loop.time() - asked < 1.0  # an unpublish is not held up by the disk
    assert result is not None and "still closing" in result.error
    release.set()
    for _ in range(100):
        if stopped:
            break
        await asyncio.sleep(0.05)
    assert [r.reason for r in stopped] == ["unpublished"] and stopped[0].size > 0
    assert decode_errors(tmp_path / stopped[0].file) == ""


def test_paused_camera_does_not_hold_the_microphone_back(tmp_path: Path) -> None:
    """With VP8, FFmpeg's interleaver would keep audio queued until the next picture."""
    import shutil

    from aiosfu.record.muxer import Muxer, file_format

    path = tmp_path / "paused.webm"
    muxer = Muxer(str(path), file_format(["audio/opus", "video/VP8"]))
    audio_index = muxer.add_opus(2)
    video_index = muxer.add_video("video/VP8", 320, 240)
    muxer.start()
    stream = Stream(FakeProducer("audio/opus"), seq=1, ts=0)
    encoder = get_encoder(codec("video/VP8"))
    keyframe = encoder.encode(video_frame(0), True)[0]
    picture = b"".join(vp8_depayload(p) for p in keyframe)
    assert muxer.write(video_index, picture, 0.0, 0.0, True)
    for index in range(250):  # five seconds of sound, not one picture
        for packet in stream.packets(audio_frame(index)):
            muxer.write(audio_index, packet.payload, index * 0.02, 0.02, True)
        muxer.pulse()
    killed = tmp_path / "killed.webm"
    shutil.copy(path, killed)  # what a kill -9 now would leave
    muxer.close()
    assert decode_errors(killed) == ""
    assert analyse(killed).audio_seconds >= 3.0  # written although the camera paused
    assert analyse(path).video_frames == 1 and abs(probe(path)["duration"] - 5.0) < 0.05


async def test_a_muted_microphone_leaves_the_audio_aligned(tmp_path: Path) -> None:
    """The publisher sends no audio for 1.1 s (muted, or DTX silence) while video goes on."""
    stopped, stats, _ = await record_synthetic(tmp_path, "video/VP8", loss=0.0, muted=(1.5, 2.6))
    path = tmp_path / stopped.file
    assert decode_errors(path) == ""
    content = analyse(path)
    assert abs(content.audio_seconds - SECONDS) <= 0.05, content
    assert stats["tracks"][0]["framesConcealed"] == 55  # 1.1 s of 20 ms packets
    assert len(content.beeps) == len(content.flashes) == len(MARKS), content
    assert max(content.sync_errors()) <= 0.035, content  # the beep at 3 s is still at 3 s
