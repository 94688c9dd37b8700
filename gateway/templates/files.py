"""`prompts_dir`: read and check every `<name>.yaml`, and sync the files into SQL.

A file that does not parse, does not match the template shape, names another template than
its file name, or whose sources do not compile (or are refused by the sandbox) is a
`ConfigError` with one `FILE: key.path: reason` line per problem, so `gateway check-config`
and `gateway serve` fail with the same lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, LoadedConfig, read_yaml_mapping
from gateway.templates.errors import TemplateError
from gateway.templates.sandbox import GatewaySandbox, make_environment
from gateway.templates.spec import canonical, content_hash, spec_problems
from gateway.templates.versions import check_spec

if TYPE_CHECKING:  # the SQL side is not needed to check files (`gateway check-config`)
    from gateway.storage.templates import TemplateStore


@dataclass(frozen=True, slots=True)
class PromptFile:
    shown: str
    doc: dict[str, Any]
    content_hash: str


def _problems_of(path: Path, shown: str, env: GatewaySandbox
                 ) -> tuple[PromptFile | None, list[str]]:
    data, problems = read_yaml_mapping(path, shown)
    if data is None:
        return None, problems
    data.setdefault("name", path.stem)
    found = spec_problems(data)
    if isinstance(found, list):
        return None, [f"{shown}: {where or '(top level)'}: {why}" for where, why in found]
    spec = found
    if spec.name != path.stem:
        return None, [f"{shown}: name: {spec.name!r} differs from the file name "
                      f"{path.stem!r}"]
    doc = canonical(spec)
    try:
        check_spec(env, spec, doc)
    except TemplateError as exc:
        message = exc.message
        if exc.param and message.startswith(exc.param):
            message = message[len(exc.param):].lstrip(": ")
        return None, [f"{shown}: {exc.param or '(top level)'}: {message}"]
    return PromptFile(shown, doc, content_hash(doc)), []


def _shown_base(folder: Path) -> str:
    try:
        shown = os.path.relpath(folder)
    except ValueError:
        return str(folder)
    return str(folder) if shown.startswith("..") else shown


def load_prompt_files(folder: Path, env: GatewaySandbox | None = None) -> list[PromptFile]:
    """Every `*.yaml` / `*.yml` in `folder` (none if it does not exist); `ConfigError` lists
    every bad file."""
    if not folder.is_dir():
        return []
    env = env or make_environment()
    base = _shown_base(folder)
    files: list[PromptFile] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        shown = f"{base}/{path.name}"
        found, errors = _problems_of(path, shown, env)
        problems.extend(errors)
        if found is None:
            continue
        name = found.doc["name"]
        if name in seen:
            problems.append(f"{shown}: name: {name!r} is also defined by {seen[name]}")
            continue
        seen[name] = shown
        files.append(found)
    if problems:
        raise ConfigError(problems)
    return files


def prompt_files_for(config: LoadedConfig, env: GatewaySandbox | None = None
                     ) -> list[PromptFile]:
    return load_prompt_files(config.path(config.raw.prompts_dir), env)


async def sync_files(store: TemplateStore, files: list[PromptFile]
                     ) -> list[tuple[str, int, bool]]:
    """Each file as a version: `(name, version, created)`; unchanged files create nothing."""
    out = []
    for f in files:
        version, created = await store.sync_file(f.doc, f.content_hash, f.shown)
        out.append((f.doc["name"], version, created))
    return out
