"""A policy's `pii` section, and every text-bearing field of OpenAI request and response
bodies.

`parse_pii_policy(section)` validates `{"input": {KIND: ACTION}, "output": {KIND: ACTION},
"restore": bool}` and names the key of each problem (`pii.input.emial: unknown kind`).

`walk_texts(body, endpoint)` yields a `TextField` (path, get, set) for each text a request
carries: every message's `content` (a string, or the `text` of each content part), `name`,
`refusal`, `tool_calls[].function.arguments`, the legacy `function_call.arguments`, tool
results (a `tool` message's content), `prediction.content`; the completions `prompt` (str
or list of str) and `suffix`; the embeddings `input` (str or list of str); and on every
endpoint `user` and the string values of `metadata`. Templates are rendered into messages
before this runs. `redact_request` / `redact_response` return NEW bodies; inputs are never
mutated.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.pii import presidio
from gateway.pii.actions import ACTIONS, Phase, Redactor, scan
from gateway.pii.detectors import KINDS, NER_KINDS
from gateway.pii.restore import restore

ENDPOINTS = ("chat", "completions", "embeddings")


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


# --- the texts of a body ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TextField:
    """One string inside a body: `get()` reads it, `set(value)` replaces it in place."""

    path: str
    container: dict[str, Any] | list[Any]
    key: str | int

    def get(self) -> str:
        return self.container[self.key]  # type: ignore[index]

    def set(self, value: str) -> None:
        self.container[self.key] = value  # type: ignore[index]


class FieldFinding(NamedTuple):
    """A finding in one field of a body; offsets are into that field's original text."""

    path: str
    kind: str
    start: int
    end: int
    action: str


def _str(container: Any, key: str | int, path: str) -> Iterator[TextField]:
    if isinstance(container, dict):
        if isinstance(container.get(key), str):  # type: ignore[arg-type]
            yield TextField(path, container, key)
    elif isinstance(container, list) and isinstance(key, int) and \
            isinstance(container[key], str):
        yield TextField(path, container, key)


def _str_or_strs(body: dict[str, Any], key: str) -> Iterator[TextField]:
    value = body.get(key)
    if isinstance(value, str):
        yield TextField(key, body, key)
    elif isinstance(value, list):
        for i in range(len(value)):
            yield from _str(value, i, f"{key}[{i}]")


def _content(msg: dict[str, Any], key: str, path: str) -> Iterator[TextField]:
    content = msg.get(key)
    if isinstance(content, str):
        yield TextField(path, msg, key)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict):
                for text_key in ("text", "refusal"):
                    yield from _str(part, text_key, f"{path}[{j}].{text_key}")
            else:
                yield from _str(content, j, f"{path}[{j}]")


def _calls(msg: dict[str, Any], path: str) -> Iterator[TextField]:
    calls = msg.get("tool_calls")
    if isinstance(calls, list):
        for k, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                yield from _str(fn, "arguments", f"{path}.tool_calls[{k}].function.arguments")
    legacy = msg.get("function_call")
    if isinstance(legacy, dict):
        yield from _str(legacy, "arguments", f"{path}.function_call.arguments")


def _common(body: dict[str, Any]) -> Iterator[TextField]:
    yield from _str(body, "user", "user")
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for key in list(metadata):
            yield from _str(metadata, key, f"metadata.{key}")


def walk_texts(body: dict[str, Any], endpoint: str) -> Iterator[TextField]:
    """Every text-bearing field of a request body for `endpoint` (chat, completions,
    embeddings)."""
    if endpoint == "chat":
        messages = body.get("messages")
        if isinstance(messages, list):
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict):
                    continue
                path = f"messages[{i}]"
                yield from _content(msg, "content", f"{path}.content")
                yield from _str(msg, "name", f"{path}.name")
                yield from _str(msg, "refusal", f"{path}.refusal")
                yield from _calls(msg, path)
        prediction = body.get("prediction")
        if isinstance(prediction, dict):
            yield from _content(prediction, "content", "prediction.content")
    elif endpoint == "completions":
        yield from _str_or_strs(body, "prompt")
        yield from _str(body, "suffix", "suffix")
    elif endpoint == "embeddings":
        yield from _str_or_strs(body, "input")
    else:
        raise ValueError(f"unknown endpoint {endpoint!r} (one of {', '.join(ENDPOINTS)})")
    yield from _common(body)


def walk_response_texts(resp: dict[str, Any], endpoint: str) -> Iterator[TextField]:
    """Every text of a non-streamed response: chat `choices[].message` content, refusal and
    tool-call arguments; completions `choices[].text`. Embeddings carry none."""
    choices = resp.get("choices")
    if not isinstance(choices, list) or endpoint == "embeddings":
        return
    for i, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        if endpoint == "completions":
            yield from _str(choice, "text", f"choices[{i}].text")
            continue
        msg = choice.get("message")
        if isinstance(msg, dict):
            path = f"choices[{i}].message"
            yield from _content(msg, "content", f"{path}.content")
            yield from _str(msg, "refusal", f"{path}.refusal")
            yield from _calls(msg, path)


def copy_json(value: Any) -> Any:
    """A copy of a JSON value's dicts and lists (strings and numbers are immutable)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def _redact(fields: list[TextField], rules: Mapping[str, str], redactor: Redactor,
            phase: Phase) -> list[FieldFinding]:
    findings: list[FieldFinding] = []
    if not rules:
        return findings
    if phase == "input":  # placeholder-like text the caller sent is never minted
        for f in fields:
            redactor.reserve_existing(f.get())
    for f in fields:
        text = f.get()
        result = scan(text, rules, redactor, phase=phase)
        if result.text is not text:
            f.set(result.text)
        findings.extend(FieldFinding(f.path, *a) for a in result.findings)
    return findings


def redact_request(body: dict[str, Any], endpoint: str, rules: Mapping[str, str],
                   redactor: Redactor) -> tuple[dict[str, Any], list[FieldFinding]]:
    """A copy of `body` with the input `rules` applied to every text field, and what was
    found. Raises `PiiBlockedError` / `DetectorError` like `scan`."""
    new_body = copy_json(body)
    return new_body, _redact(list(walk_texts(new_body, endpoint)), rules, redactor, "input")


def redact_response(resp: dict[str, Any], endpoint: str, rules: Mapping[str, str],
                    redactor: Redactor) -> tuple[dict[str, Any], list[FieldFinding]]:
    """A copy of a non-streamed response with the output `rules` applied."""
    new_resp = copy_json(resp)
    fields = list(walk_response_texts(new_resp, endpoint))
    return new_resp, _redact(fields, rules, redactor, "output")


def restore_response(resp: dict[str, Any], endpoint: str, redactor: Redactor
                     ) -> dict[str, Any]:
    """A copy of a non-streamed response with this request's placeholders restored."""
    new_resp = copy_json(resp)
    if redactor.restorable:
        for f in walk_response_texts(new_resp, endpoint):
            f.set(restore(f.get(), redactor))
    return new_resp
