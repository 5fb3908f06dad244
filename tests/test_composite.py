"""`aiosfu composite`: a room mixed into one stream by a worker process, checked from the
outside with ffprobe and by decoding what it wrote.

Publishers are aiortc peers with a solid colour and a tone each (blue and quiet at 440 Hz,
red and loud at 880 Hz), so the tiles, the speaker and the mix can be told apart in the
output. The worker runs exactly the commands of docs/composite.md, with the ports, paths
and `--ice-ip` of this namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AUDIO_PTIME

from aiosfu.client import Client, Publication
from aiosfu.composite.audio import AudioBuffer, mix, rms
from aiosfu.composite.canvas import Canvas, Tile
from aiosfu.composite.layout import Rect, grid, layout
from aiosfu.composite.speaker import ActiveSpeaker
from tests.conftest import ROOT, ServerProcess, free_port, start_server, stop_server, wait_for

pytestmark = pytest.mark.media

DOC = ROOT / "docs" / "composite.md"
ROOM = "lobby"
BLUE, RED, GREEN = (20, 40, 230), (230, 30, 20), (30, 200, 40)
QUIET, LOUD = (440.0, 0.04), (880.0, 0.3)  # Hz, amplitude of full scale


# --- the publishers ---------------------------------------------------------------------


FLASH_EVERY, FLASH_FOR = 2.0, 0.2  # seconds: a white picture and a beep together
SYNC_TOLERANCE = 0.1  # seconds between a flash and its beep in the output


def flashing(t: np.ndarray | float) -> np.ndarray | bool:
    return (t % FLASH_EVERY) < FLASH_FOR


class ColourTrack(MediaStreamTrack):
    """30 fps of one colour; `flash` turns it white with the beeps, `stall` (seconds of
    its own clock, from, to) sends nothing in between, as a frozen camera does."""

    kind = "video"

    def __init__(
        self, rgb: tuple[int, int, int], flash: bool = False,
        stall: tuple[float, float] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.image = np.full((240, 320, 3), rgb, np.uint8)
        self.white = np.full((240, 320, 3), 255, np.uint8)
        self.flash, self.stall = flash, stall
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        self._start = self._start or loop.time()
        t = self.sent / 30
        if self.stall and self.stall[0] <= t < self.stall[1]:
            self.sent = math.ceil(self.stall[1] * 30)
            t = self.sent / 30
        wait = self._start + t - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.sent += 1
        white = self.flash and flashing(t)
        frame = av.VideoFrame.from_ndarray(self.white if white else self.image, format="rgb24")
        frame.pts, frame.time_base = int(t * 90000), fractions.Fraction(1, 90000)
        return frame


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self, frequency: float, amplitude: float, beep: bool = False) -> None:
        super().__init__()
        self.frequency, self.amplitude, self.beep = frequency, amplitude, beep
        self.samples = int(AUDIO_PTIME * 48000)
        self.sent = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        self._start = self._start or loop.time()
        wait = self._start + self.sent / 48000 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(self.samples) + self.sent) / 48000
        wave = np.sin(2 * math.pi * self.frequency * t) * self.amplitude * 32767
        if self.beep:
            wave *= flashing(t)
        mono = wave.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(
            np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate, frame.pts = 48000, self.sent
        frame.time_base = fractions.Fraction(1, 48000)
        self.sent += self.samples
        return frame


async def publisher(
    server: ServerProcess, uid: str, rgb: tuple[int, int, int], tone: tuple[float, float],
    token: str | None = None, flash: bool = False, stall: tuple[float, float] | None = None,
) -> tuple[Client, Publication]:  # fmt: skip
    client = await Client.connect(server.ws_url, uid, token=token, ice_ips=["127.0.0.1"])
    await client.join(ROOM)
    tracks = [ColourTrack(rgb, flash, stall), Tone(*tone, beep=flash)]
    publication = await client.publish(ROOM, tracks)
    await wait_for(lambda: publication.pc.connectionState == "connected", 10)
    return client, publication


# --- the worker, as documented -----------------------------------------------------------


def documented(option: str) -> list[str]:
    """The doc's `aiosfu composite` line that uses `option`, split as a shell would."""
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("aiosfu composite")]
    return shlex.split(next(line for line in lines if f" {option} " in line))


def nginx_conf() -> str:
    doc = DOC.read_text()
    return doc.split("```nginx\n", 1)[1].split("```", 1)[0]


