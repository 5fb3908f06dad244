"""A short pass of every fuzz target (fuzz/): the kept corpus replayed, then fresh
inputs. `make fuzz` runs the long pass."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
from aiortc.rtp import RtpPacket

from aiosfu.sfu.aiortc_hooks import parse_rtp
from tests.conftest import ROOT

CORPUS = ROOT / "fuzz" / "corpus"
RUNS = {"signaling": 4000, "media": 8000, "sdp": 300}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzz_target_finds_nothing(target: str, tmp_path: Path) -> None:
    scratch = tmp_path / "new"
    scratch.mkdir()
    assert any((CORPUS / target).iterdir()), "the kept corpus is missing"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fuzz",
            target,
            f"-runs={RUNS[target]}",
            "-seed=1",
            "-max_len=4096",
            "-timeout=20",
            str(scratch),
            str(CORPUS / target),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    tail = "\n".join(line for line in result.stderr.splitlines() if "Instrumenting" not in line)
    assert result.returncode == 0, tail[-4000:]
    assert "DONE" in result.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))


def test_a_short_header_extension_is_a_dropped_packet() -> None:
    """Found by the media target: aiortc raises struct.error on an abs-send-time
    extension of the wrong length, which the ingress must drop like any bad packet."""
    crash = (CORPUS / "media" / "abs-send-time-short.rtp").read_bytes()
    from fuzz.targets import _EXTENSIONS

    with pytest.raises(struct.error):
        RtpPacket.parse(crash, _EXTENSIONS)
    assert parse_rtp(crash, _EXTENSIONS) is None
