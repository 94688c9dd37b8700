"""Request body checks for `POST /v1/responses` (plain dict checks, as for the other endpoints).

Shapes only: whether a model's route can serve a hosted tool or an item kind is decided after
model access (`pipeline/stages/responses.py`). `prompt: {id, version, variables}` (OpenAI's
hosted prompt) becomes the gateway's `template` here: `id` is the template name, a numeric
`version` its version, any other `version` a label (`production`), `variables` its variables
(an `input_text` variable object gives its text).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import ServerConfig
from gateway.errors import excerpt, invalid_value
from gateway.protocols import validate

FUNCTION = "function"
# Tools that OpenAI runs on its side: only a deployment that speaks Responses natively can.
HOSTED_TOOLS = frozenset({
    "web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26",
    "file_search", "code_interpreter", "image_generation", "mcp", "computer_use_preview",
    "computer_use", "local_shell", "shell", "apply_patch", "custom",
})
ROLES = frozenset({"user", "assistant", "system", "developer"})
PART_TYPES = frozenset({"input_text", "input_image", "input_file", "input_audio",
                        "output_text", "refusal"})
# Item kinds a translated route can take (reasoning items are dropped there).
CHAT_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning"})
ITEM_TYPES = CHAT_ITEMS | frozenset({"item_reference"})
_FORMATS = frozenset({"text", "json_object", "json_schema"})
_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh"})
_SUMMARIES = frozenset({"auto", "concise", "detailed"})
_VERBOSITY = frozenset({"low", "medium", "high"})
_TRUNCATION = frozenset({"auto", "disabled"})
_CHOICES = frozenset({"none", "auto", "required"})


def _str(body: Mapping[str, Any], name: str, *, max_len: int | None = None) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str)
                              or (max_len is not None and len(value) > max_len)):
        bound = f" of at most {max_len} characters" if max_len else ""
        raise invalid_value(name, f"{name!r} must be a string{bound}")


def _enum(value: Any, allowed: frozenset[str], param: str) -> None:
    if value is not None and not validate._one_of(value, allowed):
        raise invalid_value(param, f"{param!r} must be one of {', '.join(sorted(allowed))}")


# Chat Completions parameters with a Responses form (or none): refused by name, since the
# translator sends unknown fields on as a server's extras, past Chat's own checks (`n` of
# 2**63 reached the upstream that way; make fuzz at FUZZ_SCALE=10).
_CHAT_ONLY = {
    "n": "the Responses API has no 'n': one answer per request",
    "messages": "use 'input'",
    "max_tokens": "use 'max_output_tokens'",
    "max_completion_tokens": "use 'max_output_tokens'",
    "response_format": "use 'text.format'",
    "reasoning_effort": "use 'reasoning.effort'",
    "functions": "use 'tools'",
    "function_call": "use 'tool_choice'",
    "logprobs": "use 'top_logprobs'",
    "logit_bias": "the Responses API has no 'logit_bias'",
}


def validate_responses(body: dict[str, Any], server: ServerConfig) -> None:
    for name, instead in _CHAT_ONLY.items():
        if name in body:
            raise invalid_value(name, f"{name!r} is a Chat Completions parameter: {instead}")
    prompt_to_template(body)
    has_template = validate._template(body)
    model = body.get("model")
    if model is None:
        if not has_template:
            raise validate._missing("model")
    elif not isinstance(model, str) or not model:
        raise invalid_value("model", "'model' must be a non-empty string")
    validate._opt_type(body, "stream", bool, "a boolean")
    validate._opt_type(body, "store", bool, "a boolean")
    validate._opt_type(body, "parallel_tool_calls", bool, "a boolean")
    validate._opt_int(body, "max_output_tokens", 1, 10_000_000)
    validate._opt_int(body, "max_tool_calls", 1, 10_000)
    validate._opt_int(body, "top_logprobs", 0, 20)
    validate._opt_num(body, "temperature", 0, 2)
    validate._opt_num(body, "top_p", 0, 1)
    for name in ("instructions", "previous_response_id", "prompt_cache_key", "service_tier"):
        _str(body, name)
    _str(body, "user", max_len=256)
    _str(body, "safety_identifier", max_len=256)
    if body.get("background"):
        raise invalid_value("background", "background responses are not supported by this "
                            "gateway: send the request without 'background'")
    if body.get("conversation") is not None:
        raise invalid_value("conversation", "conversation objects are not supported by this "
                            "gateway: chain responses with 'previous_response_id'")
    _enum(body.get("truncation"), _TRUNCATION, "truncation")
    _objects(body)
    if "input" not in body or body["input"] is None:
        if not has_template:
            raise validate._missing("input")
    else:
        _input(body["input"], server)
    _tools(body)


def _objects(body: Mapping[str, Any]) -> None:
    for name in ("text", "reasoning", "metadata", "stream_options"):
        value = body.get(name)
        if value is not None and not isinstance(value, dict):
            raise invalid_value(name, f"{name!r} must be an object")
    text = body.get("text") or {}
    fmt = text.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or not validate._one_of(fmt.get("type"), _FORMATS):
            raise invalid_value("text.format.type",
                                "'text.format.type' must be text, json_object or json_schema")
        if fmt["type"] == "json_schema" and (not isinstance(fmt.get("name"), str)
                                             or not isinstance(fmt.get("schema"), dict)):
            raise invalid_value("text.format", "a json_schema format needs a string 'name' "
                                "and an object 'schema'")
    _enum(text.get("verbosity"), _VERBOSITY, "text.verbosity")
    reasoning = body.get("reasoning") or {}
    _enum(reasoning.get("effort"), _EFFORTS, "reasoning.effort")
    _enum(reasoning.get("summary"), _SUMMARIES, "reasoning.summary")
    include = body.get("include")
    if include is not None and (not isinstance(include, list)
                                or not all(isinstance(i, str) for i in include)):
        raise invalid_value("include", "'include' must be an array of strings")
    metadata = body.get("metadata") or {}
    if len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values()):
        raise invalid_value("metadata", "'metadata' holds at most 16 string values")


def _input(value: Any, server: ServerConfig) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise invalid_value("input", "'input' must be a string or an array of items")
    if len(value) > server.max_messages:
        raise invalid_value("input", f"at most {server.max_messages} input items are allowed")
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_value(where, f"{where!r} must be an object")
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise invalid_value(f"{where}.type", f"'{where}.type' must be a string")
        if kind == "message":
            _message(item, where)
        elif kind == "function_call":
            for name in ("call_id", "name", "arguments"):
                if not isinstance(item.get(name), str):
                    raise invalid_value(f"{where}.{name}", f"'{where}.{name}' must be a string")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise invalid_value(f"{where}.call_id", f"'{where}.call_id' must be a string")
            output = item.get("output")
            if not isinstance(output, (str, list)):
                raise invalid_value(f"{where}.output", f"'{where}.output' must be a string "
                                    "or an array of content parts")
        elif kind == "item_reference" and not isinstance(item.get("id"), str):
            raise invalid_value(f"{where}.id", f"'{where}.id' must be a string")


def _message(item: Mapping[str, Any], where: str) -> None:
    role = item.get("role")
    if not validate._one_of(role, ROLES):
        raise invalid_value(f"{where}.role", f"'{where}.role' must be one of "
                            + ", ".join(sorted(ROLES)))
    content = item.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_value(f"{where}.content", f"'{where}.content' must be a string or an "
                            "array of content parts")
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not validate._one_of(part.get("type"), PART_TYPES):
            raise invalid_value(at, f"{at!r} must be a content part with a 'type' of "
                                + ", ".join(sorted(PART_TYPES)))
        kind = part["type"]
        if kind in ("input_text", "output_text") and not isinstance(part.get("text"), str):
            raise invalid_value(f"{at}.text", f"'{at}.text' must be a string")
        if kind == "input_image" and not isinstance(part.get("image_url"), str) \
                and not isinstance(part.get("file_id"), str):
            raise invalid_value(f"{at}.image_url", f"'{at}' needs an 'image_url' or 'file_id'")


def _tools(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_value("tools", "'tools' must be an array")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise invalid_value(f"tools[{i}]", "each tool must be an object with a 'type'")
            if tool["type"] != FUNCTION:
                continue
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise invalid_value(f"tools[{i}].name", f"'tools[{i}].name' must be a string")
            names.add(tool["name"])
            for name, kind, what in (("parameters", dict, "an object (a JSON Schema)"),
                                     ("description", str, "a string"),
                                     ("strict", bool, "a boolean")):
                if tool.get(name) is not None and not isinstance(tool[name], kind):
                    raise invalid_value(f"tools[{i}].{name}",
                                        f"'tools[{i}].{name}' must be {what}")
    choice = body.get("tool_choice")
    if choice == "required" and not tools and not validate._template(body):
        raise invalid_value("tool_choice", "'tool_choice' forces a tool, but the request has "
                            "no 'tools'")
    if choice is None or validate._one_of(choice, _CHOICES):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise invalid_value("tool_choice", "'tool_choice' must be none, auto, required or an "
                            "object with a 'type'")
    if choice["type"] == FUNCTION:
        chosen = choice.get("name")
        if not isinstance(chosen, str):
            raise invalid_value("tool_choice.name", "'tool_choice.name' must be a string")
        if chosen not in names and (tools is not None or not validate._template(body)):
            raise invalid_value("tool_choice.name", f"'tool_choice' names the tool "
                                f"{excerpt(chosen)}, which is not in 'tools'")


def check_tool_choice(body: Mapping[str, Any]) -> None:
    """Once a template's params are in: a `tool_choice` that forces a tool needs `tools`,
    and a named function must be one of them (shapes were checked by `validate_responses`)."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return
    tools = body.get("tools") or []
    if not tools:
        raise invalid_value("tool_choice", "'tool_choice' forces a tool, but the request has "
                            "no 'tools'")
    if isinstance(choice, dict) and choice.get("type") == FUNCTION:
        named = choice.get("name")
        if not any(isinstance(t, dict) and t.get("type") == FUNCTION and t.get("name") == named
                   for t in tools):
            raise invalid_value("tool_choice.name", f"'tool_choice' names the tool "
                                f"{excerpt(named)}, which is not in 'tools'")


