"""`python -m bench`: load our server and the baselines with the same generator, in one
run, interleaved so that the machine's drift hits every server alike.

For each scenario the runs go A B B A ... (A = aiosfu, B = the baseline, Janus with
`event_loops = 1`), pair after pair, with the `sendto` floor measured just before each
pair; the reference servers (Janus with its default configuration, aiortc MediaRelay) run
once, in the middle of the sequence. `make bench` runs the short set (2 pairs, 4 s
windows) and rewrites the generated block of BENCHMARKS.md; `--full` runs every scenario
with 4 pairs and 10 s windows. Loopback only: run it inside a network namespace that has
nothing but `lo` (the Makefile does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.media import Clip, prepare_clip
from bench.run import SERVERS, Result, Scenario, mesh, one_to_many, run_one

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
OURS = "aiosfu"
BASELINE = "janus"
SHORT_SCENARIOS = "1v1,1v5,1v20,1v40,2v2,4v4"
FULL_SCENARIOS = "1v1,1v5,1v10,1v20,1v40,2v2,3v3,4v4,5v5,6v6"
# MediaRelay encodes once per subscriber: past this many subscriptions on one core it only
# shows how far it has fallen over, at the price of minutes of setup; --full runs them all.
RELAY_QUICK_LIMIT = 12


def parse_scenario(text: str) -> Scenario:
    left, _, right = text.partition("v")
    if not left.isdigit() or not right.isdigit():
        raise argparse.ArgumentTypeError(f"scenario {text!r}: expected 1vN or NvN")
    if int(left) == 1:
        return one_to_many(int(right))
    if left != right:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: only 1vN and NvN are defined")
    return mesh(int(left))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help=f"comma-separated, from {', '.join(SERVERS)} (default: all)",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        choices=[s for s in SERVERS if s != OURS],
        help=f"the server paired with {OURS} run by run, every ratio against it "
        f"(default {BASELINE}: Janus with event_loops = 1)",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda s: [parse_scenario(x) for x in s.split(",") if x],
        help=f"comma-separated 1vN / NvN (default {SHORT_SCENARIOS}; --full: {FULL_SCENARIOS})",
    )
    parser.add_argument("--pairs", type=int, help="A/B pairs per scenario (default 2, --full 4)")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 4)")
    parser.add_argument(
        "--full", action="store_true", help="every scenario, 4 pairs, 10 s windows, every baseline"
    )
    parser.add_argument(
        "--floor-seconds", type=float, default=2.0, help="length of each sendto floor measurement"
    )
    parser.add_argument("--clip-seconds", type=float, default=4.0, help="length of the clip")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--write", action="store_true", help="update BENCHMARKS.md and bench/results/"
    )
    parser.add_argument(
        "--rerender",
        type=Path,
        metavar="JSON",
        help="measure nothing: render results saved by --json/--write again "
        "(BENCHMARKS.md, bench/results/)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample Python servers with py-spy over each measured window and write the "
        "profiles into DIR (the figures of such a run include py-spy's pauses)",
    )
    return parser


def pick_cpus() -> tuple[set[int] | None, set[int] | None]:
    """Server on one core, generator on another, when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def skip_reason(server: str, scenario: Scenario, full: bool) -> str | None:
    if server == "aiortc-relay" and not full and scenario.subscriptions > RELAY_QUICK_LIMIT:
        return f"not run in the short bench ({scenario.subscriptions} encoders; --full runs it)"
    return None


Step = tuple[str, int | None]  # (server, pair index; None for a reference run)


def schedule(servers: list[str], baseline: str, pairs: int) -> list[Step]:
    """One scenario's sequence: pair p runs A then B when p is even, B then A when odd
    (A B B A A B ...), so a drift in the machine's speed weighs on both alike; each
    reference server runs once, in the middle, where it is nearest to most pairs."""
    paired = [s for s in (OURS, baseline) if s in servers]
    references = [s for s in servers if s not in paired]
    steps: list[Step] = []
    for p in range(pairs):
        if p == pairs // 2:
            steps += [(s, None) for s in references]
        order = paired if p % 2 == 0 else paired[::-1]
        steps += [(s, p) for s in order]
    if pairs < 1:
        steps += [(s, None) for s in references]
    return steps


