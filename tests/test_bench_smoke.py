"""The load generator end to end, small: 1 publisher, 2 subscribers, our server only.

It proves the benchmark still measures (every figure is reported and media flowed);
it asserts no timing, which belongs to `make bench`, never to a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.media

FIGURES = [
    "cpu_us_per_packet_in",
    "cpu_us_per_packet_out",
    "cpu_percent",
    "cpu_system_percent",
    "idle_cpu_percent",
    "pps_in",
    "pps_out",
    "loss_percent",
    "frames_delivered_percent",
    "latency_p50_ms",
    "latency_p99_ms",
    "first_packet_ms",
    "first_keyframe_ms",
    "rss_mb",
    "generator_cpu_percent",
]


def test_bench_smoke_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "bench", "--servers", "aiosfu", "--scenarios", "1v2",
        "--duration", "1", "--clip-seconds", "2", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads(out.read_text())
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["cpu_model"]
    assert report["machine"]["sendto_floor_us"] > 0
    (result,) = report["results"]
    assert result["server"] == "aiosfu" and result["scenario"] == "1v2"
    assert result["error"] is None, result
    figures = result["figures"]
    missing = [key for key in FIGURES if figures.get(key) is None]
    assert not missing, f"figures not measured: {missing}"
    assert figures["subscriptions"] == 2
    assert figures["subscriptions_flowing"] == 2
    assert figures["pps_in"] > 0 and figures["pps_out"] > 0
    # both subscribers got what the publisher sent: about twice as many packets out as in
    assert figures["pps_out"] > 1.5 * figures["pps_in"]
    assert figures["frames_delivered_percent"] > 50
    # and the Markdown table names the scenario
    assert "| 1v2 |" in done.stdout


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