def prompt_to_template(body: dict[str, Any]) -> None:
    """OpenAI's `prompt: {id, version, variables}` as the gateway's `template` (in place)."""
    prompt = body.get("prompt")
    if prompt is None:
        return
    if body.get("template") is not None:
        raise invalid_value("prompt", "give 'prompt' or 'template', not both")
    if not isinstance(prompt, dict) or not isinstance(prompt.get("id"), str):
        raise invalid_value("prompt", "'prompt' must be an object with a string 'id' (the "
                            "template name)")
    unknown = set(prompt) - {"id", "version", "variables"}
    if unknown:
        raise invalid_value(f"prompt.{min(unknown)}", "'prompt' takes id, version and "
                            "variables")
    template: dict[str, Any] = {"name": prompt["id"]}
    version = prompt.get("version")
    if isinstance(version, int) and not isinstance(version, bool):
        template["version"] = version
    elif isinstance(version, str) and version.isdigit():
        template["version"] = int(version)
    elif isinstance(version, str) and version:
        template["label"] = version
    elif version is not None:
        raise invalid_value("prompt.version", "'prompt.version' must be a version number or "
                            "a label")
    variables = prompt.get("variables")
    if variables is not None:
        if not isinstance(variables, dict):
            raise invalid_value("prompt.variables", "'prompt.variables' must be an object")
        template["variables"] = {k: _variable(v) for k, v in variables.items()}
    del body["prompt"]
    body["template"] = template


