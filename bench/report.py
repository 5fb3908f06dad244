"""Results as Markdown tables (ours, each baseline, ours as a ratio to each baseline),
as JSON, and as a plot of CPU per forwarded packet and loss against subscriber count."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.run import Result, Scenario

OURS = "aiosfu"
LABELS = {
    "aiosfu": "aiosfu",
    "janus": "Janus VideoRoom",
    "aiortc-relay": "aiortc MediaRelay",
}

# (key, header, format)
COLUMNS: list[tuple[str, str, str]] = [
    ("cpu_us_per_packet_in", "CPU µs/pkt in", "{:.1f}"),
    ("cpu_us_per_packet_out", "CPU µs/pkt out", "{:.1f}"),
    ("cpu_percent", "% of a core", "{:.1f}"),
    ("cpu_system_percent", "of which kernel", "{:.1f}"),
    ("idle_cpu_percent", "% core, no media", "{:.1f}"),
    ("pps_in", "pkt/s in", "{:.0f}"),
    ("pps_out", "pkt/s out", "{:.0f}"),
    ("loss_percent", "loss %", "{:.2f}"),
    ("frames_delivered_percent", "frames %", "{:.1f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.2f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.2f}"),
    ("first_packet_ms", "1st pkt ms", "{:.0f}"),
    ("first_keyframe_ms", "1st keyframe ms", "{:.0f}"),
    ("rss_mb", "RSS MB", "{:.1f}"),
    ("generator_cpu_percent", "generator % core", "{:.0f}"),
]
RATIO_KEYS = [
    "cpu_us_per_packet_in",
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


def _notes(result: Result) -> str:
    parts = list(result.notes)
    if result.error:
        parts.append(f"failed: {result.error}")
    return "; ".join(parts).replace("|", "/")


def server_table(results: Sequence[Result], server: str) -> str:
    rows = [r for r in results if r.server == server]
    if not rows:
        return ""
    header = "| scenario | " + " | ".join(h for _, h, _ in COLUMNS) + " | notes |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    lines = [header, rule]
    for r in rows:
        cells = [format_figure(r.figures.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {r.scenario.name} | " + " | ".join(cells) + f" | {_notes(r)} |")
    return "\n".join(lines)


def _ratio(ours: Any, theirs: Any) -> str:
    if ours is None or theirs is None:
        return "—"
    if theirs == 0:
        return "=" if ours == 0 else "—"
    ratio = ours / theirs
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.3f}"


def ratio_table(results: Sequence[Result], baseline: str) -> str:
    by = {(r.server, r.scenario.name): r for r in results if not r.error}
    headers = {key: header for key, header, _ in COLUMNS}
    lines = [
        "| scenario | " + " | ".join(headers[k] for k in RATIO_KEYS) + " |",
        "|" + "---|" * (len(RATIO_KEYS) + 1),
    ]
    scenarios = [r.scenario.name for r in results if r.server == OURS]
    any_row = False
    for name in scenarios:
        ours, theirs = by.get((OURS, name)), by.get((baseline, name))
        if ours is None or theirs is None or not ours.figures or not theirs.figures:
            continue
        any_row = True
        cells = [_ratio(ours.figures.get(k), theirs.figures.get(k)) for k in RATIO_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if any_row else ""


def markdown(
    results: Sequence[Result], command: str, info: dict[str, Any], plot: str | None
) -> str:
    parts = [
        f"Command: `{command}`  ",
        f"Machine: {info['cores']} cores, {info['cpu_model']}, Linux {info['kernel']}, "
        f"Python {info['python']}  ",
        f"Date: {info['date']}",
        "",
    ]
    if info.get("sendto_floor_us"):
        parts += [
            f"Floor: a bare `sendto` of a 1200-byte datagram to one of 20 loopback sockets "
            f"read on the other core, at 3400 datagrams/s (the 1v20 rate), costs "
            f"**{info['sendto_floor_us']:.1f} µs** of CPU here (`bench/floor.py`), before "
            "any SRTP or header work.",
            "",
        ]
    baselines = [s for s in LABELS if s != OURS and any(r.server == s for r in results)]
    for baseline in baselines:
        table = ratio_table(results, baseline)
        if table:
            parts += [
                f"### aiosfu ÷ {LABELS[baseline]} (below 1: ours is lower, which is better "
                "for every column but frames %)",
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
        )
        for r in payload["results"]
    ]
    return results, payload["machine"], payload.get("command") or "make bench"


def plot(results: Sequence[Result], path: Path, floor_us: float | None = None) -> bool:
    """CPU µs per forwarded packet and loss % against subscriber count (the 1vN runs)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (cpu_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for (server, label), color in zip(LABELS.items(), ("C0", "C1", "C2"), strict=True):
        points = sorted(
            ((r.scenario.subscribers, r.figures) for r in results
             if r.server == server and not r.scenario.mesh and not r.error and r.figures),
            key=lambda point: point[0],
        )  # fmt: skip
        if not points:
            continue
        xs = [n for n, _ in points]
        cpu_ax.plot(xs, [f["cpu_us_per_packet_out"] for _, f in points], "o-", c=color, label=label)
        loss_ax.plot(
            xs,
            [f["loss_percent"] or 0.0 for _, f in points],
            "o-",
            c=color,
            label=f"{label}: packets",
        )
        frames_lost = [100 - (f["frames_delivered_percent"] or 100.0) for _, f in points]
        if any(x > 1.5 for x in frames_lost):  # only where it says more than window edges
            loss_ax.plot(xs, frames_lost, "s--", c=color, label=f"{label}: video frames")
    cpu_ax.axhline(TARGET_US_PER_PACKET_OUT, ls="--", c="grey", label="target (10 µs)")
    if floor_us:
        cpu_ax.axhline(floor_us, ls=":", c="black", label=f"bare sendto floor ({floor_us:.1f} µs)")
    cpu_ax.set(
        xlabel="subscribers (1 publisher)",
        ylabel="server CPU µs per forwarded packet",
        yscale="log",
        title="CPU per forwarded packet",
    )
    loss_ax.set(xlabel="subscribers (1 publisher)", ylabel="lost %", title="Loss")
    for ax in (cpu_ax, loss_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
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
