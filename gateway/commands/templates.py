"""`gateway templates sync`: load `prompts_dir` (or `--dir`) into SQL.

A file whose content differs from the newest version that came from that file becomes a new
version; an unchanged file changes nothing; nothing is ever overwritten or deleted. Running
gateways pick the new versions up within their refresh interval (2 s).
Exit codes: 0 synced, 1 a bad file (one `FILE: key: reason` line each) or a database error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.settings import Settings


def cmd_templates_sync(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.cli import _load
    from gateway.config import ConfigError
    from gateway.storage.engine import create_engine
    from gateway.templates.files import load_prompt_files, prompt_files_for, sync_files
    from gateway.templates.store import TemplateStore

    try:
        files = load_prompt_files(Path(args.dir)) if args.dir else prompt_files_for(
            _load(settings))
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 1

    async def run() -> list[tuple[str, int, bool]]:
        engine = create_engine(settings.database_url, pool_size=1)
        try:
            return await sync_files(TemplateStore(engine), files)
        finally:
            await engine.dispose()

    try:
        results = asyncio.run(run())
    except SQLAlchemyError as exc:
        print(f"database error ({type(exc).__name__}): is the schema current? run "
              "`gateway migrate`", file=sys.stderr)
        return 1
    for name, version, created in results:
        print(f"{name}: {'new version' if created else 'unchanged, version'} {version}")
    created = sum(1 for *_, c in results if c)
    print(f"{len(results)} template file(s), {created} new version(s)")
    return 0


def register(sub: Any) -> None:
    templates = sub.add_parser("templates", help="manage prompt templates").add_subparsers(
        dest="templates_command", required=True)
    sync = templates.add_parser("sync", help="load prompts_dir into the database (a changed "
                                "file becomes a new version)")
    sync.add_argument("--dir", help="a folder of <name>.yaml files (default: prompts_dir "
                      "of the config)")
    sync.set_defaults(func=cmd_templates_sync)
