"""Who a peer is: access tokens signed with an institution's API key.

A deployment serves several institutions (`bizid`); each has one or more API keys (two
at once while a key is rotated). An institution's backend signs a JWT (HS256) with a
key's secret: `iss` names the key, `sub` is the peer's uid, `exp`/`nbf` bound its life,
`name` and `metadata` describe the person, and the `video` claim holds the grants
(`aiosfu.signal.grants`). With no keys configured the server runs open: anyone may be
anyone, as the seed-002 protocol assumes, which is for development only.

Verification leans entirely on PyJWT: the algorithm list is fixed to HS256 (so `alg:
none` and algorithm confusion are refused by the library), and `exp`, `nbf`, `iss` and
`sub` are required claims.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from pydantic import ValidationError

from aiosfu.contract import CodedError, ErrorCode
from aiosfu.signal.grants import Grants

UNAUTHORIZED = ErrorCode.UNAUTHORIZED  # no identity, or one that cannot be believed
FORBIDDEN = ErrorCode.FORBIDDEN  # a believed identity without the grant for this request

ALGORITHM = "HS256"
LEEWAY_SECONDS = 10  # clocks of the institution's backend and ours may differ a little
MIN_SECRET_LENGTH = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash


class AuthError(CodedError):
    """`unauthorized` (no believable identity) or `forbidden` (no grant for this)."""


@dataclass(frozen=True)
class ApiKey:
    key: str
    secret: str
    bizid: str  # the institution the key belongs to


@dataclass(frozen=True)
class Identity:
    """A verified token: who the peer is, for which institution, allowed what."""

    uid: str
    bizid: str
    key: str
    grants: Grants
    name: str = ""
    metadata: str = ""
    expires_at: float = 0.0
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


class Authenticator:
    def __init__(self, institutions: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """`institutions`: bizid -> {API key: secret}."""
        self.keys: dict[str, ApiKey] = {}
        for bizid, keys in (institutions or {}).items():
            for key, secret in keys.items():
                if key in self.keys:
                    raise ValueError(f"API key {key!r} belongs to two institutions")
                if len(secret) < MIN_SECRET_LENGTH:
                    raise ValueError(
                        f"the secret of API key {key!r} is shorter than {MIN_SECRET_LENGTH}"
                    )
                self.keys[key] = ApiKey(key=key, secret=secret, bizid=bizid)

    @property
    def open(self) -> bool:
        """No keys: every peer is trusted to be who it says (development only)."""
        return not self.keys

    def mint(
        self,
        key: str,
        uid: str,
        grants: Grants,
        *,
        ttl: float = 3600.0,
        name: str = "",
        metadata: str = "",
        now: float | None = None,
    ) -> str:
        return mint_token(self.keys[key].secret, key, uid, grants, ttl, name, metadata, now)

    def verify(self, token: str, uid: str | None = None, now: float | None = None) -> Identity:
        """The identity a token proves; `AuthError(unauthorized)` for any doubt, before
        anything else happens. `uid`, when given, must be the token's subject."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError(UNAUTHORIZED, f"the token cannot be read: {exc}") from exc
        issuer = unverified.get("iss")
        api_key = self.keys.get(issuer) if isinstance(issuer, str) else None
        if api_key is None:
            raise AuthError(UNAUTHORIZED, "the token is not signed with a known API key (iss)")
        options: jwt.types.Options = {"require": ["exp", "nbf", "iss", "sub"]}
        if now is not None:  # tests pin the clock; PyJWT reads its own otherwise
            options["verify_exp"] = False
            options["verify_nbf"] = False
        try:
            claims = jwt.decode(
                token,
                api_key.secret,
                algorithms=[ALGORITHM],
                issuer=api_key.key,
                leeway=LEEWAY_SECONDS,
                options=options,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(UNAUTHORIZED, "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError(UNAUTHORIZED, "the token is not valid yet (nbf)") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(UNAUTHORIZED, f"the token is refused: {exc}") from exc
        if now is not None:
            _check_times(claims, now)
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError(UNAUTHORIZED, "the token's subject (sub) must be the peer's uid")
        if uid is not None and uid != subject:
            raise AuthError(UNAUTHORIZED, f"the token is for uid {subject!r}, not {uid!r}")
        try:
            grants = Grants.model_validate(claims.get("video") or {})
        except ValidationError as exc:
            raise AuthError(UNAUTHORIZED, f"the token's grants are malformed: {exc}") from exc
        name, metadata = claims.get("name", ""), claims.get("metadata", "")
        return Identity(
            uid=subject,
            bizid=api_key.bizid,
            key=api_key.key,
            grants=grants,
            name=name if isinstance(name, str) else "",
            metadata=metadata if isinstance(metadata, str) else "",
            expires_at=float(claims["exp"]),
            claims=claims,
        )


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    if not isinstance(claims["exp"], int | float) or not isinstance(claims["nbf"], int | float):
        raise AuthError(UNAUTHORIZED, "exp and nbf must be numbers")
    if claims["exp"] <= now - LEEWAY_SECONDS:
        raise AuthError(UNAUTHORIZED, "the token has expired")
    if claims["nbf"] > now + LEEWAY_SECONDS:
        raise AuthError(UNAUTHORIZED, "the token is not valid yet (nbf)")


def mint_token(
    secret: str,
    key: str,
    uid: str,
    grants: Grants,
    ttl: float = 3600.0,
    name: str = "",
    metadata: str = "",
    now: float | None = None,
) -> str:
    """A token as an institution's backend would sign it (also `aiosfu token`)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": key,
        "sub": uid,
        "nbf": issued,
        "exp": issued + int(ttl),
        "video": grants.claim(),
    }
    if name:
        claims["name"] = name
    if metadata:
        claims["metadata"] = metadata
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def bearer_token(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The token of an HTTP request: `?token=` (browsers cannot set WebSocket headers)
    or `Authorization: Bearer`."""
    token = query.get("token")
    if token:
        return token
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
