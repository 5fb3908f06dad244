"""Which local addresses ICE offers as host candidates.

aioice offers every interface address except loopback, which leaves a machine with only
loopback (a container, a CI sandbox, a test network namespace) with no candidates at all,
and gives an operator no way to pin media to one address. `use_host_addresses` replaces
aioice's address discovery for the whole process; the client SDK uses it too.
"""

from __future__ import annotations

import ipaddress
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
