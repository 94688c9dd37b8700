"""Editing the policy files of `policies_dir` safely: read one, check an edit (the same
checks as a reload, plus the whole set with it), then write it atomically.

The files stay the source of truth (and `policies_dir` the GitOps path): the UI edits the
file a policy lives in (`<name>.yaml` for a new one) and reloads. An edit names the content
it started from (`base_sha256`), so two people saving at once cannot overwrite each other.
A folder that cannot be written (a read-only ConfigMap) says so: edit the files in git.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, YamlProblem, load_yaml
from gateway.policies.model import Policy
from gateway.policies.store import (
    PolicyRegistry,
    PolicySet,
    load_policy_file,
    policy_from_mapping,
)

# A new policy's file is `<name>.yaml`: the name must be a plain file name.
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PolicyEditError(Exception):
    """Why an edit cannot be saved (`kind`: invalid, conflict, read_only)."""

    def __init__(self, kind: str, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.kind = kind
        self.lines = lines


@dataclass(frozen=True)
class PolicyFile:
    name: str
    path: Path
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def policy_files(registry: PolicyRegistry) -> dict[str, PolicyFile]:
    """Every policy file by the policy name it holds (files that do not parse are left out:
    `reload` names them)."""
    out: dict[str, PolicyFile] = {}
    folder = registry.folder
    if not folder.is_dir():
        return out
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        policy, _ = load_policy_file(path, path.name)
        if policy is not None and policy.name not in out:
            out[policy.name] = PolicyFile(policy.name, path, path.read_text(encoding="utf-8"))
    return out


def check_edit(registry: PolicyRegistry, name: str, text: str) -> tuple[Policy, Path]:
    """The edited policy and the file it goes to, or `PolicyEditError("invalid", lines)`."""
    current = policy_files(registry).get(name)
    if current is None and not FILE_NAME.match(name):
        raise PolicyEditError("invalid", [f"name: {name[:64]!r}: a new policy's name is its "
                                          "file name: letters, digits, '.', '_' or '-'"])
    path = current.path if current is not None else registry.folder / f"{name}.yaml"
    shown = f"{registry.shown_base}/{path.name}"
    try:
        data = load_yaml(text)
    except YamlProblem as exc:
        raise PolicyEditError("invalid", [f"{shown}: {exc.where}: {exc.reason}"]) from None
    if not isinstance(data, dict):
        raise PolicyEditError("invalid", [f"{shown}: (top level): must be a mapping"])
    policy, problems = policy_from_mapping(data, shown)
    if policy is None:
        raise PolicyEditError("invalid", problems)
    if policy.name != name:
        raise PolicyEditError("invalid", [f"{shown}: name: {policy.name!r} differs from the "
                                          f"policy being edited ({name!r})"])
    return policy, path


def save_edit(registry: PolicyRegistry, name: str, text: str, base_sha256: str | None
              ) -> tuple[Policy | None, Policy, PolicySet]:
    """Check, write (atomically) and reload: `(before, after, the new set)`. The old file
    comes back if the reload refuses the set (the running set never changes then)."""
    after, path = check_edit(registry, name, text)
    current = policy_files(registry).get(name)
    if (current.sha256 if current else None) != (base_sha256 or None):
        raise PolicyEditError("conflict", [
            f"{name} changed since you opened it: reload the page, then edit again"])
    before = registry.current.policies.get(name)
    if not text.endswith("\n"):
        text += "\n"
    try:
        _write_atomically(path, text)
    except OSError as exc:
        raise PolicyEditError("read_only", [
            f"{registry.shown_base} cannot be written here ({exc.strerror or exc}): change "
            "the policy file where it is kept (git), then reload"]) from None
    try:
        new_set = registry.reload()
    except ConfigError as exc:
        if current is not None:
            _write_atomically(path, current.text)
        else:
            path.unlink(missing_ok=True)
        raise PolicyEditError("invalid", exc.lines) from None
    return before, after, new_set


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def policy_change(policy: Policy | None) -> dict[str, Any] | None:
    """A policy as an admin-change event records it."""
    return None if policy is None else policy.model_dump(exclude_none=True)