@dataclass
class Worker:
    proc: asyncio.subprocess.Process
    log_path: Path
    started_at: float = 0.0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, *needles: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if self.proc.returncode is not None:
                raise AssertionError(f"the worker exited:\n{self.log()}")
            return any(all(n in line for n in needles) for line in self.log().splitlines())

        await wait_for(seen, timeout, interval=0.1)

    async def finish(self, timeout: float = 30) -> float:
        """Waits for the exit; the seconds of output it says it wrote."""
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        assert code == 0, self.log()
        stopped = next(line for line in self.log().splitlines() if "composite-stopped" in line)
        return float(stopped.split("seconds=")[1].split()[0])


async def start_worker(
    argv: list[str], server: ServerProcess, tmp_path: Path, **replace: str
) -> Worker:
    assert argv[:2] == ["aiosfu", "composite"]
    replace = {"ws://127.0.0.1:8080/ws": server.ws_url, **replace}
    args = []
    for arg in argv[2:]:
        for old, new in replace.items():
            arg = arg.replace(old, new)
        args.append(arg)
    log_path = tmp_path / "composite.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosfu", "composite", *args, "--ice-ip", "127.0.0.1",
        cwd=tmp_path, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = Worker(proc, log_path)
    await worker.wait_log("composite-started")
    worker.started_at = time.monotonic()
    return worker


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    try:
        yield worker
    finally:
        if worker.proc.returncode is None:
            worker.proc.kill()
            await worker.proc.wait()


# --- reading the output -------------------------------------------------------------------


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out)


def check_streams(info: dict[str, Any], fps: int | None) -> None:
    streams = {s["codec_type"]: s for s in info["streams"]}
    video, audio = streams["video"], streams["audio"]
    assert (video["codec_name"], video["width"], video["height"]) == ("h264", 1280, 720)
    assert video["pix_fmt"] == "yuv420p"
    if fps is not None:
        assert video["r_frame_rate"] == f"{fps}/1"
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", 48000, 2)


def colours(frame: av.VideoFrame) -> dict[str, float]:
    """The share of the canvas each publisher's colour covers."""
    image = frame.reformat(width=320, height=180, format="rgb24").to_ndarray().astype(int)
    shares = {}
    for name, rgb in (("blue", BLUE), ("red", RED), ("green", GREEN)):
        near = np.abs(image - np.array(rgb)).max(axis=2) < 40
        shares[name] = float(near.mean())
    return shares


def video_frames(path: Path) -> list[tuple[float, dict[str, float]]]:
    with av.open(str(path)) as container:
        return [
            (float(frame.time), colours(frame)) for frame in container.decode(video=0)
        ]  # fmt: skip


def audio_between(path: Path, start: float, end: float) -> np.ndarray:
    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        for frame in container.decode(audio=0):
            if frame.time is not None and start <= frame.time < end:
                for mono in resampler.resample(frame):
                    chunks.append(mono.to_ndarray().reshape(-1))
    return np.concatenate(chunks).astype(float)


