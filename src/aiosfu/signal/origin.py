"""Which web pages may open a signaling WebSocket: cross-site WebSocket hijacking.

Browsers send `Origin` with every WebSocket upgrade and, unlike `fetch`, apply no CORS
check to it: without this, any page a user opens could connect to a server it can reach
and act as that user. A page of the same origin as the server (the demo page) and the
origins an operator lists are allowed; `null` (sandboxed frames, `file:` pages) is not.
A request without `Origin` is not from a browser page (a Python client, a command-line
peer): it is allowed, because such a client can send any header it likes anyway, so the
header proves nothing and only tokens keep it out.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from urllib.parse import urlsplit

from aiohttp import web


def _normalize(origin: str) -> str:
    parts = urlsplit(origin.strip().lower())
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        return ""
    return f"{parts.scheme}://{parts.hostname}:{port}"


def origin_allowed(request: web.Request, allowed: Collection[str]) -> bool:
    return origin_allowed_for(request.headers, allowed, request.secure, request.host)


def origin_allowed_for(
    headers: Mapping[str, str], allowed: Collection[str], secure: bool, host: str
) -> bool:
    """`origin_allowed` for a request known by its headers, its scheme and its host."""
    origin = headers.get("Origin")
    if origin is None:
        return True
    wanted = _normalize(origin)
    if not wanted:
        return False  # "null" and anything that is not scheme://host[:port]
    if "*" in allowed or wanted in {_normalize(a) for a in allowed}:
        return True
    # Behind a TLS-terminating proxy the page is https while we see http; a browser
    # cannot set X-Forwarded-Proto on its upgrade, so trusting it here is safe.
    forwarded = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in ("http", "https") else "https" if secure else "http"
    return wanted == _normalize(f"{scheme}://{host}")
