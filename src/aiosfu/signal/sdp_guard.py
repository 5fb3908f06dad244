"""A linear pass over an offer before the media plane parses it.

aiortc's SDP handling does work per m-line against every other m-line (thousands of
m-lines in one frame cost seconds of event-loop time) and trusts `a=mid` (a section
without one, or two sections with the same one, make `createAnswer` raise
`AttributeError`). Neither is a parser we should write: this pass only counts, in one
read of the text, and refuses what aiortc handles badly with `bad-sdp` and a reason.
It also tells the signaling layer which kinds of media the offer would send, so grants
are checked before any transport exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiosfu.contract import ErrorCode
from aiosfu.signal.protocol import ProtocolError

BAD_SDP = ErrorCode.BAD_SDP

# Per m-section: far above what browsers offer (Chromium ~40 payload types for video, a
# few candidates per interface), far below what makes aiortc's pairwise loops slow.
MAX_PAYLOAD_TYPES = 128
MAX_CANDIDATES = 64
MAX_LINES = 4000


@dataclass
class Section:
    kind: str
    mid: str | None = None
    direction: str = "sendrecv"
    payload_types: int = 0
    candidates: int = 0


@dataclass
class OfferSummary:
    sections: list[Section] = field(default_factory=list)

    def sending(self) -> list[str]:
        """Kinds of media (audio, video) the offerer would send."""
        return [
            s.kind
            for s in self.sections
            if s.kind in ("audio", "video") and s.direction in ("sendrecv", "sendonly")
        ]

    def receiving(self) -> list[str]:
        return [
            s.kind
            for s in self.sections
            if s.kind in ("audio", "video") and s.direction in ("sendrecv", "recvonly")
        ]

    @property
    def has_data(self) -> bool:
        return any(s.kind == "application" for s in self.sections)


def _refuse(reason: str) -> ProtocolError:
    return ProtocolError(BAD_SDP, reason)


def check_offer(sdp: str, max_sections: int) -> OfferSummary:
    lines = sdp.splitlines()
    if len(lines) > MAX_LINES:
        raise _refuse(f"the offer has {len(lines)} lines; at most {MAX_LINES} are accepted")
    summary = OfferSummary()
    bundle: set[str] | None = None
    current: Section | None = None
    for line in lines:
        if line.startswith("m="):
            if len(summary.sections) >= max_sections:
                raise _refuse(f"the offer has more than {max_sections} m-lines")
            current = Section(kind=line[2:].split(" ", 1)[0])
            summary.sections.append(current)
        elif current is None:
            if line.startswith("a=group:BUNDLE"):
                bundle = set(line[len("a=group:BUNDLE") :].split())
        elif line.startswith("a=mid:"):
            if current.mid is not None:
                raise _refuse(f"m-line {len(summary.sections) - 1} has two a=mid lines")
            current.mid = line[len("a=mid:") :].strip()
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
            current.direction = line[2:]
        elif line.startswith("a=rtpmap:"):
            current.payload_types += 1
            if current.payload_types > MAX_PAYLOAD_TYPES:
                raise _refuse(f"an m-line has more than {MAX_PAYLOAD_TYPES} payload types")
        elif line.startswith("a=candidate:"):
            current.candidates += 1
            if current.candidates > MAX_CANDIDATES:
                raise _refuse(f"an m-line has more than {MAX_CANDIDATES} candidates")
    if not summary.sections:
        raise _refuse("the offer has no m-line")
    seen: set[str] = set()
    for index, section in enumerate(summary.sections):
        if not section.mid:
            raise _refuse(f"m-line {index} ({section.kind}) has no a=mid")
        if section.mid in seen:
            raise _refuse(f"a=mid:{section.mid} names two m-lines")
        seen.add(section.mid)
        if bundle is None or section.mid not in bundle:
            raise _refuse(f"a=mid:{section.mid} is not in the offer's a=group:BUNDLE")
    return summary
