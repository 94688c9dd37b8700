"""A policy's `pii` section, and its rules applied to OpenAI request and response bodies.

`parse_pii_policy(section)` validates `{"input": {KIND: ACTION}, "output": {KIND: ACTION},
"restore": bool}` and names the key of each problem (`pii.input.emial: unknown kind`).

`redact_request` / `redact_response` apply rules to every text field of a body
(`fields.walk_texts`: one walker over the whole body, by schema), all fields scanned
together (`body_scan`: a value split across two messages is found). They return a new body
when something was replaced, else the body itself; inputs are never mutated. Templates are
rendered into messages before this runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.pii import presidio
from gateway.pii.actions import ACTIONS, Phase, Redactor
from gateway.pii.body_scan import scan_texts
from gateway.pii.detectors import KINDS, NER_KINDS
from gateway.pii.fields import (  # noqa: F401  (re-exported: the walker's public home was here)
    ENDPOINTS,
    TextField,
    copy_json,
    replaced,
    set_texts,
    token_array_field,
    walk_response_texts,
    walk_texts,
)
from gateway.pii.restore import restore


class PiiPolicyError(ValueError):
    """Problems in a `pii` section; `lines` holds one `key.path: reason` per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _rules(value: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@dataclass(frozen=True)
class PiiPolicy:
    input: Mapping[str, str] = field(default_factory=_rules)
    output: Mapping[str, str] = field(default_factory=_rules)
    restore: bool = False

    @property
    def active(self) -> bool:
        return bool(self.input or self.output)


def parse_pii_policy(section: object, *, prefix: str = "pii",
                     ner_available: bool | None = None) -> PiiPolicy:
    """Validate a policy's `pii` section (None: no rules). Raises `PiiPolicyError`.

    `person` and `location` are accepted only when the Presidio detector is installed
    (`ner_available`, by default `presidio.available()`).
    """
    if section is None:
        return PiiPolicy()
    if not isinstance(section, Mapping):
        raise PiiPolicyError([f"{prefix}: must be a mapping with input, output, restore"])
    problems: list[str] = []
    for key in section:
        if key not in ("input", "output", "restore"):
            problems.append(f"{prefix}.{key}: unknown key (expected input, output, restore)")
    sides: dict[str, dict[str, str]] = {}
    for side in ("input", "output"):
        raw = section.get(side)
        sides[side] = {}
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            problems.append(f"{prefix}.{side}: must be a mapping of kind to action")
            continue
        for kind, action in raw.items():
            path = f"{prefix}.{side}.{kind}"
            if kind not in KINDS:
                problems.append(f"{path}: unknown kind (one of {', '.join(KINDS)})")
                continue
            if not isinstance(action, str) or action not in ACTIONS:
                problems.append(f"{path}: unknown action {action!r} (one of {', '.join(ACTIONS)})")
                continue
            if kind in NER_KINDS:
                if ner_available is None:
                    ner_available = presidio.available()
                if not ner_available:
                    problems.append(f"{path}: needs the optional presidio detector, which is "
                                    "not installed (see gateway/pii/presidio.py)")
                    continue
            sides[side][kind] = action
    restore_flag = section.get("restore", False)
    if not isinstance(restore_flag, bool):
        problems.append(f"{prefix}.restore: must be true or false")
    if problems:
        raise PiiPolicyError(problems)
    return PiiPolicy(_rules(sides["input"]), _rules(sides["output"]), bool(restore_flag))


class FieldFinding(NamedTuple):
    """A finding in one field of a body; offsets are into that field's original text."""

    path: str
    kind: str
    start: int
    end: int
    action: str


def _redact(body: Any, fields: list[TextField], rules: Mapping[str, str],
            redactor: Redactor, phase: Phase) -> tuple[Any, list[FieldFinding]]:
    """`body`, or a copy of it with `rules` applied when something is to be replaced."""
    if not rules or not fields:
        return body, []
    new_texts, found = scan_texts([f.get() for f in fields], rules, redactor, phase)
    findings = [FieldFinding(f.path, *a) for f, applied in zip(fields, found, strict=True)
                for a in applied]
    return replaced(body, fields, new_texts), findings


def redact_request(body: dict[str, Any], endpoint: str, rules: Mapping[str, str],
                   redactor: Redactor) -> tuple[dict[str, Any], list[FieldFinding]]:
    """`body` with the input `rules` applied to every text field, and what was found: a
    new body when something was replaced, else `body` itself (never mutated). Raises
    `PiiBlockedError` / `DetectorError` like `scan`."""
    return _redact(body, list(walk_texts(body, endpoint)), rules, redactor, "input")


def redact_response(resp: dict[str, Any], endpoint: str, rules: Mapping[str, str],
                    redactor: Redactor) -> tuple[dict[str, Any], list[FieldFinding]]:
    """A non-streamed response with the output `rules` applied (a new one if changed)."""
    return _redact(resp, list(walk_response_texts(resp, endpoint)), rules, redactor, "output")


def restore_response(resp: dict[str, Any], endpoint: str, redactor: Redactor
                     ) -> dict[str, Any]:
    """A copy of a non-streamed response with this request's placeholders restored."""
    new_resp = copy_json(resp)
    if redactor.restorable:
        fields = list(walk_response_texts(new_resp, endpoint))
        set_texts(fields, [restore(f.get(), redactor) for f in fields])
    return new_resp
