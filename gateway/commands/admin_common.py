"""What the key and team commands share: the stores, the API's reference checks, options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from gateway.commands.database import run_on_database
from gateway.settings import Settings


class Refused(Exception):
    """What the API would answer with a 400, as one line for stderr (exit 1)."""


def with_stores(settings: Settings, fn: Any) -> Any:
    """`fn(keys, teams, engine)` on the checked database (exit 3 when it is not usable)."""
    from gateway.storage.keys import KeyStore, TeamStore

    return run_on_database(settings, lambda engine: fn(KeyStore(engine), TeamStore(engine),
                                                       engine))


def print_validation_errors(exc: Any) -> int:
    for err in exc.errors():
        print(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", file=sys.stderr)
    return 2


def check_models(settings: Settings, models: list[str] | None) -> None:
    """The API's rule: every model named must be one `gateway.yaml` serves."""
    if not models:
        return
    from gateway.commands.config_files import load_all

    known = load_all(settings).models
    unknown = [m for m in models if m not in known]
    if unknown:
        raise Refused(f"unknown model {unknown[0]!r}: gateway.yaml serves "
                      + (", ".join(sorted(known)) or "no models"))


async def check_team(teams: Any, team: str | None) -> None:
    if team is not None and await teams.get(team) is None:
        raise Refused(f"unknown team {team!r}: create it first (gateway teams create)")


def fields_from(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Any]:
    fields = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if getattr(args, "models", None) is not None:
        fields["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    return fields


def update_body(args: argparse.Namespace, settings: Settings, names: tuple[str, ...],
                schema: Any) -> tuple[Any, dict[str, Any]] | int:
    """An update command's options (`--clear NAME` sets one to None) checked by `schema` and
    the served models: `(body, fields given)`, or the exit code after saying why not."""
    fields = fields_from(args, names)
    for name in args.clear or ():
        if name in fields:
            print(f"--{name.replace('_', '-')} and --clear {name}: choose one", file=sys.stderr)
            return 2
        fields[name] = None
    if not fields:
        print("nothing to change: give at least one option (see --help)", file=sys.stderr)
        return 2
    body = checked_body(settings, schema, fields)
    return body if isinstance(body, int) else (body, fields)


def checked_body(settings: Settings, schema: Any, fields: dict[str, Any]) -> Any:
    """`fields` checked by `schema` and the served models: the body, or the exit code after
    saying why not (2: invalid, 1: a model the gateway does not serve)."""
    from pydantic import ValidationError

    try:
        body = schema.model_validate(fields)
        check_models(settings, body.models)
    except ValidationError as exc:
        return print_validation_errors(exc)
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    return body


def print_json(data: Any) -> None:
    print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def subcommand(group: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    return group.add_parser(name, help=help_text, description=help_text[0].upper()
                           + help_text[1:] + ".", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def add_limit_options(parser: argparse.ArgumentParser, *, update: bool = False) -> None:
    """The limit options keys and teams share (`--models`, `--rpm`, … `--budget-period`)."""
    parser.add_argument("--models", help="comma-separated model names (each must be served "
                        "by gateway.yaml)" + ("" if update else "; default: every model"))
    parser.add_argument("--rpm", type=int, help="requests per minute")
    parser.add_argument("--tpm", type=int, help="tokens per minute")
    parser.add_argument("--max-concurrent", dest="max_concurrent", type=int,
                        help="requests in flight at once")
    parser.add_argument("--budget-usd", dest="budget_usd", type=float,
                        help="spend cap in USD per budget period")
    parser.add_argument("--budget-period", dest="budget_period",
                        choices=["day", "month", "total"],
                        help="the budget's period" + ("" if update else " (default: month)"))
