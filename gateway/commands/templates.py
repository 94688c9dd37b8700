"""`gateway templates sync|list|show|diff|history|label|rollback`, straight on the database.

`sync` loads `prompts_dir` (or `--dir`): a file whose content differs from the newest version
that came from that file becomes a new version; an unchanged file changes nothing; nothing is
ever overwritten or deleted. `label` points a label (and optionally a canary) at a version;
`rollback` moves a label back to the version it pointed at before (or `--to V`). Running
gateways pick changes up within their refresh interval (2 s). Every change is an audit event
(`gateway.commands.changes`). Exit codes: 0 done, 1 refused (a bad file, an unknown template,
version or label), 2 usage, 3 the database is not usable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.commands.admin_common import print_json, subcommand
from gateway.commands.changes import ChangeLog
from gateway.commands.database import run_on_database
from gateway.settings import Settings


class _Missing(Exception):
    """An unknown template, version or label: one line for stderr, exit 1."""


class _Catalog:
    """Every version and label, read once (a command's view of the registry)."""

    def __init__(self, versions: list[dict[str, Any]], labels: list[dict[str, Any]]) -> None:
        from gateway.templates.registry import Label
        from gateway.templates.versions import TemplateVersion

        self.versions: dict[str, dict[int, Any]] = {}
        for row in versions:
            self.versions.setdefault(row["name"], {})[row["version"]] = \
                TemplateVersion.from_row(row)
        self.labels: dict[str, dict[str, Any]] = {}
        for row in labels:
            self.labels.setdefault(row["name"], {})[row["label"]] = Label.from_row(row)

    def of(self, name: str) -> dict[int, Any]:
        found = self.versions.get(name)
        if not found:
            raise _Missing(f"no template named {name!r} (gateway templates list)")
        return found

    def get(self, name: str, version: int) -> Any:
        found = self.of(name).get(version)
        if found is None:
            raise _Missing(f"template {name!r} has no version {version} (it has "
                           f"{_versions_text(self.of(name))})")
        return found

    def label(self, name: str, label: str) -> Any:
        self.of(name)
        found = self.labels.get(name, {}).get(label)
        if found is None:
            raise _Missing(f"template {name!r} has no label {label!r}")
        return found


def _versions_text(versions: dict[int, Any]) -> str:
    numbers = sorted(versions)
    return f"v{numbers[0]}" if len(numbers) == 1 else f"v{numbers[0]} to v{numbers[-1]}"


def _run(settings: Settings, work: Any) -> Any:
    """`work(store, catalog, engine)` on the checked database; exit 1 on `_Missing`."""
    from gateway.storage.templates import TemplateStore

    async def main(engine: Any) -> Any:
        store = TemplateStore(engine)
        _, versions, labels = await store.load()
        return await work(store, _Catalog(versions, labels), engine)

    try:
        return run_on_database(settings, main)
    except _Missing as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None


def cmd_templates_sync(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.commands.config_files import load_all, print_problems
    from gateway.commands.progress import Progress
    from gateway.config import ConfigError
    from gateway.storage.templates import TemplateStore
    from gateway.templates.files import load_prompt_files, prompt_files_for

    try:
        files = load_prompt_files(Path(args.dir)) if args.dir else prompt_files_for(
            load_all(settings))
    except ConfigError as exc:
        print_problems(exc)
        return 1
    log = ChangeLog("gateway templates sync")
    progress = Progress("synced", len(files), unit="files")

    async def sync(engine: Any) -> list[tuple[str, int, bool]]:
        store = TemplateStore(engine)
        results = []
        for f in files:
            version, created = await store.sync_file(f.doc, f.content_hash, f.shown)
            results.append((f.doc["name"], version, created))
            if created:
                log.add("template.create" if version == 1 else "template.version.create",
                        "template", f.doc["name"], f.doc["name"],
                        None if version == 1 else {"version": version - 1},
                        {"version": version, "content_hash": f.content_hash,
                         "source": "file", "path": f.shown})
            progress.step()
        await log.write(engine, settings)
        return results

    results = run_on_database(settings, sync)
    progress.done()
    for name, version, created in results:
        print(f"{name}: {'new version' if created else 'unchanged, version'} {version}")
    created_n = sum(1 for *_, c in results if c)
    print(f"{len(results)} template file(s), {created_n} new version(s)")
    return 0


def cmd_templates_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(store: Any, catalog: _Catalog, engine: Any) -> list[dict[str, Any]]:
        out = []
        for name in sorted(catalog.versions):
            versions = catalog.versions[name]
            latest = versions[max(versions)]
            out.append({"name": name, "description": latest.doc.get("description"),
                        "latest_version": latest.version,
                        "labels": {k: v.version for k, v in
                                   sorted(catalog.labels.get(name, {}).items())}})
        return out

    print_json({"data": _run(settings, listing)})
    return 0


def cmd_templates_show(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.templates.spec import to_yaml

    async def show(store: Any, catalog: _Catalog, engine: Any) -> Any:
        if args.label:
            return catalog.get(args.name, catalog.label(args.name, args.label).version)
        versions = catalog.of(args.name)
        return catalog.get(args.name, args.version or max(versions))

    found = _run(settings, show)
    if args.json:
        print_json(found.view())
        return 0
    origin = ("from a prompt file" if found.source == "file"
              else f"by {found.author_key_id or 'unknown'}")
    print(f"# {found.name} v{found.version}, {origin}, {found.created_at:%Y-%m-%d %H:%M} UTC")
    print(to_yaml(dict(found.doc)), end="")
    return 0


def cmd_templates_diff(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.templates.versions import diff_versions

    async def diff(store: Any, catalog: _Catalog, engine: Any) -> str:
        return diff_versions(catalog.get(args.name, args.from_version),
                             catalog.get(args.name, args.to_version))

    text = _run(settings, diff)
    print(text or f"(v{args.from_version} and v{args.to_version} are the same)", end="" if text
          else "\n")
    return 0


def cmd_templates_history(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.timeutil import iso

    async def history(store: Any, catalog: _Catalog, engine: Any) -> list[dict[str, Any]]:
        catalog.of(args.name)
        return await store.history(args.name)

    for row in _run(settings, history):
        detail = row["detail"] or {}
        if row["kind"] == "version":
            what = f"version {row['version']} created" + (
                f" from {detail.get('path') or 'a prompt file'}" if detail.get("source")
                == "file" else "")
        elif row["kind"] == "label":
            what = f"label {row['label']} -> v{row['version']}"
            if detail.get("canary_version") is not None:
                what += (f" (canary v{detail['canary_version']} at "
                         f"{detail['canary_percent']:g}%)")
        else:
            what = f"label {row['label']} removed"
        print(f"{iso(row['at'])}  {row['actor'] or '(file)':<24}  {what}")
    return 0


async def _move_label(store: Any, catalog: _Catalog, engine: Any, settings: Settings,
                      command: str, name: str, label: str, version: int,
                      canary: tuple[int, float] | None) -> Any:
    from gateway.templates.registry import Label

    catalog.get(name, version)
    if canary is not None:
        catalog.get(name, canary[0])
    before_label = catalog.labels.get(name, {}).get(label)
    row = await store.set_label(name, label, version, canary[0] if canary else None,
                                canary[1] if canary else None, "cli")
    after = Label.from_row(row)
    log = ChangeLog(command)
    log.add("template.label.set", "template", name, name,
            before_label.change_view() if before_label else None, after.change_view())
    await log.write(engine, settings)
    return before_label, after


def _check_label(label: str) -> None:
    from gateway.templates.spec import LABEL

    if not LABEL.match(label):
        print(f"{label!r}: a label is 1-64 letters, digits, '.', '_' or '-'", file=sys.stderr)
        raise SystemExit(2)


def _moved(before: Any, after: Any) -> str:
    text = f"v{after.version}"
    if after.canary_version is not None:
        text += f" (canary v{after.canary_version} at {after.canary_percent:g}%)"
    was = f"v{before.version}" if before is not None else "unset"
    return f"{after.name} label {after.label}: {was} -> {text}"


def cmd_templates_label(args: argparse.Namespace, settings: Settings) -> int:
    _check_label(args.label)
    canary = None
    if args.canary_version is not None:
        if args.canary_percent is None or not 0 < args.canary_percent < 100:
            print("--canary-version needs --canary-percent between 0 and 100 (exclusive)",
                  file=sys.stderr)
            return 2
        if args.canary_version == args.version:
            print("the canary version must differ from the label's version", file=sys.stderr)
            return 2
        canary = (args.canary_version, args.canary_percent)

    async def move(store: Any, catalog: _Catalog, engine: Any) -> Any:
        return await _move_label(store, catalog, engine, settings, "gateway templates label",
                                 args.name, args.label, args.version, canary)

    print(_moved(*_run(settings, move)))
    return 0


def cmd_templates_rollback(args: argparse.Namespace, settings: Settings) -> int:
    _check_label(args.label)

    async def rollback(store: Any, catalog: _Catalog, engine: Any) -> Any:
        current = catalog.label(args.name, args.label)
        target = args.to
        if target is None:
            # the version the label pointed at before its current one, from its history
            moves = [r for r in await store.history(args.name, limit=1000)
                     if r["kind"] == "label" and r["label"] == args.label]
            target = next((r["version"] for r in moves if r["version"] != current.version),
                          None)
            if target is None:
                raise _Missing(f"label {args.label!r} of {args.name!r} has pointed at "
                               f"v{current.version} only: give --to VERSION")
        return await _move_label(store, catalog, engine, settings,
                                 "gateway templates rollback", args.name, args.label, target,
                                 None)

    print(_moved(*_run(settings, rollback)))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: Any) -> None:
    templates = sub.add_parser(
        "templates", help="manage prompt templates",
        description="Prompt templates: load the prompt files into the database, read "
                    "versions, compare them and move labels (every change is an audit "
                    "event).",
        epilog="examples:\n  gateway templates sync\n  gateway templates list\n"
               "  gateway templates show greet --label production\n"
               "  gateway templates diff greet 1 2\n"
               "  gateway templates label greet production 2\n"
               "  gateway templates rollback greet --label production",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    sync = subcommand(templates, "sync", "load prompts_dir into the database (a changed file "
                      "becomes a new version)",
                      "example:\n  gateway templates sync            prompts_dir of "
                      "gateway.yaml\n  gateway templates sync --dir ./prompts")
    sync.add_argument("--dir", help="a folder of <name>.yaml files (default: prompts_dir "
                      "of the config)")
    sync.set_defaults(func=cmd_templates_sync)
    lst = subcommand(templates, "list", "every template with its latest version and labels, "
                     "as JSON", "example:\n  gateway templates list")
    lst.set_defaults(func=cmd_templates_list)
    show = subcommand(templates, "show", "one version in the file format (the latest by "
                      "default)", "examples:\n  gateway templates show greet\n"
                      "  gateway templates show greet --version 2\n"
                      "  gateway templates show greet --label production --json")
    show.add_argument("name", help="the template's name")
    which = show.add_mutually_exclusive_group()
    which.add_argument("--version", type=_positive, help="this version")
    which.add_argument("--label", help="the version this label points at")
    show.add_argument("--json", action="store_true", help="the API's JSON shape instead")
    show.set_defaults(func=cmd_templates_show)
    diff = subcommand(templates, "diff", "a unified diff of two versions",
                      "example:\n  gateway templates diff greet 1 3")
    diff.add_argument("name", help="the template's name")
    diff.add_argument("from_version", type=_positive, metavar="FROM", help="the older version")
    diff.add_argument("to_version", type=_positive, metavar="TO", help="the newer version")
    diff.set_defaults(func=cmd_templates_diff)
    history = subcommand(templates, "history", "who created which version and moved which "
                         "label when, newest first",
                         "example:\n  gateway templates history greet")
    history.add_argument("name", help="the template's name")
    history.set_defaults(func=cmd_templates_history)
    label = subcommand(templates, "label", "point a label at a version (promote), with an "
                       "optional canary", "examples:\n  gateway templates label greet "
                       "production 3\n  gateway templates label greet production 2 "
                       "--canary-version 3 --canary-percent 10")
    label.add_argument("name", help="the template's name")
    label.add_argument("label", help="the label, e.g. production")
    label.add_argument("version", type=_positive, help="the version it points at")
    label.add_argument("--canary-version", dest="canary_version", type=_positive,
                       help="another version served to --canary-percent of the traffic")
    label.add_argument("--canary-percent", dest="canary_percent", type=float,
                       help="the canary's share of the traffic, 0 to 100 (exclusive)")
    label.set_defaults(func=cmd_templates_label)
    rollback = subcommand(templates, "rollback", "move a label back to the version it pointed "
                          "at before (or --to a version)",
                          "examples:\n  gateway templates rollback greet\n"
                          "  gateway templates rollback greet --label staging --to 1")
    rollback.add_argument("name", help="the template's name")
    rollback.add_argument("--label", default="production",
                          help="the label to move back (default: production)")
    rollback.add_argument("--to", type=_positive, help="this version instead of the previous")
    rollback.set_defaults(func=cmd_templates_rollback)
