"""`gateway keys create|list|update|revoke`: the rules of `/admin/keys`, straight on the
database; every change is an audit event (`gateway.commands.changes`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.commands.admin_common import (
    Refused,
    add_limit_options,
    check_team,
    checked_body,
    fields_from,
    print_json,
    subcommand,
    update_body,
    with_stores,
)
from gateway.commands.changes import ChangeLog
from gateway.settings import Settings

_LIMITS = ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period", "expires_at")
CLEARABLE = ("team", "models", "rpm", "tpm", "max_concurrent", "budget_usd", "expires_at",
             "metadata")


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import KeyCreate, key_change_view, key_view, to_row

    fields = {"name": args.name, "role": args.role, **fields_from(args, ("team", *_LIMITS))}
    body = checked_body(settings, KeyCreate, fields)
    if isinstance(body, int):
        return body
    log = ChangeLog("gateway keys create")

    async def create(keys: Any, teams: Any, engine: Any) -> tuple[dict, str]:
        await check_team(teams, body.team)
        row, secret = await keys.create(to_row(body.model_dump()))
        log.add("key.create", "key", row["id"], row["name"], None, key_change_view(row))
        await log.write(engine, settings)
        return row, secret

    try:
        row, secret = with_stores(settings, create)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    print_json({**key_view(row), "key": secret})
    print(f"Created key {row['id']} ({row['name']}). Store the key now: it is shown only "
          "once.", file=sys.stderr)
    return 0


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import key_view

    rows = with_stores(settings, lambda keys, teams, engine: keys.list(team=args.team))
    print_json({"data": [key_view(r) for r in rows]})
    return 0


def cmd_keys_update(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import KeyUpdate, key_change_view, key_view, to_row

    checked = update_body(args, settings, ("name", "team", "role", *_LIMITS), KeyUpdate)
    if isinstance(checked, int):
        return checked
    body, fields = checked
    changes = {name: getattr(body, name) for name in fields}
    log = ChangeLog("gateway keys update")

    async def update(keys: Any, teams: Any, engine: Any) -> dict | None:
        before = await keys.get(args.key_id)
        if before is None:
            return None
        await check_team(teams, changes.get("team"))
        row = await keys.update(args.key_id, to_row(changes))
        log.add("key.update", "key", row["id"], row["name"], key_change_view(before),
                key_change_view(row))
        await log.write(engine, settings)
        return row

    try:
        row = with_stores(settings, update)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    if row is None:
        print(f"no key with id {args.key_id!r} (ids look like key_…: gateway keys list)",
              file=sys.stderr)
        return 1
    print_json(key_view(row))
    print(f"Updated key {row['id']} ({row['name']}): {', '.join(sorted(changes))}. Running "
          "gateways apply it within a few seconds.", file=sys.stderr)
    return 0


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import key_change_view
    from gateway.timeutil import iso

    log = ChangeLog("gateway keys revoke")

    async def revoke(keys: Any, teams: Any, engine: Any) -> tuple[dict | None, bool]:
        before = await keys.get(args.key_id)
        if before is None or before["revoked_at"] is not None:
            return before, False
        row = await keys.revoke(args.key_id)
        log.add("key.revoke", "key", row["id"], row["name"], key_change_view(before),
                key_change_view(row))
        await log.write(engine, settings)
        return row, True

    row, revoked = with_stores(settings, revoke)
    if row is None:
        print(f"no key with id {args.key_id!r} (ids look like key_…: gateway keys list)",
              file=sys.stderr)
        return 1
    if not revoked:
        print(f"{row['id']} ({row['name']}) was already revoked at {iso(row['revoked_at'])}: "
              "nothing changed")
        return 0
    print(f"revoked {row['id']} ({row['name']}): it answers 401 from now on")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser(
        "keys", help="manage virtual keys",
        description="Create, list, update and revoke virtual keys, straight on the database "
                    "(the same rules as /admin/keys; every change is an audit event).",
        epilog="examples:\n  gateway keys create --name my-app --models demo,demo-embed "
               "--rpm 600\n  gateway keys list --team search\n"
               "  gateway keys update key_… --rpm 1200 --clear budget_usd\n"
               "  gateway keys revoke key_…",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = subcommand(keys, "create", "create a key (its secret is printed once)",
                     "example:\n  gateway keys create --name my-app --team search "
                     "--models demo --rpm 600 --budget-usd 25 --budget-period month")
    create.add_argument("--name", required=True, help="a name for people (unique not required)")
    create.add_argument("--team", help="the team (by name) whose limits also apply")
    create.add_argument("--role", default="app", choices=["app", "admin", "compliance"],
                        help="app calls /v1; admin also manages; compliance reads the audit "
                             "log (default: app)")
    add_limit_options(create)
    create.add_argument("--expires-at", dest="expires_at",
                        help="ISO 8601 UTC time, e.g. 2027-01-01T00:00:00Z")
    create.set_defaults(func=cmd_keys_create)
    lst = subcommand(keys, "list", "list keys (never their secrets; `revoked` says which no "
                  "longer work), as JSON",
                  "example:\n  gateway keys list\n  gateway keys list --team search")
    lst.add_argument("--team", help="only the keys of this team")
    lst.set_defaults(func=cmd_keys_list)
    update = subcommand(keys, "update", "change a key's name, team, role, models, limits or "
                     "budget",
                     "examples:\n  gateway keys update key_… --rpm 1200 --budget-usd 50\n"
                     "  gateway keys update key_… --clear rpm --clear models")
    update.add_argument("key_id", help="the key's id (key_…), not its secret")
    update.add_argument("--name", help="a new name")
    update.add_argument("--team", help="move the key to this team")
    update.add_argument("--role", choices=["app", "admin", "compliance"], help="a new role")
    add_limit_options(update, update=True)
    update.add_argument("--expires-at", dest="expires_at",
                        help="ISO 8601 UTC time, e.g. 2027-01-01T00:00:00Z")
    update.add_argument("--clear", action="append", choices=CLEARABLE, metavar="FIELD",
                        help="remove a setting (repeatable): " + ", ".join(CLEARABLE))
    update.set_defaults(func=cmd_keys_update)
    revoke = subcommand(keys, "revoke", "revoke a key; it answers 401 from then on",
                     "example:\n  gateway keys revoke key_01JD…   (the id from `gateway keys "
                     "list`)")
    revoke.add_argument("key_id", help="the key's id (key_…), not its secret")
    revoke.set_defaults(func=cmd_keys_revoke)
