"""The bitrate a busy camera gets through aiosfu, as a ratio to a direct browser call.

Each run publishes Chromium's busy fake camera through a fresh `aiosfu serve` and,
at the same time and in the same browser, sends it directly page to page
(tests/congestion.py); the figure is the ratio of the publisher's target bitrate and of
the subscriber's received bitrate over the last 5 s of 15. Runs are repeated and the
median is reported with its spread, since the machine's speed drifts between runs.

    python -m bench.congestion [--runs 3] [--write]

`--write` saves bench/results/congestion.json and congestion.md. Goal: ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from tests.browser import launch_chromium
from tests.conftest import start_server, stop_server
from tests.congestion import busy_camera_args, direct_leg, run_legs, sfu_leg

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 0.9
RUN_SECONDS = 15
MEASURED_SECONDS = 5


async def one_run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            async with async_playwright() as pw:
                browser = await launch_chromium(pw, *busy_camera_args())
                try:
                    sfu = await sfu_leg(browser, server.http_url, server.ws_url)
                    direct = await direct_leg(browser, server.http_url)
                    await run_legs([sfu, direct], RUN_SECONDS)
                finally:
                    await browser.close()
        finally:
            stop_server(server)
    through, straight = sfu.summary(MEASURED_SECONDS), direct.summary(MEASURED_SECONDS)
    return {
        "sfu": through,
        "direct": straight,
        "targetRatio": round(through["targetKbps"] / max(straight["targetKbps"], 1), 3),
        "receivedRatio": round(through["receivedKbps"] / max(straight["receivedKbps"], 1), 3),
    }


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def report(runs: list[dict[str, Any]]) -> str:
    target = [r["targetRatio"] for r in runs]
    received = [r["receivedRatio"] for r in runs]
    sfu_kbps = [r["sfu"]["receivedKbps"] for r in runs]
    direct_kbps = [r["direct"]["receivedKbps"] for r in runs]
    ok = statistics.median(target) >= GOAL and statistics.median(received) >= GOAL
    return "\n".join(
        [
            "## Congestion control: a busy camera through aiosfu vs a direct call",
            "",
            f"Chromium, 640x480 busy picture, {RUN_SECONDS} s, last {MEASURED_SECONDS} s "
            f"measured, both paths at once; median of {len(runs)} runs (goal >= {GOAL}).",
            "",
            "| figure | SFU / direct |",
            "|---|---|",
            f"| publisher target bitrate | {spread(target)} |",
            f"| subscriber received bitrate | {spread(received)} |",
            "",
            f"Received: through the SFU {statistics.median(sfu_kbps):.0f} kbps, "
            f"direct {statistics.median(direct_kbps):.0f} kbps (medians). "
            f"Goal {'met' if ok else 'NOT met'}.",
            "",
        ]
    )


async def main_async(runs: int, write: bool) -> None:
    results = []
    for i in range(runs):
        result = await one_run()
        print(f"run {i + 1}/{runs}: {json.dumps(result)}", flush=True)
        results.append(result)
    text = report(results)
    print(text)
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "congestion.json").write_text(json.dumps(results, indent=2) + "\n")
        (RESULTS / "congestion.md").write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    asyncio.run(main_async(args.runs, args.write))


if __name__ == "__main__":
    main()
