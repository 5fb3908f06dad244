"""The benchmark end to end, small: 1 publisher, 2 subscribers, two servers in two
interleaved pairs (aiortc MediaRelay standing in for the baseline, which is always
installed where Janus may not be).

It proves the benchmark still measures (every figure is reported, media flowed), runs
its pairs A B B A with a floor beside each, and renders every column; it asserts no
timing, which belongs to `make bench`, never to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FIGURES = [
    "cpu_us_per_packet_in",
    "cpu_us_per_packet_out",
    "cpu_percent",
    "cpu_system_percent",
    "idle_cpu_percent",
    "pps_in",
    "server_pps_out",
    "pps_out",
    "received_in_window_percent",
    "udp_drops_per_s",
    "loss_percent",
    "frames_delivered_percent",
    "latency_p50_ms",
    "latency_p99_ms",
    "first_packet_ms",
    "first_keyframe_ms",
    "rss_mb",
    "threads",
    "context_switches_per_s",
    "generator_cpu_percent",
]
# every column the report's tables have, by header
COLUMNS = [
    "CPU µs/pkt in",
    "CPU µs/pkt out",
    "% of a core",
    "of which kernel",
    "% core, no media",
    "pkt/s in",
    "server pkt/s out",
    "pkt/s read",
    "read in window %",
    "UDP drops/s",
    "loss %",
    "frames %",
    "latency p50 ms",
    "latency p99 ms",
    "1st pkt ms",
    "1st keyframe ms",
    "RSS MB",
    "threads",
    "ctx switches/s",
    "generator % core",
    "runs",
    "pairs",
    "noisy",
    "order",
    "ratio",
    "sendto floor µs",
]


@pytest.mark.media
def test_bench_smoke_interleaves_pairs_and_reports_every_column(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "bench", "--servers", "aiosfu,aiortc-relay",
        "--baseline", "aiortc-relay", "--pairs", "2", "--scenarios", "1v2",
        "--duration", "1", "--clip-seconds", "2", "--floor-seconds", "0.3",
        "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu_model"]
    assert report["machine"]["pairs"] == 2
    runs = sorted(report["results"], key=lambda r: r["order"])
    assert [(r["server"], r["pair"]) for r in runs] == [
        ("aiosfu", 0),
        ("aiortc-relay", 0),
        ("aiortc-relay", 1),
        ("aiosfu", 1),
    ]
    assert all(r["scenario"] == "1v2" for r in runs)
    # a floor beside every pair, shared by its two runs
    assert all(r["floor_us"] is not None and r["floor_us"] > 0 for r in runs)
    assert runs[0]["floor_us"] == runs[1]["floor_us"]
    assert runs[2]["floor_us"] == runs[3]["floor_us"]
    for result in runs:
        assert result["error"] is None, result
        if result["server"] != "aiosfu":
            continue
        figures = result["figures"]
        missing = [key for key in FIGURES if figures.get(key) is None]
        assert not missing, f"figures not measured: {missing}"
        assert figures["subscriptions"] == 2
        assert figures["subscriptions_flowing"] == 2
        assert figures["pps_in"] > 0 and figures["pps_out"] > 0
        # both subscribers got what the publisher sent (by sequence numbers, not by rate:
        # a loaded generator reads late, it does not lose)
        assert figures["loss_percent"] < 50
        assert figures["frames_delivered_percent"] > 50

    # the Markdown names the scenario in every table and has every column
    assert "| 1v2 | 2 |" in done.stdout  # ratio table: 2 pairs
    headers = {
        cell.strip()
        for line in done.stdout.splitlines()
        if line.startswith("| scenario |")
        for cell in line.strip("|").split("|")
    }
    for column in COLUMNS:
        assert any(column in header for header in headers), f"no column {column!r}"


async def test_microbenchmark_path_forwards_real_srtp_to_every_subscriber() -> None:
    """The path `python -m bench.callgrind` counts is the server's own, whole: every
    inbound packet takes the fast path and reaches every subscriber as SRTP that the
    subscriber's key opens, with the subscriber's SSRC and the publisher's payload."""
    import time

    from aiortc.rtp import RtpPacket

    from bench.callgrind import make_packets, run_packets
    from bench.forwarding_path import Stream, build_path, srtp_key, srtp_session

    stream, keepalive = Stream(), []
    path = await build_path(3, stream, keepalive)
    cell = [time.time(), time.monotonic()]
    packets = make_packets(stream, 40, cell)
    for count, packet in enumerate(packets, 1):
        run_packets(path.deliver, [packet], path.source, cell)
        assert path.sent() == 3 * count
        for i, sink in enumerate(path.sinks):
            clear = srtp_session(srtp_key(i + 1), inbound=True).unprotect(bytes(sink.last))
            out = RtpPacket.parse(clear)
            assert out.ssrc == 0x90000000 + i
            sent = srtp_session(srtp_key(0), inbound=True).unprotect(packet[0])
            assert out.payload == RtpPacket.parse(sent).payload
    assert path.strays == []


@pytest.mark.parametrize("server", ["aiosfu", "aiohttp", "raw"])
def test_connection_cost_runs_every_step_against_every_server(server: str, tmp_path: Path) -> None:
    """`python -m bench.connection_cost` (docs/large-rooms.md): each server answers each
    step for every connection (a step left unanswered times out and raises), and its CPU
    is read (20 connections of the bare protocol may take less than one clock tick)."""
    from bench.connection_cost import STEPS, measure

    for step in STEPS:
        assert measure(server, step, 20, tmp_path) >= 0
