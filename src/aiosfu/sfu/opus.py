"""The Opus `a=fmtp` of our answers (RFC 7587 §6.1), derived from the offer's.

aiortc answers Opus with no fmtp at all: a browser then sends mono without in-band FEC
and forgets the offerer's playback limits. The SFU forwards Opus as it comes, so it asks
for what serves subscribers best and keeps the offerer's own wishes where they are valid:

- `stereo=1` and `sprop-stereo=1`: stereo is forwarded at no extra cost;
- `useinbandfec=1` when the offer has it (the publisher can encode FEC, and subscribers'
  decoders recover lost packets from it);
- `maxplaybackrate`, `usedtx`, `minptime`, `ptime`, `maxptime`, `maxaveragebitrate`, `cbr`
  as offered, when they are within the RFC's range; anything else is left out rather
  than passed on, so no answer ever carries an out-of-range value.

Written here rather than taken from aiortc because aiortc keeps no Opus parameters at all.
"""

from __future__ import annotations

import re

# RFC 7587 §6.1 ranges (ptime family: RFC 4566 milliseconds, Opus frames are 2.5-120 ms).
RANGES: dict[str, tuple[int, int]] = {
    "maxplaybackrate": (8000, 48000),
    "maxaveragebitrate": (6000, 510000),
    "minptime": (3, 120),
    "ptime": (3, 120),
    "maxptime": (3, 120),
    "usedtx": (0, 1),
    "cbr": (0, 1),
}
# Written in this order, after the ones we always set.
KEPT = ("minptime", "ptime", "maxptime", "maxplaybackrate", "maxaveragebitrate", "usedtx", "cbr")


def parse_fmtp(text: str) -> dict[str, str]:
    """`a=fmtp` parameters as text, the way RFC 4566 writes them (`k=v;k=v`)."""
    params: dict[str, str] = {}
    for part in text.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip()
    return params


def _valid(key: str, value: str) -> bool:
    low, high = RANGES[key]
    return value.isdigit() and low <= int(value) <= high


def answer_parameters(offered: dict[str, str]) -> dict[str, str]:
    """What our answer asks for, given one offered Opus payload type's parameters."""
    answer = {"stereo": "1", "sprop-stereo": "1"}
    if offered.get("useinbandfec") == "1":
        answer["useinbandfec"] = "1"
    for key in KEPT:
        value = offered.get(key)
        if value is not None and _valid(key, value):
            answer[key] = value
    return answer


def _offered_opus(offer_sdp: str) -> dict[str, dict[str, str]]:
    """Offered Opus parameters by payload type (an offer may have none for a type)."""
    lines = offer_sdp.splitlines()
    types = {m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) opus/", line, re.I))}
    offered: dict[str, dict[str, str]] = {pt: {} for pt in types}
    for line in lines:
        fmtp = re.match(r"a=fmtp:(\d+) (.*)", line)
        if fmtp and fmtp.group(1) in offered:
            offered[fmtp.group(1)] = parse_fmtp(fmtp.group(2))
    return offered


def negotiate_opus(offer_sdp: str, answer_sdp: str) -> str:
    """The answer with each Opus payload type's fmtp set from the offer's (see module doc).

    aiortc keeps the offer's payload type numbers in its answer, so they pair up by number.
    """
    offered = _offered_opus(offer_sdp)
    lines = answer_sdp.split("\r\n")
    answered = {
        m.group(1) for line in lines if (m := re.match(r"a=rtpmap:(\d+) opus/", line, re.I))
    }
    out: list[str] = []
    for line in lines:
        fmtp = re.match(r"a=fmtp:(\d+) ", line)
        if fmtp and fmtp.group(1) in answered:
            continue  # replaced below, after its rtpmap
        out.append(line)
        rtpmap = re.match(r"a=rtpmap:(\d+) opus/", line, re.I)
        if rtpmap:
            pt = rtpmap.group(1)
            params = answer_parameters(offered.get(pt, {}))
            out.append(f"a=fmtp:{pt} " + ";".join(f"{k}={v}" for k, v in params.items()))
    return "\r\n".join(out)
