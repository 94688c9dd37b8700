"""`gateway templates sync`: load `prompts_dir` (or `--dir`) into SQL.

A file whose content differs from the newest version that came from that file becomes a new
version; an unchanged file changes nothing; nothing is ever overwritten or deleted. Running
gateways pick the new versions up within their refresh interval (2 s).
Exit codes: 0 synced, 1 a bad file (one `FILE: key: reason` line each), 3 the database is not
usable (missing, unreachable or not migrated).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.commands.database import run_on_database
from gateway.settings import Settings


def cmd_templates_sync(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands.config_files import load_all, print_problems
    from gateway.config import ConfigError
    from gateway.storage.templates import TemplateStore
    from gateway.templates.files import load_prompt_files, prompt_files_for, sync_files

    try:
        files = load_prompt_files(Path(args.dir)) if args.dir else prompt_files_for(
            load_all(settings))
    except ConfigError as exc:
        print_problems(exc)
        return 1
    results = run_on_database(settings,
                              lambda engine: sync_files(TemplateStore(engine), files))
    for name, version, created in results:
        print(f"{name}: {'new version' if created else 'unchanged, version'} {version}")
    created = sum(1 for *_, c in results if c)
    print(f"{len(results)} template file(s), {created} new version(s)")
    return 0


def register(sub: Any) -> None:
    templates = sub.add_parser(
        "templates", help="manage prompt templates",
        description="Prompt templates: load the prompt files into the database.",
        epilog="example:\n  gateway templates sync\n  gateway templates sync --dir prompts/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    sync = templates.add_parser(
        "sync", help="load prompts_dir into the database (a changed file becomes a new "
                     "version)",
        description="Load every <name>.yaml prompt file into the database. A changed file "
                    "becomes a new version; nothing is overwritten or deleted.",
        epilog="example:\n  gateway templates sync            prompts_dir of gateway.yaml\n"
               "  gateway templates sync --dir ./prompts",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("--dir", help="a folder of <name>.yaml files (default: prompts_dir "
                      "of the config)")
    sync.set_defaults(func=cmd_templates_sync)
