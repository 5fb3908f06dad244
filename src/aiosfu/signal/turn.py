"""Time-limited TURN credentials in the TURN REST API scheme (coturn `use-auth-secret`).

The TURN server and we share a secret; a credential is `username = "<expiry>:<uid>"` and
`password = base64(HMAC-SHA1(secret, username))`, which the TURN server checks without
asking us. A credential handed to one peer stops working at its expiry, so one copied
out of a page is of little use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import Any


def credential(secret: str, uid: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{uid}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    stun_and_static: Sequence[dict[str, Any]],
    turn_urls: Sequence[str],
    secret: str,
    uid: str,
    ttl: int,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """RTCIceServer dictionaries for one peer: the configured ones, then TURN with a fresh
    credential (when a TURN secret is configured)."""
    servers = [dict(s) for s in stun_and_static]
    if turn_urls and secret:
        username, password = credential(secret, uid, ttl, now)
        servers.append({"urls": list(turn_urls), "username": username, "credential": password})
    return servers
