"""Recording through a real `aiosfu serve`: aiortc publishers stream a known 10 s clip,
the files are checked with Debian's ffprobe/ffmpeg and decoded with PyAV.

The clip flashes the picture white and beeps (left channel only) at 1, 3, 5, 7 and 9 s,
over a moving test pattern and a quiet 300 Hz tone on the right channel: the flashes
and beeps found in a recording show whether audio and video stayed aligned, and the
right channel shows whether stereo survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer

from aiosfu.client import Client, SignalingError
from tests.conftest import ROOT, ServerProcess, free_port, start_server, stop_server, wait_for
from tests.media import FrameCounter, PatternTrack, ToneTrack, wait_for_track

pytestmark = pytest.mark.media

CLIP_SECONDS = 10.0
MARKS = [1.0, 3.0, 5.0, 7.0, 9.0]  # flash + beep, 100 ms each
DURATION_TOLERANCE = 0.3
SYNC_TOLERANCE = 0.1  # audio vs video at each mark, seconds


# --- the clip and what a recording of it must show ------------------------------------


def make_clip(path: Path, seconds: float = CLIP_SECONDS, video: bool = True) -> Path:
    marks = "lt(mod(t-1\\,2)\\,0.1)"
    inputs = []
    if video:
        flash = f"drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='{marks}'"
        inputs += ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds},{flash}"]
    beep = f"0.5*sin(2*PI*1000*t)*{marks}|0.1*sin(2*PI*300*t)"
    inputs += ["-f", "lavfi", "-i", f"aevalsrc='{beep}':s=48000:d={seconds}:c=stereo"]
    codecs = ["-c:v", "mpeg4", "-q:v", "3"] if video else []
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *inputs, *codecs, "-c:a", "pcm_s16le", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mkv")


@pytest.fixture(scope="session")
def audio_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mka", video=False)


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-of", "json", "-show_entries",
            "format=format_name,duration:stream=codec_type,codec_name,channels,width,height",
            str(path),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    info = json.loads(out)
    return {
        "format": info["format"]["format_name"],
        "duration": float(info["format"].get("duration", "nan")),
        "streams": {s["codec_type"]: s for s in info["streams"]},
    }


def _ffmpeg_null(path: Path, *options: str) -> str:
    run = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), *options, "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    return run.stderr.strip() + ("" if run.returncode == 0 else f"\n(exit {run.returncode})")


NULL_MUXER_CFR = "non monotonically increasing dts to muxer"


def decode_errors(path: Path, jittery_capture: bool = False) -> str:
    """What `ffmpeg -v error -i file -f null -` says while decoding the whole file.

    With `jittery_capture` (a browser's camera timestamps), one complaint is set aside:
    ffmpeg 5.1 gives the null muxer a constant frame rate guessed from the stream (say
    20 fps) and, when two pictures captured 27 ms apart round to the same 50 ms tick,
    its *muxer* refuses the second. Nothing failed to decode; the same decode with the
    file's own time base (`-enc_time_base -1`) must then be entirely silent.
    """
    said = _ffmpeg_null(path)
    if not jittery_capture:
        return said
    left = [line for line in said.splitlines() if NULL_MUXER_CFR not in line]
    return "\n".join([*left, _ffmpeg_null(path, "-enc_time_base", "-1")]).strip()


@dataclass
class Content:
    """What decoding a recording shows."""

    flashes: list[float] = field(default_factory=list)
    beeps: list[float] = field(default_factory=list)
    audio_seconds: float = 0.0  # decoded samples / rate: gaps not concealed shrink this
    video_frames: int = 0
    first_video_keyframe: bool = False
    left_rms: float = 0.0  # outside the beeps: the left channel is silent...
    right_rms: float = 0.0  # ...and the right has its tone, unless stereo was lost
    channels: int = 0

    def sync_errors(self) -> list[float]:
        """For each flash, how far the nearest beep is."""
        return [min((abs(b - f) for b in self.beeps), default=99.0) for f in self.flashes]


def _onsets(times: list[float], values: list[bool], gap: float) -> list[float]:
    out: list[float] = []
    last_on = -99.0
    for t, on in zip(times, values, strict=True):
        if on:
            if t - last_on > gap:
                out.append(t)
            last_on = t
    return out


def analyse(path: Path) -> Content:
    content = Content()
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        if video is not None:
            packet = next(p for p in container.demux(video) if p.size)
            content.first_video_keyframe = packet.is_keyframe
            container.seek(0)
            times, bright = [], []
            for frame in container.decode(video):
                times.append(float(frame.time))
                bright.append(frame.to_ndarray(format="gray").mean() > 180)
            content.flashes = _onsets(times, bright, gap=0.5)
            content.video_frames = len(times)
            container.seek(0)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        content.channels = audio.codec_context.channels
        samples = []
        start = None
        for frame in container.decode(audio):
            if start is None:
                start = float(frame.time)
            samples.append(frame.to_ndarray().reshape(audio.codec_context.channels, -1)[:, :])
        pcm = np.concatenate(samples, axis=1).astype(np.float64)
    rate = 48000
    content.audio_seconds = pcm.shape[1] / rate
    window = rate // 100
    left = pcm[0]
    rms = np.sqrt(np.mean(left[: len(left) // window * window].reshape(-1, window) ** 2, axis=1))
    times = [(start or 0.0) + i / 100 for i in range(len(rms))]
    content.beeps = _onsets(times, list(rms > 0.02), gap=0.5)  # the left is silent between
    if pcm.shape[0] == 2:
        quiet = np.ones(pcm.shape[1], bool)  # away from every beep
        for beep in content.beeps:
            a = int((beep - (start or 0.0) - 0.1) * rate)
            quiet[max(a, 0) : a + int(0.4 * rate)] = False
        content.left_rms = float(np.sqrt(np.mean(pcm[0][quiet] ** 2)))
        content.right_rms = float(np.sqrt(np.mean(pcm[1][quiet] ** 2)))
    return content


def check_clip_recording(
    path: Path,
    codec: str | None,
    channels: int,
    expected: float = CLIP_SECONDS,
    sync_tolerance: float = SYNC_TOLERANCE,
) -> Content:
    """The checks every recording of the clip passes; returns what was found."""
    info = probe(path)
    assert info["streams"]["audio"]["codec_name"] == "opus"
    assert info["streams"]["audio"]["channels"] == channels
    if codec is not None:
        assert info["streams"]["video"]["codec_name"] == codec
        assert (info["streams"]["video"]["width"], info["streams"]["video"]["height"]) == (
            320,
            240,
        )
    else:
        assert "video" not in info["streams"]
    assert abs(info["duration"] - expected) <= DURATION_TOLERANCE, info
    assert decode_errors(path) == ""
    content = analyse(path)
    assert abs(content.audio_seconds - expected) <= DURATION_TOLERANCE, content
    assert len(content.beeps) == len(MARKS), content.beeps
    if codec is not None:
        assert content.first_video_keyframe
        assert len(content.flashes) == len(MARKS), content.flashes
        assert max(content.sync_errors()) <= sync_tolerance, (content.flashes, content.beeps)
    if channels == 2:
        assert content.right_rms > 5 * content.left_rms, "stereo was collapsed"
    return content


# --- publishing -----------------------------------------------------------------------


@dataclass
class Publisher:
    client: Client
    pc: RTCPeerConnection
    mid: str
    player: MediaPlayer | None = None

    async def close(self) -> None:
        await self.pc.close()
        await self.client.close()


async def publish(
    server: ServerProcess,
    uid: str,
    rid: str,
    tracks: list[Any],
    *,
    video_codec: str | None = None,
    before_answer: Callable[[RTCPeerConnection], None] | None = None,
) -> Publisher:
    """Publish like the SDK does, with the video codec chosen (aiortc offers VP8 first)."""
    client = await Client.connect(server.ws_url, uid)
    await client.join(rid)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for track in tracks:
        transceiver = pc.addTransceiver(track, direction="sendonly")
        if track.kind == "video" and video_codec is not None:
            codecs = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in codecs if c.mimeType in (video_codec, "video/rtx")]
            )
    await pc.setLocalDescription(await pc.createOffer())
    kinds = {t.kind for t in tracks}
    result = await client.request(
        "publish",
        {
            "rid": rid,
            "jsep": {"type": "offer", "sdp": pc.localDescription.sdp},
            "minfo": {"audio": "audio" in kinds, "video": "video" in kinds},
        },
    )
    if before_answer is not None:
        before_answer(pc)
    await pc.setRemoteDescription(RTCSessionDescription(**result["jsep"]))
    return Publisher(client, pc, result["mid"])


async def publish_clip(
    server: ServerProcess, uid: str, rid: str, clip: Path, **options: Any
) -> Publisher:
    player = MediaPlayer(str(clip))
    tracks = [t for t in (player.audio, player.video) if t is not None]
    publisher = await publish(server, uid, rid, tracks, **options)
    publisher.player = player
    return publisher


async def recording(server: ServerProcess, mid: str) -> dict[str, Any] | None:
    return (await server.stats())["sfu"]["recordings"].get(mid)


async def wait_until_clip_ends(server: ServerProcess, mids: list[str]) -> None:
    """Until every recording has written the whole clip and nothing more arrives."""

    async def ended() -> bool:
        for mid in mids:
            rec = await recording(server, mid)
            if rec is None or rec["duration"] < CLIP_SECONDS - 0.5:
                return False
        before = [await recording(server, mid) for mid in mids]
        await asyncio.sleep(0.5)
        after = [await recording(server, mid) for mid in mids]
        packets = lambda recs: [sum(t["packetsIn"] for t in r["tracks"]) for r in recs]  # noqa: E731
        return packets(before) == packets(after)

    await wait_for(ended, timeout=CLIP_SECONDS + 15, interval=0.5)


def record_dir(server: ServerProcess) -> Path:
    return Path(server.extra_args[server.extra_args.index("--record-dir") + 1])


@pytest.fixture
def recording_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """Records every publication, into tmp_path/rec."""
    server = start_server(tmp_path, "--record-dir", str(tmp_path / "rec"), "--record-all")
    yield server
    stop_server(server)


# --- the tests --------------------------------------------------------------------------


async def test_vp8_and_opus_clip_to_webm_and_opus_alone_to_ogg(
    recording_server: ServerProcess, clip: Path, audio_clip: Path
) -> None:
    server = recording_server
    teacher = await publish_clip(server, "teacher", "lesson", clip)
    voice = await publish_clip(server, "voice", "lesson", audio_clip)
    watcher = await Client.connect(server.ws_url, "watcher")
    await watcher.join("lesson")
    await wait_until_clip_ends(server, [teacher.mid, voice.mid])
    files = {}
    for publisher in (teacher, voice):
        await publisher.client.request(
            "unpublish", {"rid": "lesson", "mid": publisher.mid, "sfuid": ""}
        )
        stopped = await watcher.signaling.wait_for(
            "record-stopped", lambda d, mid=publisher.mid: d["mid"] == mid
        )
        assert stopped["reason"] == "unpublished" and stopped["error"] == ""
        files[publisher.mid] = record_dir(server) / stopped["file"]
        await publisher.close()
    await watcher.close()

    webm, ogg = files[teacher.mid], files[voice.mid]
    assert webm.suffix == ".webm" and ogg.suffix == ".ogg"
    assert webm.parent.name == ogg.parent.name == "lesson"
    assert webm.name.split("_")[1] == "teacher"  # <UTC start>_<publisher>_<publication>
    assert probe(webm)["format"] == "matroska,webm" and probe(ogg)["format"] == "ogg"
    content = check_clip_recording(webm, "vp8", channels=2)
    check_clip_recording(ogg, None, channels=2)
    print(f"webm sync errors (s): {[round(e, 3) for e in content.sync_errors()]}")
    stats = await server.stats()
    assert stats["sfu"]["recordings"] == {}
    assert stats["sfu"]["threads"] == ["MainThread"], "the writer threads ended with recording"


async def test_h264_clip_to_matroska_in_a_room_configured_to_record(
    tmp_path: Path, clip: Path
) -> None:
    config = tmp_path / "aiosfu.toml"
    config.write_text(f'record_dir = "{tmp_path / "rec"}"\nrecord_rooms = ["maths"]\n')
    server = start_server(tmp_path, "--config", str(config))
    try:
        other = await publish(server, "other", "chat", [ToneTrack()])  # not a recorded room
        teacher = await publish_clip(server, "teacher", "maths", clip, video_codec="video/H264")
        stats = await server.stats()
        codecs = [p["codec"] for p in stats["sfu"]["publications"][teacher.mid]["producers"]]
        assert "video/H264" in codecs
        assert other.mid not in stats["sfu"]["recordings"]
        await wait_until_clip_ends(server, [teacher.mid])
        await teacher.client.leave("maths")  # leaving closes the file too

        async def closed() -> bool:
            return await recording(server, teacher.mid) is None

        await wait_for(closed, 5)
        assert "reason=unpublished" in server.log()
        (path,) = (tmp_path / "rec" / "maths").glob("*.mkv")
        assert not (tmp_path / "rec" / "chat").exists()
        check_clip_recording(path, "h264", channels=2)
        await teacher.close()
        await other.close()
    finally:
        stop_server(server)


# --- impaired network -------------------------------------------------------------------


class Impairment:
    """Loses and reorders the publisher's RTP on its way out, under SRTP, like a network.

    aiortc has no hook for this, so the ICE transport's send is wrapped (test-side only).
    RTCP, STUN and DTLS pass untouched; retransmissions are RTP and suffer too.
    """

    def __init__(self, loss: float, reorder: float, delay: float, seed: int = 5) -> None:
        self.loss, self.reorder, self.delay = loss, reorder, delay
        self.rng = random.Random(seed)
        self.rtp = self.dropped = self.delayed = 0
        self._late: set[asyncio.Task[None]] = set()

    def install(self, pc: RTCPeerConnection) -> None:
        for transceiver in pc.getTransceivers():
            ice = transceiver.sender.transport.transport
            if getattr(ice, "impaired", False):
                continue
            ice.impaired = True
            ice._send = self._wrap(ice._send)

    def _wrap(self, send: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
        async def impaired_send(data: bytes) -> None:
            is_rtp = len(data) > 12 and 128 <= data[0] < 192 and not 64 <= data[1] & 0x7F < 96
            if is_rtp:
                self.rtp += 1
                draw = self.rng.random()
                if draw < self.loss:
                    self.dropped += 1
                    return
                if draw < self.loss + self.reorder:
                    self.delayed += 1
                    await asyncio.sleep(0)  # let later packets overtake this one
                    task = asyncio.ensure_future(self._send_late(send, data))
                    self._late.add(task)
                    task.add_done_callback(self._late.discard)
                    return
            await send(data)

        return impaired_send

    async def _send_late(self, send: Callable[[bytes], Any], data: bytes) -> None:
        await asyncio.sleep(self.delay)
        with contextlib.suppress(ConnectionError):
            await send(data)


@pytest.fixture
def near_wraparound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test publisher's RTP sequence numbers and timestamps wrap mid-clip."""
    import aiortc.rtcrtpsender as sender

    values = iter(range(0xFFFD0000, 0xFFFFFFFF, 0x1001))  # SSRCs and timestamp origins
    monkeypatch.setattr(sender, "random32", lambda: next(values))
    monkeypatch.setattr(sender, "random_sequence_number", lambda: 65536 - 200)


async def test_loss_reordering_and_wraparound_keep_the_file_whole_and_in_sync(
    recording_server: ServerProcess, clip: Path, near_wraparound: None
) -> None:
    server = recording_server
    network = Impairment(loss=0.05, reorder=0.05, delay=0.03)
    teacher = await publish_clip(server, "teacher", "lesson", clip, before_answer=network.install)
    await wait_until_clip_ends(server, [teacher.mid])
    stats = (await recording(server, teacher.mid))["tracks"]  # type: ignore[index]
    await teacher.client.request("unpublish", {"rid": "lesson", "mid": teacher.mid})
    await teacher.close()

    async def closed() -> bool:
        return await recording(server, teacher.mid) is None

    await wait_for(closed, 5)
    (path,) = (record_dir(server) / "lesson").glob("*.webm")
    audio, video = (next(t for t in stats if t["kind"] == k) for k in ("audio", "video"))
    print(f"impairment: {network.rtp} RTP, {network.dropped} lost, {network.delayed} late")
    print(f"recorder: audio {audio}\n          video {video}")
    assert network.dropped > 20 and network.delayed > 20
    # What the network lost, the recorder saw lost (audio: no retransmission) or got back.
    assert audio["packetsLost"] > 5 and audio["framesConcealed"] >= audio["packetsLost"]
    assert audio["packetsReordered"] + video["packetsReordered"] > 10
    # An Opus packet lost right at a beep delays the heard onset by a frame or two (the
    # decoder's energy prediction recovers over a few frames): a little more slack here.
    content = check_clip_recording(path, "vp8", channels=2, sync_tolerance=0.15)
    print(f"sync errors (s): {[round(e, 3) for e in content.sync_errors()]}")


# --- killed, failing, asked --------------------------------------------------------------


async def test_sigkill_leaves_what_was_written_playable(
    recording_server: ServerProcess, clip: Path
) -> None:
    server = recording_server
    teacher = await publish_clip(server, "teacher", "lesson", clip)

    async def recorded(seconds: float) -> bool:
        rec = await recording(server, teacher.mid)
        return rec is not None and rec["duration"] >= seconds

    await wait_for(lambda: recorded(6.0), 15)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    await teacher.close()
    (path,) = (record_dir(server) / "lesson").glob("*.webm")
    assert decode_errors(path) == ""
    content = analyse(path)
    assert content.audio_seconds >= 4.5, content  # at most about a second is lost
    assert content.video_frames >= 4.5 * 30 * 0.9, content
    assert content.first_video_keyframe
    assert len(content.flashes) >= 2 and max(content.sync_errors()) <= SYNC_TOLERANCE


async def test_record_and_stop_record_requests(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--record-dir", str(tmp_path / "rec"))
    try:
        teacher = await Client.connect(server.ws_url, "teacher")
        await teacher.join("lesson")
        publication = await teacher.publish("lesson", [ToneTrack(), PatternTrack(320, 240)])
        mid = publication.mid
        student = await Client.connect(server.ws_url, "student")
        await student.join("lesson")
        outsider = await Client.connect(server.ws_url, "outsider")
        await outsider.join("other-room")

        async def refused(client: Client, method: str, data: dict[str, Any]) -> str:
            with pytest.raises(SignalingError) as info:
                await client.request(method, data)
            assert info.value.reason
            return info.value.code

        assert await refused(outsider, "record", {"rid": "lesson", "mid": mid}) == "not-in-room"
        assert await refused(student, "record", {"rid": "lesson", "mid": "nope#1"}) == "unknown-mid"
        assert await refused(student, "record", {"rid": "lesson"}) == "invalid-params"
        assert await refused(student, "stop-record", {"rid": "lesson", "mid": mid}) == (
            "not-recording"
        )

        await asyncio.sleep(2.0)  # well past the publisher's first keyframe
        started = await student.record("lesson", mid)
        begun = asyncio.get_running_loop().time()
        assert started["mid"] == mid and started["uid"] == "teacher" and "reason" not in started
        assert (await student.request("record", {"rid": "lesson", "mid": mid})) == started
        notified = await teacher.signaling.wait_for("record-started")
        assert notified["file"] == started["file"]
        await asyncio.sleep(3.0)
        stopped = await student.stop_record("lesson", mid)
        elapsed = asyncio.get_running_loop().time() - begun
        assert stopped["file"] == started["file"] and stopped["reason"] == "requested"
        assert abs(stopped["duration"] - elapsed) <= DURATION_TOLERANCE, (stopped, elapsed)
        path = tmp_path / "rec" / stopped["file"]
        assert path.stat().st_size == stopped["size"] > 0
        assert decode_errors(path) == ""
        info = probe(path)
        assert abs(info["duration"] - stopped["duration"]) <= 0.1
        assert info["streams"]["audio"]["channels"] == 2  # ToneTrack is stereo
        assert analyse(path).first_video_keyframe  # asked for mid-stream: starts on one
        await teacher.signaling.wait_for("record-stopped")

        # A publisher whose socket just goes away: its recording is closed, the room told.
        second = await student.request("record", {"rid": "lesson", "mid": mid})
        assert second["file"] != started["file"]
        await asyncio.sleep(1.5)
        await teacher.close()
        gone = await student.signaling.wait_for(
            "record-stopped", lambda d: d["file"] == second["file"]
        )
        assert gone["reason"] == "unpublished" and gone["size"] > 0
        assert decode_errors(tmp_path / "rec" / gone["file"]) == ""
        stats = await server.stats()
        assert stats["sfu"]["recordings"] == {} and stats["sfu"]["threads"] == ["MainThread"]

        # Shutdown closes what is still being written, trailer and all.
        third = await student.publish("lesson", [ToneTrack(), PatternTrack(320, 240)])
        last = await student.request("record", {"rid": "lesson", "mid": third.mid})
        await asyncio.sleep(2.5)
    finally:
        stop_server(server)  # SIGTERM, while the student is still publishing
    await student.close()
    await outsider.close()
    assert f"file={last['file']}" in server.log()  # logged as stopped
    path = tmp_path / "rec" / last["file"]
    assert decode_errors(path) == ""
    # Only a file closed properly has its Duration (a killed one has none).
    assert abs(probe(path)["duration"] - 2.5) <= 0.5


async def subscriber_frames(server: ServerProcess, rid: str, mid: str) -> FrameCounter:
    client = await Client.connect(server.ws_url, "watcher")
    await client.join(rid)
    subscription = await client.subscribe(rid, mid)
    counter = FrameCounter(await wait_for_track(subscription, "video")).start()
    counter.client = client  # type: ignore[attr-defined]
    return counter


async def test_unwritable_directory_fails_the_request_not_the_publication(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    server = start_server(
        tmp_path, "--record-dir", str(tmp_path / "a-file" / "rec"), "--record-all"
    )
    try:
        teacher = await Client.connect(server.ws_url, "teacher")
        await teacher.join("lesson")
        publication = await teacher.publish("lesson", [ToneTrack(), PatternTrack(320, 240)])
        told = await teacher.signaling.wait_for("record-stopped")
        assert told["reason"] == "error" and told["file"] is None
        assert "Not a directory" in told["error"]
        with pytest.raises(SignalingError) as info:
            await teacher.request("record", {"rid": "lesson", "mid": publication.mid})
        assert info.value.code == "record-failed" and "Not a directory" in info.value.reason
        frames = await subscriber_frames(server, "lesson", publication.mid)
        await wait_for(lambda: frames.frames >= 30, 10)
        await frames.stop()
        await frames.client.close()  # type: ignore[attr-defined]
        await teacher.close()
    finally:
        stop_server(server)


def start_server_on_tiny_disk(tmp_path: Path, size: str, *args: str) -> ServerProcess:
    """`aiosfu serve` in a mount namespace of its own, recording onto a tmpfs of `size`."""
    disk = tmp_path / "disk"
    disk.mkdir()
    port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    mount = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    serve = [sys.executable, "-m", "aiosfu", "serve", "--host", "127.0.0.1", "--port", str(port)]
    serve += ["--ice-ip", "127.0.0.1", "--record-dir", str(disk), *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "sh", "-c", mount, "sh", size, str(disk), *serve],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    server = ServerProcess(proc=proc, port=port, log_path=log_path, extra_args=serve[6:])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return server
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"server did not start:\n{server.log()}")


async def test_disk_full_stops_the_recording_not_the_forwarding(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    server = start_server_on_tiny_disk(tmp_path, "150k", "--record-all")
    try:
        teacher = await Client.connect(server.ws_url, "teacher")
        await teacher.join("lesson")
        publication = await teacher.publish("lesson", [ToneTrack(), PatternTrack(320, 240)])
        frames = await subscriber_frames(server, "lesson", publication.mid)
        told = await teacher.signaling.wait_for("record-stopped", timeout=30)
        assert told["reason"] == "error" and "No space left on device" in told["error"], told
        assert told["size"] > 100_000
        before = frames.frames
        await asyncio.sleep(1.5)
        assert frames.frames >= before + 30, "forwarding went on while the disk was full"
        stats = await server.stats()
        assert stats["sfu"]["recordings"] == {}
        assert stats["sfu"]["threads"] == ["MainThread"]
        await frames.stop()
        await frames.client.close()  # type: ignore[attr-defined]
        await teacher.close()
    finally:
        stop_server(server)
