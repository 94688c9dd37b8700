"""`gateway keys create|list|revoke`: the same rules as `/admin/keys`, straight on the database."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson

from gateway.settings import Settings


async def _with_keys(fn: Any) -> Any:
    from gateway.storage.engine import create_engine
    from gateway.storage.keys import KeyStore, TeamStore

    settings = Settings()
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await fn(KeyStore(engine), TeamStore(engine))
    finally:
        await engine.dispose()


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from gateway.api.admin_schemas import KeyCreate, key_view, to_row

    fields: dict[str, Any] = {"name": args.name, "role": args.role}
    for name in ("team", "rpm", "tpm", "max_concurrent", "budget_usd", "budget_period",
                 "expires_at"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    if args.models is not None:
        fields["models"] = [m for m in args.models.split(",") if m]
    try:
        body = KeyCreate.model_validate(fields)
    except ValidationError as exc:
        for err in exc.errors():
            print(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
        return 2

    async def create(keys: Any, teams: Any) -> tuple[dict, str] | None:
        if body.team is not None and await teams.get(body.team) is None:
            return None
        return await keys.create(to_row(body.model_dump()))

    result = asyncio.run(_with_keys(create))
    if result is None:
        print(f"unknown team {body.team!r}", file=sys.stderr)
        return 1
    row, secret = result
    print(orjson.dumps({**key_view(row), "key": secret}, option=orjson.OPT_INDENT_2).decode())
    print("Store the key now: it is shown only once.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.api.admin_schemas import key_view

    rows = asyncio.run(_with_keys(lambda keys, teams: keys.list(team=args.team)))
    print(orjson.dumps({"data": [key_view(r) for r in rows]}, option=orjson.OPT_INDENT_2)
          .decode())
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    row = asyncio.run(_with_keys(lambda keys, teams: keys.revoke(args.key_id)))
    if row is None:
        print(f"no key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {row['id']} ({row['name']})")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage virtual keys").add_subparsers(
        dest="keys_command", required=True)
    create = keys.add_parser("create", help="create a key (its secret is printed once)")
    create.add_argument("--name", required=True)
    create.add_argument("--team")
    create.add_argument("--role", default="app", choices=["app", "admin", "compliance"])
    create.add_argument("--models", help="comma-separated model names (default: all)")
    create.add_argument("--rpm", type=int)
    create.add_argument("--tpm", type=int)
    create.add_argument("--max-concurrent", dest="max_concurrent", type=int)
    create.add_argument("--budget-usd", dest="budget_usd", type=float)
    create.add_argument("--budget-period", dest="budget_period",
                        choices=["day", "month", "total"])
    create.add_argument("--expires-at", dest="expires_at",
                        help="ISO 8601 UTC time, e.g. 2027-01-01T00:00:00Z")
    create.set_defaults(func=cmd_keys_create)
    lst = keys.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--team")
    lst.set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key; it answers 401 from then on")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_keys_revoke)
