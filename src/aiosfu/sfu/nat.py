"""1:1 NAT: bind the private address, announce the public one.

On most cloud VMs the interface holds a private address and the provider maps a public
one onto it outside the machine (AWS, GCP, Azure, most Kubernetes nodes with host
networking). ICE can only bind what the interface has, so the host candidates it gathers
carry the private address, which no client outside can reach. This is the same problem
Janus solves with `nat_1_1_mapping` and LiveKit with `use_external_ip`: the sockets stay
on the private address, and the candidates the server hands out name the public one.
Incoming checks then arrive, through the provider's mapping, on the private socket, and
aioice answers them there; nothing in ICE itself has to change.

The rewrite is done on the answer's text, after aiortc wrote it, because the private
address must stay what aioice pairs and sends from.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

_CANDIDATE = re.compile(
    r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host\b.*)$", re.IGNORECASE | re.MULTILINE
)
_CONNECTION = re.compile(r"^(c=IN IP[46] )(\S+)(\r?)$", re.MULTILINE)


def nat_mapping(
    host_addresses: Sequence[str], public_ip: str = "", mapping: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Private → public addresses, validated before any peer sees them.

    `mapping` names pairs explicitly; `public_ip` is the common one-address case: every
    host address the server gathers on is announced as that address.
    """
    pairs = dict(mapping or {})
    if public_ip:
        for address in host_addresses:
            pairs.setdefault(address, public_ip)
    for private, public in pairs.items():
        a, b = ipaddress.ip_address(private), ipaddress.ip_address(public)
        if a.version != b.version:
            raise ValueError(f"NAT mapping {private} -> {public}: IPv4 and IPv6 mixed")
    return pairs


def announce_public(sdp: str, mapping: Mapping[str, str]) -> str:
    """Replace mapped private addresses in host candidates and `c=` lines of `sdp`."""
    if not mapping:
        return sdp

    def candidate(match: re.Match[str]) -> str:
        return match.group(1) + mapping.get(match.group(2), match.group(2)) + match.group(3)

    def connection(match: re.Match[str]) -> str:
        return match.group(1) + mapping.get(match.group(2), match.group(2)) + match.group(3)

    return _CONNECTION.sub(connection, _CANDIDATE.sub(candidate, sdp))