def amplitudes(samples: np.ndarray, *frequencies: float) -> list[float]:
    """The amplitude of each tone in `samples`, as a fraction of full scale (a sine of
    amplitude A peaks at A * N / 4 in the spectrum of N samples under a Hann window)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    bins = np.fft.rfftfreq(len(samples), 1 / 48000)
    peaks = [float(spectrum[np.abs(bins - f) < 5].max()) for f in frequencies]
    return [peak * 4 / len(samples) / 32768 for peak in peaks]


def brightness(path: Path) -> list[tuple[float, bool]]:
    """Whether each frame is white (a flash), by time."""
    with av.open(str(path)) as container:
        return [
            (
                float(frame.time),
                float(frame.reformat(width=64, height=36).to_ndarray().mean()) > 170,
            )
            for frame in container.decode(video=0)
        ]


def beep_levels(path: Path) -> tuple[list[float], list[bool]]:
    """Whether each 10 ms of the audio is loud (a beep), by time."""
    samples = audio_between(path, 0, 1e9)
    block = 480
    count = len(samples) // block
    levels = np.sqrt(np.mean(samples[: count * block].reshape(count, block) ** 2, axis=1))
    return [i * block / 48000 for i in range(count)], list(levels / 32768 > 0.05)


def onsets(
    times: tuple[float, ...] | list[float], on: tuple[bool, ...] | list[bool]
) -> list[float]:
    return [
        t for i, (t, o) in enumerate(zip(times, on, strict=True)) if o and (i == 0 or not on[i - 1])
    ]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path)
    yield srv
    stop_server(srv)


# --- the worker end to end ----------------------------------------------------------------


async def test_hls_tiles_the_room_follows_who_publishes_and_enlarges_the_speaker(
    server: ServerProcess, tmp_path: Path
) -> None:
    argv = documented("--hls")
    hls = tmp_path / "hls"
    blue, _ = await publisher(server, "alice", BLUE, QUIET)
    red: Client | None = None
    server_threads = server.os_thread_count()
    worker = await start_worker(argv, server, tmp_path, **{"/var/www/live/lobby": str(hls)})
    async with running(worker):
        try:
            await worker.wait_log("composite-layout", "tiles=1", "speaker=alice")
            red, red_pub = await publisher(server, "bob", RED, LOUD)
            await worker.wait_log("composite-layout", "tiles=2", "speaker=bob")
            # The worker decodes; the server, forwarding to it, started no decoder thread.
            assert server.os_thread_count() == server_threads
            await asyncio.sleep(3)
            await red.unpublish(red_pub)
            await worker.wait_log("composite-layout", "tiles=1", "speaker=alice")
            await asyncio.sleep(2.5)
            worker.proc.send_signal(signal.SIGTERM)
            ran = time.monotonic() - worker.started_at
            written = await worker.finish()
        finally:
            for client in (blue, red):
                if client is not None:
                    await client.close()

    playlist = hls / "index.m3u8"
    assert "#EXT-X-ENDLIST" in playlist.read_text()
    info = probe(playlist)
    check_streams(info, fps=25)
    duration = float(info["format"]["duration"])
    assert abs(duration - written) < 0.5, (duration, written)
    assert abs(duration - ran) < 1.5, (duration, ran)  # the wall clock's seconds

    frames = video_frames(playlist)
    assert abs(len(frames) - 25 * duration) <= 25 * 0.2  # a steady 25 fps, none dropped
    two = [(t, c) for t, c in frames if c["red"] > 0.02 and c["blue"] > 0.02]
    assert len(two) >= 25, "two tiles for at least a second"
    # The louder publisher is the speaker: its tile is the larger one once it has led.
    for _, shares in two[-25:]:
        assert shares["red"] > 3 * shares["blue"], shares
    end, last = frames[-1]
    assert last["blue"] > 0.9 and last["red"] == 0, last  # one tile fills the canvas
    assert end > two[-1][0] + 1.5

    # The mix is a sum: both tones while both publish, only the quiet one after.
    both_at = two[-1][0]
    quiet, loud = amplitudes(audio_between(playlist, both_at - 1.0, both_at), 440, 880)
    assert quiet > QUIET[1] / 3 and loud > LOUD[1] / 3, (quiet, loud)
    quiet, loud = amplitudes(audio_between(playlist, end - 1.0, end), 440, 880)
    assert quiet > QUIET[1] / 3 and loud < QUIET[1] / 10, (quiet, loud)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """nginx with Debian's RTMP module, in the foreground, configured as docs/composite.md."""
    port, recordings = free_port(), tmp_path / "nginx-rec"
    recordings.mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        nginx_conf()
        .replace("127.0.0.1:1935", f"127.0.0.1:{port}")
        .replace("/var/lib/aiosfu-live", str(recordings))
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "nginx-error.log"),
         "-g", f"daemon off; pid {tmp_path / 'nginx.pid'}; user root;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, (tmp_path / "nginx-error.log").read_text()
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield port, recordings
    finally:
        proc.terminate()
        proc.wait(10)


async def test_rtmp_push_is_received_and_recorded_by_nginx(
    server: ServerProcess, tmp_path: Path, nginx: tuple[int, Path]
) -> None:
    port, recordings = nginx
    argv = documented("--rtmp")
    # Carol's camera freezes for 3 s in the middle of the 10 s the worker runs.
    green, _ = await publisher(server, "carol", GREEN, LOUD, stall=(4.0, 7.0))
    try:
        worker = await start_worker(argv, server, tmp_path, **{"1935": str(port)})
        async with running(worker):
            written = await worker.finish()
    finally:
        await green.close()
    assert written == 10.0
    flv = recordings / "lobby.flv"
    await wait_for(lambda: flv.exists() and flv.stat().st_size > 0, 10)
    await asyncio.sleep(0.5)  # nginx closes the file once the publisher has gone
    info = probe(flv)
    check_streams(info, fps=None)  # FLV keeps no frame rate of its own
    assert abs(float(info["format"]["duration"]) - 10.0) < 0.5, info["format"]
    frames = video_frames(flv)
    assert abs(len(frames) - 300) <= 3  # 30 fps throughout, the freeze included
    first = next(i for i, (_, shares) in enumerate(frames) if shares["green"] > 0.9)
    # The frozen camera's last picture is repeated: no black frame after the first one.
    assert all(shares["green"] > 0.9 for _, shares in frames[first:]), frames[first:]


