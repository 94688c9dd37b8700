"""`gateway teams create|list|show|update`: the rules of `/admin/teams`, straight on the
database; every change is an audit event (`gateway.commands.changes`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.commands.admin_common import (
    add_limit_options,
    checked_body,
    fields_from,
    print_json,
    subcommand,
    update_body,
    with_stores,
)
from gateway.commands.changes import ChangeLog
from gateway.settings import Settings

_FIELDS = ("rpm", "tpm", "max_concurrent", "budget_usd", "budget_period", "policy")
CLEARABLE = ("models", "rpm", "tpm", "max_concurrent", "budget_usd", "policy")


def cmd_teams_create(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import TeamCreate, team_view, to_row
    from gateway.storage.keys import DuplicateName

    body = checked_body(settings, TeamCreate, {"name": args.name, **fields_from(args, _FIELDS)})
    if isinstance(body, int):
        return body
    log = ChangeLog("gateway teams create")

    async def create(keys: Any, teams: Any, engine: Any) -> dict | None:
        try:
            row = await teams.create(to_row(body.model_dump()))
        except DuplicateName:
            return None
        log.add("team.create", "team", row["name"], row["name"], None, team_view(row))
        await log.write(engine, settings)
        return row

    row = with_stores(settings, create)
    if row is None:
        print(f"a team named {body.name!r} exists already (gateway teams update {body.name} "
              "changes it)", file=sys.stderr)
        return 1
    print_json(team_view(row))
    print(f"Created team {row['name']}.", file=sys.stderr)
    return 0


def cmd_teams_list(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import team_view

    rows = with_stores(settings, lambda keys, teams, engine: teams.list())
    print_json({"data": [team_view(r) for r in rows]})
    return 0


def cmd_teams_show(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import key_view, team_view

    async def show(keys: Any, teams: Any, engine: Any) -> tuple[dict | None, list]:
        return await teams.get(args.name), await keys.list(team=args.name)

    row, members = with_stores(settings, show)
    if row is None:
        print(f"no team named {args.name!r} (gateway teams list)", file=sys.stderr)
        return 1
    print_json({**team_view(row), "keys": [key_view(k) for k in members]})
    return 0


def cmd_teams_update(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.keys.schemas import TeamUpdate, team_view, to_row

    checked = update_body(args, settings, _FIELDS, TeamUpdate)
    if isinstance(checked, int):
        return checked
    body, fields = checked
    changes = {name: getattr(body, name) for name in fields}
    log = ChangeLog("gateway teams update")

    async def update(keys: Any, teams: Any, engine: Any) -> dict | None:
        before = await teams.get(args.name)
        if before is None:
            return None
        row = await teams.update(args.name, to_row(changes))
        log.add("team.update", "team", row["name"], row["name"], team_view(before),
                team_view(row))
        await log.write(engine, settings)
        return row

    row = with_stores(settings, update)
    if row is None:
        print(f"no team named {args.name!r} (gateway teams list)", file=sys.stderr)
        return 1
    print_json(team_view(row))
    print(f"Updated team {row['name']}: {', '.join(sorted(changes))}. Running gateways apply "
          "it within a few seconds.", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    teams = sub.add_parser(
        "teams", help="manage teams (limits shared by their keys)",
        description="Create, list, show and update teams, straight on the database (the same "
                    "rules as /admin/teams; every change is an audit event).",
        epilog="examples:\n  gateway teams create --name search --budget-usd 100\n"
               "  gateway teams list\n  gateway teams show search\n"
               "  gateway teams update search --rpm 600 --clear budget_usd",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="teams_command", required=True, metavar="ACTION")
    create = subcommand(teams, "create", "create a team",
                     "example:\n  gateway teams create --name search --models demo --rpm 600 "
                     "--policy strict")
    create.add_argument("--name", required=True, help="a unique name (letters, digits, . _ -)")
    add_limit_options(create)
    create.add_argument("--policy", help="a policy name from policies_dir")
    create.set_defaults(func=cmd_teams_create)
    lst = subcommand(teams, "list", "list teams, as JSON", "example:\n  gateway teams list")
    lst.set_defaults(func=cmd_teams_list)
    show = subcommand(teams, "show", "one team and its keys, as JSON",
                   "example:\n  gateway teams show search")
    show.add_argument("name", help="the team's name")
    show.set_defaults(func=cmd_teams_show)
    update = subcommand(teams, "update", "change a team's models, limits, budget or policy",
                     "examples:\n  gateway teams update search --tpm 200000\n"
                     "  gateway teams update search --clear policy")
    update.add_argument("name", help="the team's name")
    add_limit_options(update, update=True)
    update.add_argument("--policy", help="a policy name from policies_dir")
    update.add_argument("--clear", action="append", choices=CLEARABLE, metavar="FIELD",
                        help="remove a setting (repeatable): " + ", ".join(CLEARABLE))
    update.set_defaults(func=cmd_teams_update)