def _variable(value: Any) -> Any:
    """An `input_text` variable object is its text; other values are kept."""
    if isinstance(value, dict) and value.get("type") == "input_text" \
            and isinstance(value.get("text"), str):
        return value["text"]
    return value


def check_translatable(body: Mapping[str, Any]) -> None:
    """400 naming what a route by translation to Chat cannot serve: a hosted tool, a hosted
    tool choice, an item kind Chat has no place for, an image given only as a file id."""
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") != FUNCTION:
            raise invalid_value(
                f"tools[{i}].type", f"the {excerpt(tool['type'])} tool is not supported by "
                "this model: it is served by translation to Chat Completions, which runs "
                "function tools only", code="unsupported_tool")
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") not in (FUNCTION, "allowed_tools"):
        raise invalid_value("tool_choice", f"the {excerpt(choice.get('type'))} tool choice is "
                            "not supported by this model (served by translation to Chat "
                            "Completions)", code="unsupported_tool")
    raw = body.get("input")
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        kind: Any = item.get("type", "message")
        if kind not in CHAT_ITEMS:
            raise invalid_value(f"input[{i}].type", f"input items of type {excerpt(kind)} are "
                                "not supported by this model (served by translation to Chat "
                                "Completions)")
        for j, part in enumerate(item.get("content") if kind == "message" and
                                 isinstance(item.get("content"), list) else ()):
            if part.get("type") == "input_image" and not isinstance(part.get("image_url"), str):
                raise invalid_value(f"input[{i}].content[{j}].image_url",
                                    "this model takes images by 'image_url' only (it is "
                                    "served by translation to Chat Completions)")
