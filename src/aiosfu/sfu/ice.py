"""Which local addresses ICE offers as host candidates.

aioice offers every interface address except loopback, which leaves a machine with only
loopback (a container, a CI sandbox, a test network namespace) with no candidates at all,
and gives an operator no way to pin media to one address. `use_host_addresses` replaces
aioice's address discovery for the whole process; the client SDK uses it too.
`use_port_range` keeps the server's host candidates inside a UDP port range, for a
firewall, a security group or a Kubernetes node that opens only that range.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

import aioice.ice

_original_get_host_addresses = aioice.ice.get_host_addresses


def default_host_addresses() -> list[str]:
    """aioice's choice, or loopback when that choice is empty."""
    addresses = _original_get_host_addresses(use_ipv4=True, use_ipv6=False)
    return addresses or ["127.0.0.1"]


def use_host_addresses(addresses: Sequence[str] | None) -> list[str]:
    """Make ICE gather host candidates on exactly `addresses` (or the default when empty)."""
    for address in addresses or ():
        ipaddress.ip_address(address)  # ValueError on a typo, before any peer sees it
    chosen = list(addresses) if addresses else default_host_addresses()

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            a
            for a in chosen
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses
    return chosen


def use_port_range(low: int, high: int) -> range | None:
    """Bind every host candidate on a port of `low`..`high` (both 0: any port)."""
    from aiosfu.sfu.aiortc_hooks import gather_host_candidates_in

    ports = range(low, high + 1) if low or high else None
    gather_host_candidates_in(ports)
    return ports


_original_datagram_received = aioice.ice.StunProtocol.datagram_received
malformed_stun_dropped = 0  # process-wide count, for tests and debugging


def _is_known_peer(
    connection: aioice.ice.Connection, component: int, addr: tuple[str, int]
) -> bool:
    nominated = connection._nominated.get(component)
    if nominated is not None and nominated.remote_addr == addr:
        return True
    return any(pair.remote_addr == addr for pair in connection._check_list)


def _datagram_received(self: aioice.ice.StunProtocol, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
    if not data:
        return
    # RFC 7983: a first byte of 0-3 is STUN, which ICE must see from anyone. Anything else
    # (DTLS, SRTP) is accepted only from an address ICE has paired with: aioice passes any
    # datagram up, and aiortc's transport dies on some malformed ones.
    if data[0] > 3:
        if _is_known_peer(self.receiver, self.local_candidate.component, (addr[0], addr[1])):
            _original_datagram_received(self, data, addr)
        return
    try:
        _original_datagram_received(self, data, addr)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError):
        # aioice's STUN parser trusts attribute lengths (a 2-byte PRIORITY raises
        # struct.error): anyone can send such a datagram, so it is dropped like garbage
        # instead of costing a traceback each.
        global malformed_stun_dropped
        malformed_stun_dropped += 1


def drop_unverified_datagrams() -> None:
    """Keep strangers' datagrams away from DTLS/SRTP (idempotent, process-wide)."""
    aioice.ice.StunProtocol.datagram_received = _datagram_received  # type: ignore[method-assign, assignment]
