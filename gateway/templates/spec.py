"""The template shape (also the file format of `prompts/<name>.yaml`) and its variable checks.

```yaml
name: support-triage            # letters, digits, . _ - (it appears in URLs); = the file's stem
description: ...
model: demo                     # optional: used when the request names none
params: {temperature: 0.2}      # optional: request parameters used when the request sets none
variables:
  ticket: {type: string, required: true, max_length: 20000}
  tier: {type: string, enum: [free, pro, enterprise], default: free}
messages:
  - role: system
    content: "Jinja2 over the variables: {{ tier }}"
```

A variable is required unless it has a `default` (or says `required: false`); an optional
variable without a default is `none` in the template. A variable sent as `null` counts as
not sent. `max_length` bounds a string's characters or an array's items.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.config import ServerConfig
from gateway.errors import InvalidRequest, excerpt
from gateway.protocols import validate
from gateway.templates.errors import TemplateError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
VARIABLE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
# Jinja2 keywords and names with a meaning of their own inside a template.
RESERVED = frozenset({
    "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if",
    "else", "elif", "endif", "for", "endfor", "set", "endset", "with", "endwith", "filter",
    "endfilter", "macro", "endmacro", "call", "endcall", "block", "endblock", "extends",
    "include", "import", "from", "as", "raw", "endraw", "recursive", "loop", "self", "range",
    "caller", "varargs", "kwargs", "super",
})
MAX_SOURCE_CHARS = 65_536  # per message
MAX_MESSAGES = 100
MAX_VARIABLES = 100
# Request parameters a template may set (used when the request sets none).
PARAMS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "seed", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "logit_bias", "logprobs", "top_logprobs", "n", "reasoning_effort",
})

VarType = Literal["string", "integer", "number", "boolean", "array", "object"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": _is_int,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class VariableSpec(_Strict):
    type: VarType = "string"
    required: bool | None = None
    default: Any = None
    enum: Annotated[list[Any], Field(min_length=1, max_length=1000)] | None = None
    max_length: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    description: Annotated[str, Field(max_length=2000)] | None = None


class MessageSpec(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_SOURCE_CHARS)]


class TemplateSpec(_Strict):
    name: str
    description: Annotated[str, Field(max_length=2000)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    variables: Annotated[dict[str, VariableSpec], Field(max_length=MAX_VARIABLES)] = Field(
        default_factory=dict)
    messages: Annotated[list[MessageSpec], Field(min_length=1, max_length=MAX_MESSAGES)]

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("use 1-128 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (it appears in URLs)")
        return value


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def parse_spec(data: Any) -> TemplateSpec:
    """Validate the shape; raise `TemplateError(template_invalid)` naming the first problem."""
    problems = spec_problems(data)
    if isinstance(problems, TemplateSpec):
        return problems
    where, why = problems[0]
    raise TemplateError(f"{where}: {why}" if where else why, code="template_invalid",
                        param=where or None)


def spec_problems(data: Any) -> TemplateSpec | list[tuple[str, str]]:
    """The spec, or every problem as `(key.path, reason)` (shape first, then meaning)."""
    if not isinstance(data, dict):
        return [("", "a template must be an object")]
    try:
        spec = TemplateSpec.model_validate(data)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            reason = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            out.append((dotted(err["loc"]), reason.removeprefix("Value error, ")))
        return out
    problems = _variable_problems(spec) + _param_problems(spec.params)
    return problems or spec


def _variable_problems(spec: TemplateSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, var in spec.variables.items():
        where = f"variables.{name}"
        if not VARIABLE.match(name) or name in RESERVED:
            out.append((where, "a variable name is a letter then letters, digits or '_' (at "
                               "most 64), and not a Jinja2 keyword"))
            continue
        check = TYPE_CHECKS[var.type]
        has_default = "default" in var.model_fields_set and var.default is not None
        if var.required and has_default:
            out.append((f"{where}.default", "a required variable cannot have a default"))
        if var.max_length is not None and var.type not in ("string", "array"):
            out.append((f"{where}.max_length", "max_length applies to strings and arrays"))
        for i, value in enumerate(var.enum or ()):
            if not check(value):
                out.append((f"{where}.enum[{i}]", f"must be of type {var.type}"))
        if has_default:
            problem = _value_problem(var, var.default)
            if problem:
                out.append((f"{where}.default", problem))
    return out


def _param_problems(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    for key in params:
        if key not in PARAMS:
            return [(f"params.{key}", "not a parameter a template may set (allowed: "
                                      + ", ".join(sorted(PARAMS)) + ")")]
    probe = {"model": "x", "messages": [{"role": "user", "content": "x"}], **params}
    try:
        validate.scan_body(probe, 32)
        # tools may come from the request: a forced tool is checked against them then
        validate.validate_chat(probe, ServerConfig(max_n=128), final="tools" in params)
    except InvalidRequest as exc:
        return [(f"params.{exc.param}" if exc.param else "params", exc.message)]
    return []


def _value_problem(var: VariableSpec, value: Any) -> str | None:
    if not TYPE_CHECKS[var.type](value):
        return f"must be of type {var.type}"
    if var.enum is not None and value not in var.enum:
        return "must be one of " + ", ".join(orjson.dumps(v).decode() for v in var.enum)
    if var.max_length is not None and len(value) > var.max_length:
        unit = "characters" if var.type == "string" else "items"
        return f"must be at most {var.max_length} {unit} long"
    return None


@dataclass(frozen=True, slots=True)
class _Decl:
    name: str
    spec: VariableSpec
    check: Callable[[Any], bool]
    required: bool
    default: Any
    simple: bool  # no enum and no max_length: the type check is all


class VariableBinder:
    """Checks request variables against the declared schema and fills in defaults."""

    def __init__(self, variables: Mapping[str, VariableSpec]) -> None:
        self.decls = tuple(
            _Decl(name, var, TYPE_CHECKS[var.type],
                  var.required if var.required is not None else var.default is None,
                  var.default, var.enum is None and var.max_length is None)
            for name, var in variables.items())
        self.names = frozenset(variables)

    def bind(self, given: Any) -> dict[str, Any]:
        """Raise `TemplateError` with `param` = `variables.NAME` for the first problem."""
        if given is None:
            given = {}
        elif not isinstance(given, dict):
            raise TemplateError("'variables' must be an object", param="variables",
                                code="template_variable_invalid")
        for key in given:
            if key not in self.names:
                raise TemplateError(f"unknown variable {excerpt(key)}: the template does not "
                                    "declare it", param=f"variables.{key}",
                                    code="template_variable_unknown")
        out: dict[str, Any] = {}
        for d in self.decls:
            value = given.get(d.name)
            if value is None:
                if d.required:
                    raise TemplateError(f"missing required variable {excerpt(d.name)}",
                                        param=f"variables.{d.name}",
                                        code="template_variable_missing")
                out[d.name] = d.default
                continue
            if not (d.check(value) if d.simple else _value_problem(d.spec, value) is None):
                problem = _value_problem(d.spec, value)
                raise TemplateError(f"variable {excerpt(d.name)} {problem}",
                                    param=f"variables.{d.name}",
                                    code="template_variable_invalid")
            out[d.name] = value
        return out


def example_values(variables: Mapping[str, VariableSpec]) -> dict[str, Any]:
    """Plausible values of the declared types (for a trial render at create time)."""
    placeholders = {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": [],
                    "object": {}}
    out = {}
    for name, var in variables.items():
        if var.default is not None:
            out[name] = var.default
        elif var.enum:
            out[name] = var.enum[0]
        else:
            out[name] = placeholders[var.type]
    return out


def canonical(spec: TemplateSpec) -> dict[str, Any]:
    """The spec as stored and shown: only variable fields that were set, in a fixed order."""
    return {
        "name": spec.name,
        "description": spec.description,
        "model": spec.model,
        "params": dict(spec.params),
        "variables": {n: v.model_dump(exclude_unset=True) for n, v in spec.variables.items()},
        "messages": [{"role": m.role, "content": m.content} for m in spec.messages],
    }


def content_hash(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON: equal specs, equal hash (YAML layout does not count)."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(doc: Mapping[str, Any]) -> str:
    """The spec as YAML in the file format (multi-line content as `|` blocks, for diffs)."""
    shown = {k: v for k, v in doc.items() if v not in (None, {}, [])}
    return yaml.dump(shown, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100_000,
                     default_flow_style=False)
