"""Results as Markdown tables, JSON and a plot.

Every server ran several times per scenario (interleaved: see cli.py), so each figure is
given as the median of its runs with their min-max. Ratios are ours ÷ the baseline's,
from the medians, next to the min-max of the ratios pair by pair (each pair is two runs
back to back, so the machine was in about the same state for both): when the pair
ratios of CPU per forwarded packet differ by more than 25% the scenario is marked
noisy, and its ratio is a range rather than a figure.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.run import Result, Scenario

OURS = "aiosfu"
BASELINE = "janus"
LABELS = {
    "aiosfu": "aiosfu",
    "janus": "Janus VideoRoom (event_loops = 1)",
    "janus-default": "Janus VideoRoom (default configuration)",
    "aiortc-relay": "aiortc MediaRelay",
}
SHORT_LABELS = {
    "aiosfu": "aiosfu",
    "janus": "Janus tuned",
    "janus-default": "Janus default",
    "aiortc-relay": "MediaRelay",
}
NOISY_SPREAD = 1.25  # max/min of the pair ratios beyond which a scenario is noisy
HEADLINE = "cpu_us_per_packet_out"

# (key, header, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("cpu_us_per_packet_in", "CPU µs/pkt in", "{:.1f}"),
    ("cpu_us_per_packet_out", "CPU µs/pkt out", "{:.1f}"),
    ("cpu_percent", "% of a core", "{:.1f}"),
    ("cpu_system_percent", "of which kernel", "{:.1f}"),
    ("idle_cpu_percent", "% core, no media", "{:.1f}"),
    ("pps_in", "pkt/s in", "{:.0f}"),
    ("server_pps_out", "server pkt/s out", "{:.0f}"),
    ("pps_out", "pkt/s read", "{:.0f}"),
    ("received_in_window_percent", "read in window %", "{:.0f}"),
    ("udp_drops_per_s", "UDP drops/s", "{:.0f}"),
    ("loss_percent", "loss %", "{:.2f}"),
    ("frames_delivered_percent", "frames %", "{:.1f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.2f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.2f}"),
    ("first_packet_ms", "1st pkt ms", "{:.0f}"),
    ("first_keyframe_ms", "1st keyframe ms", "{:.0f}"),
    ("rss_mb", "RSS MB", "{:.1f}"),
    ("threads", "threads", "{:.0f}"),
    ("context_switches_per_s", "ctx switches/s", "{:.0f}"),
    ("generator_cpu_percent", "generator % core", "{:.0f}"),
]
# (per packet in is per packet out times the fan-out, so its ratio is the same)
RATIO_KEYS = [
    "cpu_us_per_packet_out",
    "cpu_percent",
    "loss_percent",
    "frames_delivered_percent",
    "latency_p50_ms",
    "latency_p99_ms",
    "first_packet_ms",
    "first_keyframe_ms",
    "rss_mb",
]
HEADERS = {key: header for key, header, _ in COLUMNS}
FORMATS = {key: fmt for key, _, fmt in COLUMNS}


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_figure(value: Any, pattern: str) -> str:
    if value is None:
        return "—"
    return pattern.format(value)


def _scenarios(results: Sequence[Result]) -> list[Scenario]:
    seen: dict[str, Scenario] = {}
    for r in results:
        seen.setdefault(r.scenario.name, r.scenario)
    return list(seen.values())


def _runs(results: Sequence[Result], server: str, scenario: str) -> list[Result]:
    """The runs that measured (no error, figures present), in the order they ran."""
    return [
        r
        for r in results
        if r.server == server and r.scenario.name == scenario and not r.error and r.figures
    ]


def _values(runs: Sequence[Result], key: str) -> list[float]:
    return [r.figures[key] for r in runs if r.figures.get(key) is not None]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def spread_cell(values: Sequence[float], pattern: str) -> str:
    """median (min-max); just the value when there is one."""
    if not values:
        return "—"
    mid = pattern.format(statistics.median(values))
    if len(values) == 1 or min(values) == max(values):
        return mid
    return f"{mid} ({pattern.format(min(values))}-{pattern.format(max(values))})"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _ratio_text(ours: float | None, theirs: float | None) -> str:
    if ours is not None and theirs == 0:
        return "=" if ours == 0 else "—"
    value = ratio(ours, theirs)
    return "—" if value is None else _fmt_ratio(value)


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def pairs(results: Sequence[Result], scenario: str, baseline: str) -> list[tuple[Result, Result]]:
    """(ours, baseline) run pairs of `scenario`, both measured, by pair index."""
    ours = {r.pair: r for r in _runs(results, OURS, scenario) if r.pair is not None}
    theirs = {r.pair: r for r in _runs(results, baseline, scenario) if r.pair is not None}
    return [(ours[p], theirs[p]) for p in sorted(set(ours) & set(theirs))]


def pair_ratios(pair_list: Sequence[tuple[Result, Result]], key: str) -> list[float]:
    out = []
    for ours, theirs in pair_list:
        value = ratio(ours.figures.get(key), theirs.figures.get(key))
        if value is not None:
            out.append(value)
    return out


def is_noisy(ratios: Sequence[float]) -> bool:
    return len(ratios) > 1 and min(ratios) > 0 and max(ratios) / min(ratios) > NOISY_SPREAD


def _notes(runs: Sequence[Result]) -> str:
    parts: list[str] = []
    for r in runs:
        for note in [*r.notes, *([f"failed: {r.error}"] if r.error else [])]:
            if note not in parts:
                parts.append(note)
    return "; ".join(parts).replace("|", "/")


def server_table(results: Sequence[Result], server: str) -> str:
    rows = [r for r in results if r.server == server]
    if not rows:
        return ""
    header = "| scenario | runs | " + " | ".join(h for _, h, _ in COLUMNS) + " | notes |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for scenario in _scenarios(rows):
        runs = _runs(results, server, scenario.name)
        every = [r for r in rows if r.scenario.name == scenario.name]
        cells = [spread_cell(_values(runs, key), fmt) for key, _, fmt in COLUMNS]
        lines.append(
            f"| {scenario.name} | {len(runs)} | " + " | ".join(cells) + f" | {_notes(every)} |"
        )
    return "\n".join(lines)


def ratio_table(results: Sequence[Result], baseline: str) -> str:
    """Ours ÷ the paired baseline: ratio of medians (min-max of the pair ratios)."""
    lines = [
        "| scenario | pairs | " + " | ".join(HEADERS[k] for k in RATIO_KEYS) + " | noisy |",
        "|" + "---|" * (len(RATIO_KEYS) + 3),
    ]
    any_row = False
    for scenario in _scenarios(results):
        pair_list = pairs(results, scenario.name, baseline)
        if not pair_list:
            continue
        any_row = True
        ours = _runs(results, OURS, scenario.name)
        theirs = _runs(results, baseline, scenario.name)
        cells = []
        for key in RATIO_KEYS:
            text = _ratio_text(median(_values(ours, key)), median(_values(theirs, key)))
            by_pair = pair_ratios(pair_list, key)
            if len(by_pair) > 1 and text not in ("—", "="):
                text += f" ({_fmt_ratio(min(by_pair))}-{_fmt_ratio(max(by_pair))})"
            cells.append(text)
        headline = pair_ratios(pair_list, HEADLINE)
        noisy = "**noisy**" if is_noisy(headline) else ""
        lines.append(
            f"| {scenario.name} | {len(pair_list)} | " + " | ".join(cells) + f" | {noisy} |"
        )
    return "\n".join(lines) if any_row else ""


def reference_table(results: Sequence[Result], reference: str) -> str:
    """Ours ÷ a reference server that ran outside the pairs: ratio of medians."""
    lines = [
        "| scenario | " + " | ".join(HEADERS[k] for k in RATIO_KEYS) + " |",
        "|" + "---|" * (len(RATIO_KEYS) + 1),
    ]
    any_row = False
    for scenario in _scenarios(results):
        ours = _runs(results, OURS, scenario.name)
        theirs = _runs(results, reference, scenario.name)
        if not ours or not theirs:
            continue
        any_row = True
        cells = [
            _ratio_text(median(_values(ours, k)), median(_values(theirs, k))) for k in RATIO_KEYS
        ]
        lines.append(f"| {scenario.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if any_row else ""


def pair_table(results: Sequence[Result], baseline: str) -> str:
    """Every pair: the order its runs went in, both figures, their ratio, the floor."""
    fmt = FORMATS[HEADLINE]
    lines = [
        f"| scenario | pair | order | {SHORT_LABELS[OURS]} {HEADERS[HEADLINE]} | "
        f"{SHORT_LABELS.get(baseline, baseline)} {HEADERS[HEADLINE]} | ratio | "
        "sendto floor µs |",
        "|---|---|---|---|---|---|---|",
    ]
    any_row = False
    for scenario in _scenarios(results):
        for ours, theirs in pairs(results, scenario.name, baseline):
            any_row = True
            first, second = sorted((ours, theirs), key=lambda r: r.order or 0)
            order = f"{SHORT_LABELS.get(first.server)}, {SHORT_LABELS.get(second.server)}"
            value = ratio(ours.figures.get(HEADLINE), theirs.figures.get(HEADLINE))
            lines.append(
                f"| {scenario.name} | {(ours.pair or 0) + 1} | {order} | "
                f"{format_figure(ours.figures.get(HEADLINE), fmt)} | "
                f"{format_figure(theirs.figures.get(HEADLINE), fmt)} | "
                f"{'—' if value is None else _fmt_ratio(value)} | "
                f"{format_figure(ours.floor_us, '{:.1f}')} |"
            )
    return "\n".join(lines) if any_row else ""


def floors(results: Sequence[Result]) -> list[float]:
    """One sendto floor per pair (both runs of a pair carry the same one)."""
    seen: dict[tuple[str, int], float] = {}
    for r in results:
        if r.pair is not None and r.floor_us is not None:
            seen[(r.scenario.name, r.pair)] = r.floor_us
    return list(seen.values())


def markdown(
    results: Sequence[Result], command: str, info: dict[str, Any], plot: str | None
) -> str:
    baseline = info.get("baseline", BASELINE)
    n_pairs = info.get("pairs") or 0
    references = [
        s for s in LABELS if s not in (OURS, baseline) and any(r.server == s for r in results)
    ]
    parts = [
        f"Command: `{command}`  ",
        f"Machine: {info['cores']} cores, {info['cpu_model']}, Linux {info['kernel']}, "
        f"Python {info['python']}  ",
        f"Date: {info['date']}",
        "",
        f"Order: in every scenario {n_pairs} pairs of runs, A B B A … (A = aiosfu, "
        f"B = {LABELS.get(baseline, baseline)}), "
        + (
            f"with {', '.join(LABELS[s] for s in references)} once each in the middle "
            "of the sequence"
            if references
            else "and no reference server"
        )
        + f"; {info.get('duration_s', 4):g} s measured per run. Figures are medians "
        "(min-max over the runs); ratios are ratios of the medians (min-max of the "
        "ratios pair by pair).",
        "",
    ]
    floor_values = floors(results)
    if floor_values:
        parts += [
            f"Floor: a bare `sendto` of a 1200-byte datagram to one of 20 loopback sockets "
            f"read on the other core, at 3400 datagrams/s (the 1v20 rate), measured just "
            f"before every pair (`bench/floor.py`): {spread_cell(floor_values, '{:.1f}')} µs "
            "of CPU in this run; it moves with the machine, each pair's is in the pair "
            "table.",
            "",
        ]
    table = ratio_table(results, baseline)
    if table:
        parts += [
            f"### aiosfu ÷ {LABELS.get(baseline, baseline)}, the baseline",
            "",
            "Below 1: ours is lower, which is better for every column but frames %. "
            f"**noisy**: the pair ratios of {HEADERS[HEADLINE]} differ by more than "
            f"{round((NOISY_SPREAD - 1) * 100)}% (max ÷ min), so that scenario's ratio "
            "is only known to within its range.",
            "",
            table,
            "",
        ]
    table = pair_table(results, baseline)
    if table:
        parts += [
            f"### Pair by pair: {HEADERS[HEADLINE]}, and the machine's floor beside it",
            "",
            table,
            "",
        ]
    for reference in references:
        table = reference_table(results, reference)
        if table:
            parts += [
                f"### aiosfu ÷ {LABELS[reference]} (reference, run once per scenario)",
                "",
                table,
                "",
            ]
    for server in LABELS:
        table = server_table(results, server)
        if table:
            parts += [f"### {LABELS[server]}", "", table, ""]
    if plot:
        parts += [f"![CPU per forwarded packet and loss against subscribers]({plot})", ""]
    return "\n".join(parts)


def write_json(
    results: Sequence[Result], info: dict[str, Any], path: Path, command: str = ""
) -> None:
    payload = {
        "command": command,
        "machine": info,
        "results": [
            {
                "server": r.server,
                "scenario": r.scenario.name,
                "publishers": r.scenario.publishers,
                "subscribers_per_publisher": r.scenario.subscribers,
                "mesh": r.scenario.mesh,
                "order": r.order,
                "pair": r.pair,
                "floor_us": r.floor_us,
                "figures": r.figures,
                "notes": r.notes,
                "error": r.error,
            }
            for r in results
        ],
    }
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


TARGET_US_PER_PACKET_OUT = 10.0


def read_json(path: Path) -> tuple[list[Result], dict[str, Any], str]:
    """Results written by `write_json`, to render them again without measuring again."""
    payload = json.loads(path.read_text())
    results = [
        Result(
            r["server"],
            Scenario(
                r["scenario"],
                r["publishers"],
                r["subscribers_per_publisher"],
                r.get("mesh", r["publishers"] > 1),
            ),
            r["figures"],
            r["notes"],
            r["error"],
            r.get("order"),
            r.get("pair"),
            r.get("floor_us"),
        )
        for r in payload["results"]
    ]
    return results, payload["machine"], payload.get("command") or "make bench"


def plot(results: Sequence[Result], path: Path) -> bool:
    """CPU µs per forwarded packet (median, min-max bars) and loss % against subscriber
    count (the 1vN runs), with the band of sendto floors measured in the run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (cpu_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for (server, label), color in zip(LABELS.items(), ("C0", "C1", "C3", "C2"), strict=True):
        points = []
        for scenario in _scenarios(results):
            runs = _runs(results, server, scenario.name)
            cpu = _values(runs, HEADLINE)
            if scenario.mesh or not cpu:
                continue
            loss = _values(runs, "loss_percent") or [0.0]
            points.append((scenario.subscribers, cpu, loss))
        if not points:
            continue
        points.sort(key=lambda point: point[0])
        xs = [n for n, _, _ in points]
        mids = [statistics.median(cpu) for _, cpu, _ in points]
        low = [m - min(cpu) for m, (_, cpu, _) in zip(mids, points, strict=True)]
        high = [max(cpu) - m for m, (_, cpu, _) in zip(mids, points, strict=True)]
        cpu_ax.errorbar(xs, mids, yerr=[low, high], fmt="o-", c=color, capsize=3, label=label)
        loss_ax.plot(
            xs, [statistics.median(loss) for _, _, loss in points], "o-", c=color, label=label
        )
    cpu_ax.axhline(TARGET_US_PER_PACKET_OUT, ls="--", c="grey", label="target (10 µs)")
    floor_values = floors(results)
    if floor_values:
        cpu_ax.axhspan(
            min(floor_values),
            max(floor_values),
            color="black",
            alpha=0.12,
            label=f"sendto floor ({min(floor_values):.1f}-{max(floor_values):.1f} µs)",
        )
    cpu_ax.set(
        xlabel="subscribers (1 publisher)",
        ylabel="server CPU µs per forwarded packet",
        yscale="log",
        title="CPU per forwarded packet (median, min-max)",
    )
    loss_ax.set(xlabel="subscribers (1 publisher)", ylabel="lost % (median)", title="Loss")
    for ax in (cpu_ax, loss_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


def update_benchmarks_md(path: Path, body: str) -> None:
    """Replace the generated block of BENCHMARKS.md, keeping the hand-written text."""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