KEY, SECRET = "APIa1b2c3", "a-secret-of-at-least-32-characters-0000"  # as in the doc


async def aiosfu(*args: str, cwd: Path = ROOT) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosfu", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    return out.decode().strip()


async def test_mp4_with_an_observer_token(tmp_path: Path) -> None:
    config = tmp_path / "aiosfu.toml"
    config.write_text(f'[institutions.school-a]\nkeys = {{ {KEY} = "{SECRET}" }}\n')
    keyed = start_server(tmp_path, "--config", str(config))
    try:
        token_line = next(
            line for line in DOC.read_text().splitlines() if line.startswith("TOKEN=$(")
        )
        token_cmd = shlex.split(token_line[len("TOKEN=$(") : -1])
        assert token_cmd[:2] == ["aiosfu", "token"]
        token = await aiosfu(*token_cmd[1:], cwd=tmp_path)
        teacher_token = await aiosfu(
            "token", "--config", str(config), "--key", KEY, "--room", ROOM, "--uid", "dave",
            "--role", "teacher",
        )  # fmt: skip
        teacher, _ = await publisher(keyed, "dave", RED, LOUD, token=teacher_token, flash=True)
        try:
            argv = documented("--mp4")
            worker = await start_worker(argv, keyed, tmp_path, **{"$TOKEN": token})
            async with running(worker):
                await worker.wait_log("composite-subscribed", "uid=dave")
                written = await worker.finish()
            # The observer is unseen: the publisher was never told it joined.
            assert not any(m == "peer-join" for m, _ in teacher.signaling.notifications)
        finally:
            await teacher.close()
    finally:
        stop_server(keyed)
    assert written == 10.0
    info = probe(tmp_path / "lobby.mp4")
    check_streams(info, fps=30)
    assert abs(float(info["format"]["duration"]) - 10.0) < 0.5, info["format"]
    mp4 = tmp_path / "lobby.mp4"
    assert max(shares["red"] for _, shares in video_frames(mp4)[-25:]) > 0.9
    # Lip sync: each flash of the picture and its beep come out together (the sound and
    # the pictures wait equally in the worker; what is left is the receivers' own jitter).
    flashes = onsets(*zip(*brightness(mp4), strict=True))
    beeps = onsets(*beep_levels(mp4))
    pairs = [(flash, min(beeps, key=lambda beep: abs(beep - flash))) for flash in flashes]
    assert len(pairs) >= 3, (flashes, beeps)
    assert all(abs(beep - flash) <= SYNC_TOLERANCE for flash, beep in pairs), pairs


