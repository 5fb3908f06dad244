"""`python -m bench.callgrind`: instructions per forwarded packet, counted by
`valgrind --tool=callgrind`, at N = 1, 20 and 100 subscribers.

A figure for optimisation work that does not move with the machine: CPU time per packet
drifts by 2x within minutes on a shared virtual machine, an instruction count repeats
exactly. The path measured is `bench/forwarding_path.py`'s: one SRTP video packet in at
the publisher socket's callback, unprotected, parsed, accounted (receive statistics,
NACK generation, REMB estimate), fanned out, rewritten and SRTP-protected once per
subscriber, handed to sink sockets that send nothing.

How the setup cost is taken out: each N runs in its own process under callgrind with
instrumentation off until the path is built and warmed up (a full packet cache, every
subscriber started at the keyframe). Then callgrind's client requests (callgrind_marks.c)
count windows of K and of 2K further packets; per packet = (I(2K) - I(K)) / K, so what a
window costs whatever its length (the requests themselves, loop set-up) cancels out. The
harness's own per-packet work (the loop, setting the clock) is counted the same way with
a no-op path and subtracted.

Why it repeats exactly: the process's clock is virtual (time.time and time.monotonic
advance by the stream's packet spacing, one step per packet, so REMB windows, jitter and
every time-driven branch go the same way whatever the machine is doing), hashing is
seeded (PYTHONHASHSEED=0), `random` and os.urandom are seeded, the environment is the same
few variables, and the SRTP keys, SSRCs and DTLS certificate are fixed. The command runs
everything twice and says whether the two counts are identical.

Not counted: the event loop's wake-up and the recvfrom that reads the first datagram, and
the `sendto` calls themselves (the kernel's share: bench/floor.py measures it, and the
load benchmark `python -m bench` includes it).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MARKS_SOURCE = Path(__file__).with_name("callgrind_marks.c")
SUBSCRIBERS = (1, 20, 100)
# packets per window K (the second window has 2K): whole frames, fewer where N is large
PACKETS = {1: 400, 20: 200, 100: 80}
WARMUP = 600  # more than the packet cache holds: every put then replaces an old packet
FRAME_PACKETS = 4  # packets per video frame
FPS = 30
PAYLOAD_BYTES = 1100
ONE_WAY_DELAY = 0.005  # seconds between the publisher's abs-send-time and arrival
VIRTUAL_EPOCH = 1_800_000_000.0  # wall clock at the start of every run (January 2027)
VIRTUAL_MONOTONIC = 1_000.0
BEGIN = "<!-- callgrind:begin -->"
END = "<!-- callgrind:end -->"


# ---------------------------------------------------------------------------------------
# Inside valgrind: build the path, count the windows.


def install_virtual_clock() -> list[float]:
    """time.time / time.monotonic read from a cell the harness sets before each packet.

    Installed before aiortc or aiosfu is imported, so `from time import time` aliases
    get it too. The readers are C callables (partial of getitem), nearly as cheap as
    the real clock calls they replace. It starts at the same instant every run: the
    millisecond roundings of arrival times (the REMB estimator's windows) then fall the
    same way too."""
    cell = [VIRTUAL_EPOCH, VIRTUAL_MONOTONIC]
    time.time = functools.partial(operator.getitem, cell, 0)  # type: ignore[assignment]
    time.monotonic = functools.partial(operator.getitem, cell, 1)  # type: ignore[assignment]
    return cell


class Marks:
    """The client requests of callgrind_marks.c (no-ops outside valgrind, and all of
    them no-ops without the library: the path then just runs, for a quick check)."""

    def __init__(self, library: Path | None) -> None:
        self.on_valgrind = False
        self.start = self.stop = self.zero = lambda: None
        self._dump: Callable[[bytes], object] = lambda label: None
        if library is None:
            return
        import ctypes

        lib = ctypes.CDLL(str(library))
        self.start = lib.marks_start_instrumentation
        self.stop = lib.marks_stop_instrumentation
        self.zero = lib.marks_zero
        self._dump = lib.marks_dump
        self._dump.argtypes = [ctypes.c_char_p]  # type: ignore[attr-defined]
        self.on_valgrind = bool(lib.marks_running_on_valgrind())

    def dump(self, label: str) -> None:
        self._dump(label.encode())


Packet = tuple[bytes, float, float]  # SRTP datagram, its arrival on the wall and monotonic clocks


def make_packets(stream: Any, count: int, cell: list[float]) -> list[Packet]:
    """A VP8 stream as a publisher sends it: 30 frames/s of 4 packets, a keyframe first,
    each packet with mid, abs-send-time and a transport-wide sequence number, protected
    with the publisher's SRTP key."""
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap, RtpPacket

    from bench.forwarding_path import srtp_key, srtp_session

    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=i, uri=uri)
                for uri, i in stream.extension_ids.items()
            ]
        )
    )
    protect = srtp_session(srtp_key(0), inbound=False).protect
    wall0, mono0 = cell
    packets = []
    for n in range(count):
        frame, part = divmod(n, FRAME_PACKETS)
        offset = frame / FPS + part * 0.001  # a frame's packets 1 ms apart
        if part == 0:
            descriptor = b"\x10\x00" if frame == 0 else b"\x10\x01"  # S=1; P=0 keyframe
        else:
            descriptor = b"\x00\x01"
        packet = RtpPacket(
            payload_type=stream.payload_type,
            marker=int(part == FRAME_PACKETS - 1),
            sequence_number=(1000 + n) & 0xFFFF,
            timestamp=(frame * stream.clock_rate // FPS) & 0xFFFFFFFF,
            ssrc=stream.ssrc,
            payload=descriptor + bytes((n + i) & 0xFF for i in range(PAYLOAD_BYTES - 2)),
        )
        packet.extensions.mid = stream.mid
        packet.extensions.transport_sequence_number = (3000 + n) & 0xFFFF
        sent_at = wall0 + offset - ONE_WAY_DELAY
        packet.extensions.abs_send_time = int((sent_at + 2_208_988_800) * 262144) & 0xFFFFFF
        packets.append((protect(packet.serialize(extensions)), wall0 + offset, mono0 + offset))
    return packets


def run_packets(
    deliver: Callable[[bytes, Any], None], packets: Sequence[Packet], source: Any, cell: list[float]
) -> None:
    for data, wall, mono in packets:
        cell[0] = wall
        cell[1] = mono
        deliver(data, source)


def no_path(data: bytes, source: Any) -> None:
    """The harness alone: what the loop costs without the server's path."""


async def count_windows(subscribers: int, k: int, marks: Marks, cell: list[float]) -> dict:
    from bench.forwarding_path import Stream, build_path

    stream = Stream()
    keepalive: list[Any] = []
    path = await build_path(subscribers, stream, keepalive)
    packets = make_packets(stream, WARMUP + 3 * k, cell)
    warmup, first, second = packets[:WARMUP], packets[WARMUP : WARMUP + k], packets[WARMUP + k :]
    run_packets(path.deliver, warmup, path.source, cell)
    if path.sent() != subscribers * WARMUP or path.strays:  # the stream starts at a keyframe
        raise RuntimeError(f"warm-up: {path.sent()} of {subscribers * WARMUP} forwarded")
    marks.start()
    windows = [
        ("harness-K", no_path, first),
        ("harness-2K", no_path, second),
        ("path-K", path.deliver, first),
        ("path-2K", path.deliver, second),
    ]
    sent = {}
    for label, deliver, chunk in windows:
        before = path.sent()
        gc.collect()
        marks.zero()
        run_packets(deliver, chunk, path.source, cell)
        marks.dump(label)
        sent[label] = path.sent() - before
    marks.stop()
    return {
        "subscribers": subscribers,
        "packets": k,
        "forwarded": {"path-K": sent["path-K"], "path-2K": sent["path-2K"]},
        "strays": len(path.strays),
        "on_valgrind": marks.on_valgrind,
    }


def install_seeded_urandom() -> None:
    """os.urandom from a seeded generator, in this measuring process only (it serves
    nobody): the SSRCs, ICE credentials and tie-breakers aiortc and aioice draw at set-up
    come out the same every run, so the heap is laid out the same way and the allocator
    takes the same paths per packet."""
    import random

    generator = random.Random(0)
    os.urandom = generator.randbytes
    random._urandom = generator.randbytes  # type: ignore[attr-defined]  # SystemRandom, secrets
    random.seed(0)


def child_main(subscribers: int, k: int, marks_library: Path | None) -> None:
    cell = install_virtual_clock()
    install_seeded_urandom()
    import asyncio

    marks = Marks(marks_library)
    outcome = asyncio.run(count_windows(subscribers, k, marks, cell))
    print("RESULT " + json.dumps(outcome), flush=True)


# ---------------------------------------------------------------------------------------
# Outside: run each N under valgrind, twice, and read the counts.


@dataclass
class Count:
    subscribers: int
    packets: int
    windows: dict[str, int]  # label -> instructions

    @property
    def harness_per_packet(self) -> float:
        return (self.windows["harness-2K"] - self.windows["harness-K"]) / self.packets

    @property
    def per_inbound(self) -> float:
        path = (self.windows["path-2K"] - self.windows["path-K"]) / self.packets
        return path - self.harness_per_packet

    @property
    def per_forwarded(self) -> float:
        return self.per_inbound / self.subscribers


def build_marks(directory: Path) -> Path:
    output = directory / "callgrind_marks.so"
    done = subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(output), str(MARKS_SOURCE)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(
            f"bench.callgrind: could not build {MARKS_SOURCE.name} (needs gcc and valgrind's "
            f"headers, Debian packages gcc and valgrind):\n{done.stderr}"
        )
    return output


def read_dumps(directory: Path) -> dict[str, int]:
    """label -> instruction count, from callgrind's dump files in `directory`."""
    counts: dict[str, int] = {}
    for path in sorted(directory.glob("callgrind.out.*")):
        text = path.read_text(errors="replace")
        label = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if label and total:
            counts[label.group(1)] = int(total.group(1))
    return counts


def child_env() -> dict[str, str]:
    """The same few variables for every measured process: the environment is copied
    onto the heap at start-up, so its size would shift what the allocator does later."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}


def prime(subscribers: int) -> None:
    """Run the path once natively first: every module it imports then has a fresh .pyc,
    so no measured process compiles source (which would leave a different heap)."""
    cmd = [sys.executable, "-m", "bench.callgrind", "--child", str(subscribers), "--packets", "4"]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench.callgrind: the path does not run:\n{done.stdout}{done.stderr}")


def count_one(subscribers: int, k: int, marks: Path, keep: Path | None) -> Count:
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        out = Path(tmp)
        cmd = [
            "valgrind", "--tool=callgrind", "--quiet", "--instr-atstart=no",
            f"--callgrind-out-file={out}/callgrind.out", sys.executable, "-m", "bench.callgrind",
            "--child", str(subscribers), "--packets", str(k), "--marks", str(marks),
        ]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
        result = next(
            (line[7:] for line in done.stdout.splitlines() if line.startswith("RESULT ")), None
        )
        if done.returncode or result is None:
            raise SystemExit(
                f"bench.callgrind: N={subscribers} failed:\n{done.stdout}{done.stderr}"
            )
        outcome = json.loads(result)
        expected = {"path-K": subscribers * k, "path-2K": subscribers * 2 * k}
        if outcome["forwarded"] != expected or outcome["strays"]:
            raise SystemExit(
                f"bench.callgrind: N={subscribers}: not every packet took the fast path to "
                f"every subscriber: {outcome} (expected {expected}, no strays)"
            )
        counts = read_dumps(out)
        missing = {"harness-K", "harness-2K", "path-K", "path-2K"} - set(counts)
        if missing:
            raise SystemExit(f"bench.callgrind: N={subscribers}: no count for {sorted(missing)}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for path in out.glob("callgrind.out.*"):
                shutil.copy(path, keep / f"n{subscribers}-{path.name}")
    return Count(subscribers, k, counts)


def count_all(
    subscribers: Sequence[int], repeat: int, keep: Path | None = None, log: Callable = print
) -> list[list[Count]]:
    """`repeat` full passes over every N, one valgrind process per (pass, N)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.callgrind: valgrind is not installed (Debian package valgrind)")
    prime(min(subscribers))
    with tempfile.TemporaryDirectory(prefix="bench-marks-") as tmp:
        marks = build_marks(Path(tmp))
        passes = []
        for run in range(repeat):
            counts = []
            for n in subscribers:
                started = time.monotonic()
                k = PACKETS.get(n, max(FRAME_PACKETS, 4000 // n // FRAME_PACKETS * FRAME_PACKETS))
                count = count_one(n, k, marks, keep if run == 0 else None)
                log(
                    f"callgrind run {run + 1}/{repeat} N={n:>3}: "
                    f"{count.per_inbound:,.0f} instructions per inbound packet, "
                    f"{count.per_forwarded:,.0f} per forwarded packet "
                    f"({time.monotonic() - started:.0f} s)"
                )
                counts.append(count)
            passes.append(counts)
    return passes


def valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    return done.stdout.strip()


def summarize(passes: list[list[Count]], command: str) -> dict[str, Any]:
    first = passes[0]
    exact = all([c.windows for c in counts] == [c.windows for c in first] for counts in passes[1:])
    import platform

    return {
        "command": command,
        "valgrind": valgrind_version(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": len(passes),
        "repeats_exactly": exact if len(passes) > 1 else None,
        "results": [
            {
                "subscribers": c.subscribers,
                "packets_per_window": c.packets,
                "windows": c.windows,
                "harness_per_packet": c.harness_per_packet,
                "per_inbound_packet": c.per_inbound,
                "per_forwarded_packet": c.per_forwarded,
                "per_inbound_packet_each_run": [p[i].per_inbound for p in passes],
                "windows_each_run": [p[i].windows for p in passes],
            }
            for i, c in enumerate(first)
        ],
    }


def markdown(summary: dict[str, Any]) -> str:
    rows = summary["results"]
    repeat = summary["repeats_exactly"]
    lines = [
        f"Command: `{summary['command']}`  ",
        f"{summary['valgrind']}, Python {summary['python']}, {summary['date']}  ",
        (
            f"Repeated: {summary['runs']} runs, counts "
            + ("**identical**" if repeat else "**NOT identical** (see the JSON)")
            if repeat is not None
            else "Repeated: 1 run (no repeat check)"
        ),
        "",
        "| subscribers N | instructions per inbound packet | per forwarded packet | "
        "K (window: K and 2K packets) | harness per packet (subtracted) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['subscribers']} | {r['per_inbound_packet']:,.0f} | "
            f"{r['per_forwarded_packet']:,.0f} | {r['packets_per_window']} | "
            f"{r['harness_per_packet']:,.0f} |"
        )
    by_n = {r["subscribers"]: r["per_inbound_packet"] for r in rows}
    if len(by_n) >= 2:
        low, high = min(by_n), max(by_n)
        per_subscriber = (by_n[high] - by_n[low]) / (high - low)
        fixed = by_n[low] - per_subscriber * low
        lines += [
            "",
            f"Split (straight line through N={low} and N={high}): about "
            f"**{fixed:,.0f}** instructions per inbound packet whatever the fan-out "
            f"(SRTP unprotect, parse, receive statistics, REMB estimate, producer), plus "
            f"**{per_subscriber:,.0f}** per subscriber (rewrite, SRTP protect, send call).",
        ]
    return "\n".join(lines)


def update_benchmarks_md(path: Path, body: str) -> None:
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.callgrind", description=__doc__)
    parser.add_argument(
        "--subscribers",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=list(SUBSCRIBERS),
        help="comma-separated N (default 1,20,100)",
    )
    parser.add_argument("--repeat", type=int, default=2, help="full passes, compared (default 2)")
    parser.add_argument(
        "--write", action="store_true", help="update BENCHMARKS.md and bench/results/"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the first run's callgrind files (callgrind_annotate DIR/n20-...)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--packets", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--marks", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        child_main(args.child, args.packets, args.marks)
        return 0
    passes = count_all(args.subscribers, max(1, args.repeat), args.keep)
    command = (
        "make bench-callgrind"
        if os.environ.get("BENCH_FROM_MAKE")
        else " ".join(["python -m bench.callgrind", *(argv if argv is not None else sys.argv[1:])])
    )
    summary = summarize(passes, command)
    body = markdown(summary)
    print(body)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    if args.write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "callgrind.json").write_text(json.dumps(summary, indent=1) + "\n")
        update_benchmarks_md(ROOT / "BENCHMARKS.md", body)
    return 0 if summary["repeats_exactly"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
