"""One immutable template version: its stored document, compiled messages and variable binder.

A version is compiled once, on first use (or when the registry preloads labelled and latest
versions), and kept for the life of the process: versions never change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from gateway.templates.errors import TemplateError
from gateway.templates.sandbox import (
    MAX_TEXT,
    CompiledMessage,
    GatewaySandbox,
    compile_message,
    render,
)
from gateway.templates.spec import (
    TemplateSpec,
    VariableBinder,
    VariableSpec,
    example_values,
    to_yaml,
)
from gateway.timeutil import iso


class TemplateVersion:
    __slots__ = ("_binder", "_compiled", "author_key_id", "content_hash", "created_at", "doc",
                 "name", "source", "version")

    def __init__(self, doc: Mapping[str, Any], *, version: int, content_hash: str, source: str,
                 author_key_id: str | None, created_at: datetime | None) -> None:
        self.doc = doc
        self.name: str = doc["name"]
        self.version = version
        self.content_hash = content_hash
        self.source = source
        self.author_key_id = author_key_id
        self.created_at = created_at
        self._compiled: tuple[CompiledMessage, ...] | None = None
        self._binder: VariableBinder | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TemplateVersion:
        doc = {"name": row["name"], "description": row["description"], "model": row["model"],
               "params": row["params"] or {}, "variables": row["variables"] or {},
               "messages": row["messages"]}
        return cls(doc, version=row["version"], content_hash=row["content_hash"],
                   source=row["source"], author_key_id=row["author_key_id"],
                   created_at=row["created_at"])

    @property
    def model(self) -> str | None:
        return self.doc.get("model")

    @property
    def params(self) -> Mapping[str, Any]:
        return self.doc.get("params") or {}

    def compiled(self, env: GatewaySandbox) -> tuple[CompiledMessage, ...]:
        if self._compiled is None:
            self._compiled = compile_messages(env, self.doc)
        return self._compiled

    def binder(self) -> VariableBinder:
        if self._binder is None:
            self._binder = VariableBinder({n: VariableSpec.model_validate(v)
                                           for n, v in self.doc["variables"].items()})
        return self._binder

    def render(self, env: GatewaySandbox, variables: Any, max_chars: int = MAX_TEXT, *,
               on_loop: bool = False) -> list[dict[str, str]]:
        """Check the variables, then render; raise `TemplateError` (param relative), or
        `MoveOffLoop` when `on_loop` and the render outgrew the event loop's budget."""
        compiled = self.compiled(env)
        return render(compiled, self.binder().bind(variables), max_chars=max_chars,
                      on_loop=on_loop)

    def view(self, labels: Iterable[str] | None = None) -> dict[str, Any]:
        """The API shape: the template fields plus version, author, time and source."""
        return {**self.doc, "version": self.version, "author_key_id": self.author_key_id,
                "created_at": iso(self.created_at), "source": self.source,
                "content_hash": self.content_hash,
                "labels": sorted(labels or ())}


def change_view(found: TemplateVersion) -> dict[str, Any]:
    """A version as an admin-change event records it: which one and what identifies its
    content (versions are immutable: `GET /admin/templates/{name}?version=V` has the text)."""
    return {"version": found.version, "content_hash": found.content_hash,
            "model": found.model, "description": found.doc.get("description")}


def diff_versions(old: TemplateVersion, new: TemplateVersion) -> str:
    """A unified diff of two versions in the file format (`name@V` headers)."""
    return "".join(difflib.unified_diff(
        to_yaml(dict(old.doc)).splitlines(keepends=True),
        to_yaml(dict(new.doc)).splitlines(keepends=True),
        fromfile=f"{old.name}@{old.version}", tofile=f"{new.name}@{new.version}"))


def compile_messages(env: GatewaySandbox, doc: Mapping[str, Any]
                     ) -> tuple[CompiledMessage, ...]:
    declared = frozenset(doc.get("variables") or ())
    return tuple(compile_message(env, m["role"], m["content"], f"messages[{i}].content",
                                 declared)
                 for i, m in enumerate(doc["messages"]))


def check_spec(env: GatewaySandbox, spec: TemplateSpec, doc: Mapping[str, Any]) -> None:
    """Compile every message, then render once with example values: a sandbox violation or a
    limit hit that needs no particular variable value (`range(10**9)`, `'a' * 10**9`) is
    refused now, at create time; any other failure may depend on values and waits for them."""
    compiled = compile_messages(env, doc)
    try:
        render(compiled, example_values(spec.variables))
    except TemplateError as exc:
        if exc.code in ("template_unsafe", "template_render_limit"):
            raise