async def test_an_rtmp_server_that_is_not_there_fails_with_a_reason(
    server: ServerProcess, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aiosfu", "composite", "--room", ROOM, "--server", server.ws_url,
        "--rtmp", f"rtmp://127.0.0.1:{port}/live/x", "--ice-ip", "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    reason = f"aiosfu composite: cannot open rtmp://127.0.0.1:{port}/live/x: "
    assert reason in stderr.decode() and "Connection refused" in stderr.decode(), stderr
    assert ROOM not in json.dumps(await server.stats())  # it failed before joining


# --- the parts, without media -------------------------------------------------------------


def test_one_tile_fills_the_canvas_and_the_grid_follows_the_count() -> None:
    assert layout(["a"], None) == {"a": Rect(0, 0, 1280, 720)}
    assert layout(["a"], "a") == {"a": Rect(0, 0, 1280, 720)}
    two = layout(["a", "b"], None)
    assert two == {"a": Rect(0, 180, 640, 360), "b": Rect(640, 180, 640, 360)}
    four = layout(["a", "b", "c", "d"], None)
    assert {r.area for r in four.values()} == {640 * 360}
    assert len({(r.x, r.y) for r in four.values()}) == 4
    three = grid(Rect(0, 0, 1280, 720), 3)
    assert three[2] == Rect(320, 360, 640, 360)  # the last row centred
    assert layout([], None) == {}


def test_the_speaker_gets_the_large_tile() -> None:
    mids = ["a", "b", "c"]
    tiles = layout(mids, "b")
    assert tiles["b"] == Rect(0, 90, 960, 540)
    assert all(tiles[m].area * 9 == tiles["b"].area for m in ("a", "c"))
    assert all(tiles[m].x >= 960 for m in ("a", "c"))
    for count in range(2, 12):
        tiles = layout([str(i) for i in range(count)], "0")
        rects = list(tiles.values())
        assert all(r.x >= 0 and r.y >= 0 and r.x + r.width <= 1280 for r in rects)
        assert all(r.y + r.height <= 720 and r.x % 2 == 0 and r.y % 2 == 0 for r in rects)
        assert max(rects, key=lambda r: r.area) == tiles["0"]


def test_the_speaker_changes_only_after_leading_for_the_hold_time() -> None:
    speaker = ActiveSpeaker(hold=1.0, smoothing=0.1)
    now = 0.0
    for _ in range(10):
        now += 0.04
        assert speaker.update({"a": 0.1, "b": 0.0}, now, 0.04) == "a"
    for _ in range(20):  # b louder, not yet for a second
        now += 0.04
        assert speaker.update({"a": 0.1, "b": 0.5}, now, 0.04) == "a"
    for _ in range(10):
        now += 0.04
        result = speaker.update({"a": 0.1, "b": 0.5}, now, 0.04)
    assert result == "b"
    for _ in range(50):  # silence keeps the last speaker
        now += 0.04
        assert speaker.update({"a": 0.0, "b": 0.0}, now, 0.04) == "b"
    assert speaker.update({"a": 0.1}, now + 0.04, 0.04) == "a"  # b left


def test_cameras_cover_their_tile_and_screens_fit_whole() -> None:
    red = av.VideoFrame.from_ndarray(np.full((240, 320, 3), RED, np.uint8), format="rgb24")
    rect = Rect(0, 0, 640, 360)
    image = Canvas(640, 360).compose({"cam": Tile(red, rect)})
    assert (np.abs(image.astype(int) - RED).max(axis=2) < 8).all()  # no bars
    image = Canvas(640, 360).compose({"screen": Tile(red, rect, fit=True)})
    assert not image[:, :75].any() and not image[:, -75:].any()  # pillarboxed
    assert (np.abs(image[:, 85:555].astype(int) - RED).max(axis=2) < 8).all()  # 480 wide


def test_audio_buffer_fills_underruns_with_silence_and_bounds_its_delay() -> None:
    buffer = AudioBuffer(prebuffer=0.02, limit=0.1)

    def frame(value: int, samples: int = 960) -> av.AudioFrame:
        data = np.full((1, samples * 2), value, np.int16)
        out = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
        out.sample_rate = 48000
        return out

    assert not buffer.pull(480).any()  # nothing yet: silence
    buffer.push(frame(1000))
    first = buffer.pull(1920)
    assert (first[:960] == 1000).all() and not first[960:].any()  # underrun: silence
    for _ in range(20):
        buffer.push(frame(7))
    assert buffer.size == 4800 and buffer.dropped > 0  # 100 ms at most
    assert (buffer.pull(4800) == 7).all()
    loud = np.full((100, 2), 30000, np.int16)
    assert (mix([loud, loud], 100) == 32767).all()  # clipped, not wrapped
    assert abs(rms(np.full((10, 2), 16384, np.int16)) - 0.5) < 1e-6


def test_bad_options_are_refused_with_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    from aiosfu.cli import build_parser

    for argv, reason in [
        (["--fps", "7"], "7 fps: choose a rate that divides 48000"),
        (["--video-bitrate", "fast"], "not a bitrate: 'fast'"),
        (["--audio-bitrate", "1k"], "bitrate '1k' is below 8k"),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["composite", "--room", ROOM, "--mp4", "x.mp4", *argv])
        assert reason in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one output, not two
        build_parser().parse_args(["composite", "--room", ROOM, "--mp4", "x", "--hls", "y"])
    assert "not allowed with argument" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["composite", "--room", ROOM, "--hls", "out", "--video-bitrate", "1.5M"]
    )
    assert (args.video_bitrate, args.audio_bitrate, args.fps) == (1_500_000, 128_000, 30)
