"""`gateway keys create|list|revoke`: the same rules as `/admin/keys`, straight on the database."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from gateway.commands.database import run_on_database
from gateway.settings import Settings


def _with_keys(settings: Settings, fn: Any) -> Any:
    """`fn(keys, teams)` on the checked database (exit 3 when it is not usable)."""
    from gateway.storage.keys import KeyStore, TeamStore

    return run_on_database(settings, lambda engine: fn(KeyStore(engine), TeamStore(engine)))


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from gateway.keys.schemas import KeyCreate, key_view, to_row

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

    result = _with_keys(settings, create)
    if result is None:
        print(f"unknown team {body.team!r}", file=sys.stderr)
        return 1
    row, secret = result
    print(orjson.dumps({**key_view(row), "key": secret}, option=orjson.OPT_INDENT_2).decode())
    print("Store the key now: it is shown only once.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import key_view

    rows = _with_keys(settings, lambda keys, teams: keys.list(team=args.team))
    print(orjson.dumps({"data": [key_view(r) for r in rows]}, option=orjson.OPT_INDENT_2)
          .decode())
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    row = _with_keys(settings, lambda keys, teams: keys.revoke(args.key_id))
    if row is None:
        print(f"no key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {row['id']} ({row['name']})")
    return 0


def _parser(keys: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    return keys.add_parser(name, help=help_text, description=help_text[0].upper()
                           + help_text[1:] + ".", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def register(sub: Any) -> None:
    keys = sub.add_parser(
        "keys", help="manage virtual keys",
        description="Create, list and revoke virtual keys, straight on the database (the "
                    "same rules as /admin/keys).",
        epilog="examples:\n  gateway keys create --name my-app --models demo,demo-embed "
               "--rpm 600\n  gateway keys list --team search\n  gateway keys revoke key_…",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = _parser(keys, "create", "create a key (its secret is printed once)",
                     "example:\n  gateway keys create --name my-app --team search "
                     "--models demo --rpm 600 --budget-usd 25 --budget-period month")
    create.add_argument("--name", required=True, help="a name for people (unique not required)")
    create.add_argument("--team", help="the team (by name) whose limits also apply")
    create.add_argument("--role", default="app", choices=["app", "admin", "compliance"],
                        help="app calls /v1; admin also manages; compliance reads the audit "
                             "log (default: app)")
    create.add_argument("--models", help="comma-separated model names this key may use "
                        "(default: every model its team may use)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-concurrent", dest="max_concurrent", type=int,
                        help="requests in flight at once")
    create.add_argument("--budget-usd", dest="budget_usd", type=float,
                        help="spend cap in USD per budget period")
    create.add_argument("--budget-period", dest="budget_period",
                        choices=["day", "month", "total"],
                        help="the budget's period (default: month)")
    create.add_argument("--expires-at", dest="expires_at",
                        help="ISO 8601 UTC time, e.g. 2027-01-01T00:00:00Z")
    create.set_defaults(func=cmd_keys_create)
    lst = _parser(keys, "list", "list keys (never their secrets), as JSON",
                  "example:\n  gateway keys list\n  gateway keys list --team search")
    lst.add_argument("--team", help="only the keys of this team")
    lst.set_defaults(func=cmd_keys_list)
    revoke = _parser(keys, "revoke", "revoke a key; it answers 401 from then on",
                     "example:\n  gateway keys revoke key_01JD…   (the id from `gateway keys "
                     "list`)")
    revoke.add_argument("key_id", help="the key's id (key_…), not its secret")
    revoke.set_defaults(func=cmd_keys_revoke)
