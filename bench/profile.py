"""Summarise a py-spy raw profile of our server: where the forwarding time goes.

`python -m bench.profile FILE` prints, for the stages of the forwarding path, the share
of the samples spent in them (inclusive), and the functions most samples ended in.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (label, function as py-spy names it, "incl" = samples in it and below, "self" = samples
# that ended in it, which for a Python function calling C (socket.sendto) is that C call)
STAGES = [
    (
        "socket callback → fan-out done (all forwarding)",
        "PacketIO._ingress.<locals>.datagram_received",
        "incl",
    ),
    ("· SRTP unprotect (in)", "fast_unprotect.<locals>.unprotect", "incl"),
    ("· RTP parse (in)", "RtpPacket.parse", "incl"),
    ("· aiortc ingress work: stats, NACK, REMB (in)", "ForwardingReceiver._accept", "incl"),
    ("· per-subscriber step (SimpleConsumer.forward)", "SimpleConsumer.forward", "incl"),
    ("· · header rewrite", "RtpRewriter.header", "incl"),
    ("· · SRTP protect (out)", "fast_protect_parts.<locals>.protect", "incl"),
    (
        "    sendto syscall (out, incl. kernel)",
        "PacketIO._egress.<locals>.send_direct",
        "self",
    ),
    ("asyncio loop bookkeeping", "BaseEventLoop._run_once", "self"),
    ("aiortc's own path (RTCP, DTLS, STUN)", "RTCDtlsTransport._recv_next", "incl"),
    ("in epoll_wait, runnable (wake-ups)", "EpollSelector.select", "self"),
]


def load(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        names = [frame.split(" (")[0] for frame in stack.split(";") if frame]
        for name in set(names):
            inclusive[name] += n
        leaves[names[-1] if names else "<no Python frame>"] += n
    return total, inclusive, leaves


def summary(path: Path, top: int = 8) -> str:
    total, inclusive, leaves = load(path)
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "", "| stage | share of samples |", "|---|---|"]
    for label, name, mode in STAGES:
        samples = inclusive[name] if mode == "incl" else leaves[name]
        lines.append(f"| {label} | {100 * samples / total:.1f}% |")
    lines += ["", "| where samples ended | share |", "|---|---|"]
    for name, n in leaves.most_common(top):
        lines.append(f"| `{name}` | {100 * n / total:.1f}% |")
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summary(Path(arg)))
        print()