def measure_floor(
    seconds: float, server_cpus: set[int] | None, generator_cpus: set[int] | None
) -> float | None:
    """The sendto floor, now, in its own process (bench/floor.py forks)."""
    cmd = [sys.executable, "-m", "bench.floor", "--seconds", str(seconds)]
    if server_cpus and generator_cpus:
        cmd += ["--sender-cpu", str(min(server_cpus)), "--reader-cpu", str(min(generator_cpus))]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 30)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


async def run_all(args: argparse.Namespace) -> list[Result]:
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in servers if s not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)}")
    scenarios = args.scenarios or [
        parse_scenario(x) for x in (FULL_SCENARIOS if args.full else SHORT_SCENARIOS).split(",")
    ]
    duration = args.duration or (10.0 if args.full else 4.0)
    pairs = args.pairs if args.pairs is not None else (4 if args.full else 2)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    server_cpus, generator_cpus = pick_cpus()
    if generator_cpus:
        os.sched_setaffinity(0, generator_cpus)
    clip = prepare_clip(args.clip_seconds)
    log_dir = RESULTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for scenario in scenarios:
        floor: float | None = None
        floor_pair: int | None = None
        for order, (server, pair) in enumerate(schedule(servers, args.baseline, pairs)):
            if pair is not None and pair != floor_pair:
                floor_pair = pair
                floor = await asyncio.to_thread(
                    measure_floor, args.floor_seconds, server_cpus, generator_cpus
                )
                print(f"{'sendto floor':>13} {scenario.name:>5}: {floor} µs", flush=True)
            reason = skip_reason(server, scenario, args.full)
            if reason:
                result = Result(server, scenario, notes=[reason])
            else:
                result = await run_and_print(
                    server, scenario, clip, duration, log_dir, server_cpus, args.profile
                )
            result.order, result.pair = order, pair
            result.floor_us = floor if pair is not None else None
            results.append(result)
    return results


async def run_and_print(
    server: str,
    scenario: Scenario,
    clip: Clip,
    duration: float,
    log_dir: Path,
    server_cpus: set[int] | None,
    profile_dir: Path | None = None,
) -> Result:
    started = time.monotonic()
    result = await run_one(server, scenario, clip, duration, log_dir, server_cpus, profile_dir)
    figures = result.figures
    if result.error:
        summary = f"error: {result.error}"
    else:
        summary = ", ".join(
            f"{report.format_figure(figures.get(key), fmt)} {label}"
            for key, label, fmt in (
                ("cpu_us_per_packet_out", "µs/pkt out", "{:.1f}"),
                ("cpu_percent", "% core", "{:.0f}"),
                ("loss_percent", "% loss", "{:.2f}"),
            )
        )
    if result.notes:
        summary += f" [{'; '.join(result.notes)}]"
    print(
        f"{server:>13} {scenario.name:>5}: {summary} ({time.monotonic() - started:.0f} s)",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.rerender:
        results, info, command = report.read_json(args.rerender)
        write_results(results, info, command)
        return
    started = time.monotonic()
    info = report.machine()
    results = asyncio.run(run_all(args))
    info["pairs"] = max((r.pair for r in results if r.pair is not None), default=-1) + 1
    info["baseline"] = args.baseline
    info["duration_s"] = args.duration or (10.0 if args.full else 4.0)
    command = (
        "make bench"
        if os.environ.get("BENCH_FROM_MAKE")
        else shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    )
    if args.json:
        report.write_json(results, info, args.json, command)
    if args.write:
        write_results(results, info, command)
    else:
        print(report.markdown(results, command, info, None))
    print(f"bench: {len(results)} runs in {time.monotonic() - started:.0f} s", flush=True)


def write_results(results: list[Result], info: dict[str, Any], command: str) -> None:
    """bench/results/ (JSON, Markdown, plot) and the generated block of BENCHMARKS.md."""
    RESULTS.mkdir(exist_ok=True)
    report.write_json(results, info, RESULTS / "latest.json", command)
    plot_name = "cpu-loss.png"
    has_plot = report.plot(results, RESULTS / plot_name)
    body = report.markdown(
        results, command, info, f"bench/results/{plot_name}" if has_plot else None
    )
    (RESULTS / "latest.md").write_text(body)
    report.update_benchmarks_md(ROOT / "BENCHMARKS.md", body)
