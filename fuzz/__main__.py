"""Run the fuzz targets under atheris (libFuzzer for Python, coverage-guided).

    python -m fuzz TARGET [libFuzzer flags] [corpus dirs]   one target, e.g. -runs=100000
    python -m fuzz all [--runs N]                           every target, N inputs in all

New inputs that reach new code are written to the first corpus directory; `all` keeps
the repository's corpus (fuzz/corpus/<target>) read-only and writes to a scratch one.
A crash leaves its input as `crash-<hash>` in the working directory; replay it with
`python -m fuzz TARGET crash-<hash>`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
# Inputs per target out of every 100 for `all`: sdp builds real peer connections and
# runs about a hundred times slower than the parsers.
SHARES = {"signaling": 45, "media": 50, "sdp": 5}


def run_one(target: str, args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["aiosfu", "aioice", "aiortc"]):
        from fuzz.targets import TARGETS
    atheris.Setup([sys.argv[0], *args], TARGETS[target])
    atheris.Fuzz()


def run_all(total: int) -> int:
    failed = 0
    for target, share in SHARES.items():
        runs = max(total * share // 100, 1)
        with tempfile.TemporaryDirectory() as scratch:
            command = [
                sys.executable, "-m", "fuzz", target, f"-runs={runs}",
                "-max_len=4096", "-timeout=20", "-rss_limit_mb=4096",
                scratch, str(CORPUS / target),
            ]  # fmt: skip
            print(f"fuzz {target}: {runs} inputs", flush=True)
            result = subprocess.run(command, env={**os.environ, "PYTHONHASHSEED": "0"})
            failed += result.returncode != 0
    return failed


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    target = sys.argv[1]
    if target == "all":
        total = int(sys.argv[3]) if sys.argv[2:3] == ["--runs"] else 1_000_000
        sys.exit(1 if run_all(total) else 0)
    run_one(target, sys.argv[2:])


if __name__ == "__main__":
    main()
