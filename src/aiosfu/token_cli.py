"""`aiosfu token`: sign a development token with a configured API key.

In production an institution's backend signs tokens with its own JWT library; this
command is for trying a server with keys configured, and for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import sys

from aiosfu.config import load_config
from aiosfu.signal.auth import mint_token
from aiosfu.signal.grants import ROLES, Grants, for_role


def _token(args: argparse.Namespace) -> None:
    secret = args.secret
    if secret is None:
        config = load_config(args.config)
        secret = next(
            (i.keys[args.key] for i in config.institutions.values() if args.key in i.keys),
            None,
        )
        if secret is None:
            raise ValueError(f"API key {args.key!r} is not configured (give --secret or --config)")
    grants = for_role(args.role, args.room) if args.role else Grants(room=args.room, roomJoin=True)
    if args.grants:
        grants = Grants.model_validate({**grants.model_dump(), **json.loads(args.grants)})
    print(
        mint_token(secret, args.key, args.uid, grants, args.ttl, args.name, args.metadata),
        file=sys.stdout,
    )


def add_token_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    token = commands.add_parser("token", help="print a signed access token (for development)")
    token.add_argument("--key", required=True, help="API key (the token's iss)")
    token.add_argument("--room", required=True, help="room the token grants")
    token.add_argument("--uid", required=True, help="peer uid (the token's sub)")
    token.add_argument("--role", choices=ROLES, help="grant preset (default: join only)")
    token.add_argument("--grants", help="grants to add, as JSON, e.g. '{\"canPublish\": true}'")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds it is valid")
    token.add_argument("--name", default="", help="display name")
    token.add_argument("--metadata", default="", help="free-form text for the room")
    token.add_argument("--secret", help="the key's secret (default: read from --config)")
    token.add_argument("--config", help="TOML config file holding the key")
    token.set_defaults(func=_token)
