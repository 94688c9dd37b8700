"""The `gateway` console script: wiring only; each command delegates to a module.

Exit codes: 0 success, 1 failure (bad config, a broken audit chain, …), 2 usage, 3 the
database is missing, unreachable or not migrated (`commands/database.py`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from gateway import __version__
from gateway.commands import audit as audit_commands
from gateway.commands import keys as keys_commands
from gateway.commands import serve as serve_command
from gateway.commands import teams as teams_commands
from gateway.commands import templates as templates_commands
from gateway.commands.config_files import load_all
from gateway.settings import Settings

# Command groups with `register(subparsers)`, after serve, migrate and check-config.
COMMAND_MODULES = (keys_commands, teams_commands, templates_commands, audit_commands)

DESCRIPTION = """\
An OpenAI-compatible LLM gateway: virtual keys, routing, limits, PII redaction, prompt
templates and a verifiable audit log. `gateway COMMAND --help` describes each command."""

EPILOG = """\
examples:
  gateway migrate && gateway serve     create or upgrade the database, then serve
  gateway check-config                 validate gateway.yaml and the files it points at
  gateway keys create --name my-app --models demo
  gateway audit verify                 check the audit hash chain (exit 1 when broken)

settings (environment):
  GATEWAY_CONFIG        config file (default: gateway.yaml in the current folder)
  GATEWAY_DATABASE_URL  sqlite:///path/to/gateway.db or postgresql://user:pass@host/db
                        (default: sqlite:///./data/gateway.db, under the current folder)
  GATEWAY_ADMIN_KEY     the bootstrap admin key (admin API, UI, /v1)
  GATEWAY_HOST, GATEWAY_PORT (default 127.0.0.1:4000), GATEWAY_REDIS_URL (shared limits)

exit codes:
  0 success, 1 failure (bad config, broken audit chain), 2 usage,
  3 database missing, unreachable or not migrated"""


def cmd_check_config(args: argparse.Namespace, settings: Settings) -> int:
    config = load_all(settings)
    print(f"{config.source}: ok ({len(config.models)} models)")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands.database import DatabaseUnusable, check_url, fail, shown
    from gateway.migrate import upgrade

    try:
        check_url(settings.database_url, must_exist=False)
        upgrade(settings.database_url)
    except DatabaseUnusable as exc:
        fail(str(exc))
    except Exception as exc:  # a driver or URL error: one line, never a traceback
        fail(f"cannot migrate the database at {shown(settings.database_url)} "
             f"({type(getattr(exc, 'orig', None) or exc).__name__})")
    print("database is at the latest schema")
    return 0


def _add(sub: argparse._SubParsersAction, name: str, help_text: str, epilog: str
         ) -> argparse.ArgumentParser:
    """A subcommand whose description is its help line and whose epilog shows examples."""
    return sub.add_parser(name, help=help_text, description=help_text[0].upper()
                          + help_text[1:] + ".", epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_command.register(sub)
    _add(sub, "migrate", "create the database or upgrade its schema to the latest migration",
         "example:\n  gateway migrate\n"
         "  GATEWAY_DATABASE_URL=postgresql://gw:secret@db/gateway gateway migrate\n\n"
         "Works from any folder; a relative SQLite path is relative to the current folder."
         ).set_defaults(func=cmd_migrate)
    _add(sub, "check-config", "validate gateway.yaml and the policy and prompt files it "
         "points at; exit 1 listing each problem",
         "example:\n  gateway check-config\n  GATEWAY_CONFIG=deploy/gateway.yaml "
         "gateway check-config").set_defaults(func=cmd_check_config)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    return args.func(args, settings)
