"""`gateway audit query|export|verify|purge`: the audit API's reads, straight on the database.

Filters are the API's, as options (`--key-id`, `--team`, `--status-code`, `--since`, …) and
checked the same way. `verify` prints `{"ok", "events_checked", "first_bad_id"}` (and one line
per chain on stderr) and exits 1 when a chain is broken. `purge` deletes events older than
`audit.retention_days` (or `--days` / `--before`) in bounded batches and records the purge;
the same job deletes stored `/v1/responses` past `responses.retention_days`
(`responses_deleted`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import orjson

from gateway.commands.database import run_on_database
from gateway.settings import Settings

_FILTER_OPTIONS = ("key_id", "team", "user", "model_requested", "model_served", "deployment",
                   "template_name", "status_code", "error_code", "request_id", "stream",
                   "pii_kind", "since", "until", "action", "actor_key_id", "target_type",
                   "target_id")


def _run(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """`work(engine)` on the checked database (exit 3 when it is not usable)."""
    return run_on_database(settings, work)


def _query(args: argparse.Namespace, settings: Settings, *, export: bool) -> Any:
    from gateway.audit.query import parse_params, signer_from_settings
    from gateway.errors import InvalidRequest

    items = [(name, str(getattr(args, name))) for name in (*_FILTER_OPTIONS, "limit", "cursor")
             if getattr(args, name, None) is not None]
    try:
        query = parse_params(items, signer=signer_from_settings(settings),
                             max_limit=None if export else 1000,
                             default_limit=None if export else 100)
    except InvalidRequest as exc:
        print(f"gateway audit: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    return query


def cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.audit.query import fetch_page, signer_from_settings

    query = _query(args, settings, export=False)
    signer = signer_from_settings(settings)
    page = _run(settings, lambda engine: fetch_page(engine, query, signer))
    print(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.audit.query import export_events
    from gateway.commands.progress import Progress

    query = _query(args, settings, export=True)
    progress = Progress("exported")

    async def write(engine: Any) -> int:
        out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
        try:
            async for chunk, count in export_events(engine, query, args.format):
                out.write(chunk)
                progress.update(count)
        finally:
            if args.output:
                out.close()
            else:
                out.flush()
        return progress.count

    count = _run(settings, write)
    progress.done()
    if args.output:
        print(f"wrote {count} event{'s' if count != 1 else ''} to {args.output} "
              f"({args.format})", file=sys.stderr)
    return 0


NO_HMAC_WARNING = ("warning: no GATEWAY_AUDIT_HMAC_KEY is set: the chain is plain SHA-256, "
                   "so anyone with write access to the database can rewrite events and "
                   "recompute a consistent chain. Set the key (the same on every replica) "
                   "to make that impossible without it.")


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.audit.chain import hasher_from_settings
    from gateway.audit.verify import verify_chains
    from gateway.commands.progress import Progress

    progress = Progress("checked")
    result = _run(settings, lambda engine: verify_chains(
        engine, hasher_from_settings(settings), progress=progress.update))
    progress.done()
    print(orjson.dumps(result.as_api()).decode())
    for chain in result.chains:
        state = "ok" if chain.first_bad_id is None else (
            f"BROKEN at event {chain.first_bad_id}: {chain.reason}; "
            f"{chain.events_beyond_break} later event(s) of this chain not checked")
        print(f"chain {chain.replica or '(none)'}: {chain.events_checked} events checked, "
              f"{state}", file=sys.stderr)
    if not result.hmac:
        print(NO_HMAC_WARNING, file=sys.stderr)
    return 0 if result.ok else 1


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.audit.chain import hasher_from_settings
    from gateway.audit.purge import count_expired, purge
    from gateway.commands.config_files import print_problems
    from gateway.config import ConfigError, load_config
    from gateway.timeutil import iso, parse_iso, utcnow

    if args.before is not None:
        try:
            cutoff = parse_iso(args.before)
        except ValueError as exc:
            print(f"gateway audit purge: --before: {exc}", file=sys.stderr)
            return 2
    else:
        days = args.days
        if days is None:
            try:
                days = load_config(settings.config).audit.retention_days
            except ConfigError as exc:
                print_problems(exc)
                return 1
        cutoff = utcnow() - timedelta(days=days)
    from gateway.storage import responses as stored_responses

    if args.dry_run:
        n = _run(settings, lambda engine: count_expired(engine, cutoff))
        expired = _run(settings, stored_responses.count_expired)
        print(orjson.dumps({"cutoff": iso(cutoff), "expired": n, "dry_run": True,
                            "responses_expired": expired}).decode())
        return 0
    # Stored /v1/responses past `responses.retention_days` (each row carries its expiry).
    gone = _run(settings, lambda engine: stored_responses.purge_expired(
        engine, batch_size=args.batch_size))
    from gateway.commands.progress import Progress

    hasher = hasher_from_settings(settings)
    progress = Progress("deleted")
    summary = _run(settings, lambda engine: purge(engine, hasher, cutoff,
                                                  batch_size=args.batch_size,
                                                  progress=progress.update,
                                                  also={"responses_deleted": gone}))
    progress.done()
    print(orjson.dumps(summary).decode())
    return 0


_FILTER_HELP = {
    "key_id": "a key's id (key_…)", "team": "a team name", "user": "the end user (`user`)",
    "model_requested": "the model the client asked for",
    "model_served": "the model that answered (after fallbacks)",
    "deployment": "the deployment label that answered", "template_name": "a template name",
    "status_code": "an HTTP status, e.g. 429", "error_code": "an error code, e.g. pii_blocked",
    "request_id": "the x-request-id of one request", "stream": "true or false",
    "pii_kind": "events where this PII kind was found (email, credit_card, …)",
    "since": "from this ISO 8601 UTC time, e.g. 2026-12-01T00:00:00Z",
    "until": "up to this ISO 8601 UTC time",
    "action": "admin changes of this kind, e.g. key.revoke or template.label.set",
    "actor_key_id": "admin changes made by this key id (bootstrap, cli, key_…)",
    "target_type": "admin changes to a key, team, template, policy or audit",
    "target_id": "admin changes to this key id, team name or template name",
}


def _add_filters(parser: argparse.ArgumentParser, *, paging: bool) -> None:
    for name in _FILTER_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=_FILTER_HELP[name])
    if paging:
        parser.add_argument("--limit", type=int, help="page size (default 100, at most 1000)")
        parser.add_argument("--cursor", help="next_cursor from the previous page")
    else:
        parser.add_argument("--limit", type=int, help="stop after this many events")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _parser(audit: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    return audit.add_parser(name, help=help_text, description=help_text[0].upper()
                            + help_text[1:] + ".", epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)


def register(sub: Any) -> None:
    audit = sub.add_parser(
        "audit", help="query, export, verify and purge the audit log",
        description="The audit log, straight on the database (the same filters and answers "
                    "as /audit/events, /audit/export and /audit/verify).",
        epilog="examples:\n  gateway audit query --status-code 429 --limit 20\n"
               "  gateway audit export --since 2026-12-01T00:00:00Z --format csv -o dec.csv\n"
               "  gateway audit query --action key.revoke --target-id key_…\n"
               "  gateway audit verify\n  gateway audit purge --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    query = _parser(audit, "query", "one page of events, newest first, as JSON",
                    "example:\n  gateway audit query --team search --status-code 429\n"
                    "  gateway audit query --cursor <next_cursor of the previous page>")
    _add_filters(query, paging=True)
    query.set_defaults(func=cmd_query)
    export = _parser(audit, "export", "every matching event, streamed as JSON lines or CSV",
                     "example:\n  gateway audit export --format csv -o audit.csv\n"
                     "  gateway audit export --key-id key_… --since 2026-12-01T00:00:00Z")
    _add_filters(export, paging=False)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl",
                        help="jsonl (default) or csv")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.set_defaults(func=cmd_export)
    verify = _parser(audit, "verify", "check every replica's hash chain; exit 1 if broken",
                     "example:\n  gateway audit verify && echo intact\n\n"
                     "exit codes: 0 intact, 1 broken, 3 database not usable")
    verify.set_defaults(func=cmd_verify)
    purge = _parser(audit, "purge", "delete events (and stored /v1/responses) past retention, "
                    "in bounded batches",
                    "example:\n  gateway audit purge --dry-run\n"
                    "  gateway audit purge --days 90\n"
                    "  gateway audit purge --before 2026-01-01T00:00:00Z")
    when = purge.add_mutually_exclusive_group()
    when.add_argument("--days", type=_positive,
                      help="keep this many days (default: audit.retention_days)")
    when.add_argument("--before", help="delete events received before this ISO 8601 UTC time")
    purge.add_argument("--batch-size", dest="batch_size", type=_positive, default=5000,
                       help="events deleted per transaction (default 5000)")
    purge.add_argument("--dry-run", dest="dry_run", action="store_true",
                       help="only count what would be deleted")
    purge.set_defaults(func=cmd_purge)
