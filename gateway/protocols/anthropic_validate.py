"""Request body checks for Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`).

Plain dict checks, as for the OpenAI endpoints: each problem is a 400 naming the field. Only
what the gateway itself reads is checked strictly (the model, `max_tokens`, the message and
block shapes its stages walk, `tools` and `tool_choice`); any other field goes upstream as it
came (a passthrough deployment is Anthropic itself), and unknown block types are left for the
deployment to judge (the translator refuses the ones it cannot carry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import ServerConfig
from gateway.errors import InvalidRequest, invalid_value
from gateway.protocols.validate import _one_of

# `system` turns mid-conversation: Claude Code sends them (beta mid-conversation-system).
_ROLES = frozenset({"user", "assistant", "system"})
_TOOL_CHOICES = frozenset({"auto", "any", "tool", "none"})
_THINKING = frozenset({"enabled", "disabled", "adaptive"})


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: Field required", param=param,
                          code="missing_required_parameter")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(body: Mapping[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is not None and (not _is_num(v) or not lo <= v <= hi):
        raise invalid_value(name, f"{name}: must be a number between {lo:g} and {hi:g}")


def _template(body: Mapping[str, Any]) -> bool:
    tpl = body.get("template")
    if tpl is None:
        return False
    if not isinstance(tpl, dict) or not isinstance(tpl.get("name"), str):
        raise invalid_value("template", "template: must be an object with a 'name'")
    return True


def _text_blocks(param: str, value: Any) -> None:
    """`system` and `tool_result.content`: a string or an array of content blocks."""
    if value is None or isinstance(value, str):
        return
    if not isinstance(value, list):
        raise invalid_value(param, f"{param}: must be a string or an array of content blocks")
    for i, block in enumerate(value):
        _block(f"{param}[{i}]", block, nested=True)


def _block(where: str, block: Any, *, nested: bool = False) -> None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise invalid_value(where, f"{where}: each content block must be an object with a "
                            "'type'")
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        raise invalid_value(f"{where}.text", f"{where}.text: must be a string")
    elif kind in ("image", "document") and not isinstance(block.get("source"), dict):
        raise invalid_value(f"{where}.source", f"{where}.source: must be an object")
    elif nested:
        return
    elif kind == "tool_use":
        for name, check, what in (("id", str, "a string"), ("name", str, "a string"),
                                  ("input", dict, "an object")):
            if not isinstance(block.get(name), check):
                raise invalid_value(f"{where}.{name}", f"{where}.{name}: must be {what}")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise invalid_value(f"{where}.tool_use_id", f"{where}.tool_use_id: must be a string")
        _text_blocks(f"{where}.content", block.get("content"))
    elif kind == "thinking":
        for name in ("thinking", "signature"):
            if not isinstance(block.get(name), str):
                raise invalid_value(f"{where}.{name}", f"{where}.{name}: must be a string")
    elif kind == "redacted_thinking" and not isinstance(block.get("data"), str):
        raise invalid_value(f"{where}.data", f"{where}.data: must be a string")


def _messages(body: Mapping[str, Any], server: ServerConfig, required: bool) -> None:
    messages = body.get("messages")
    if messages is None:
        if required:
            raise _missing("messages")
        return
    if not isinstance(messages, list):
        raise invalid_value("messages", "messages: must be an array")
    if required and not messages:
        raise invalid_value("messages", "messages: at least one message is required")
    if len(messages) > server.max_messages:
        raise invalid_value("messages", f"messages: at most {server.max_messages} are allowed")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid_value(where, f"{where}: must be an object")
        if not isinstance(message.get("role"), str) or message["role"] not in _ROLES:
            raise invalid_value(f"{where}.role", f"{where}.role: must be 'user', 'assistant' "
                                "or 'system'")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            raise invalid_value(f"{where}.content",
                                f"{where}.content: must be a string or an array of blocks")
        for j, block in enumerate(content):
            _block(f"{where}.content.{j}", block)


def _tools(body: Mapping[str, Any]) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_value("tools", "tools: must be an array")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise invalid_value(f"tools.{i}", f"tools.{i}: each tool needs a string 'name'")
            kind = tool.get("type")
            if kind is not None and not isinstance(kind, str):
                raise invalid_value(f"tools.{i}.type", f"tools.{i}.type: must be a string")
            if kind in (None, "custom") and not isinstance(tool.get("input_schema"), dict):
                raise invalid_value(f"tools.{i}.input_schema",
                                    f"tools.{i}.input_schema: must be an object (a JSON Schema)")
            if tool.get("description") is not None and not isinstance(tool["description"], str):
                raise invalid_value(f"tools.{i}.description",
                                    f"tools.{i}.description: must be a string")
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str) \
            or choice["type"] not in _TOOL_CHOICES:
        raise invalid_value("tool_choice", "tool_choice: must be an object whose type is auto, "
                            "any, tool or none")
    if choice["type"] == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise invalid_value("tool_choice.name", "tool_choice.name: must be a string")
        if tools is not None and name not in names:
            raise invalid_value("tool_choice.name", f"tool_choice.name: {name[:64]!r} is not "
                                "in tools")


def _common(body: Mapping[str, Any], server: ServerConfig, has_template: bool) -> None:
    model = body.get("model")
    if model is None:
        if not has_template:
            raise _missing("model")
    elif not isinstance(model, str) or not model:
        raise invalid_value("model", "model: must be a non-empty string")
    _messages(body, server, required=not has_template)
    _text_blocks("system", body.get("system"))
    _tools(body)
    thinking = body.get("thinking")
    if thinking is not None and (not isinstance(thinking, dict)
                                 or not _one_of(thinking.get("type"), _THINKING)):
        raise invalid_value("thinking", "thinking: must be an object whose type is enabled, "
                            "disabled or adaptive")
    if isinstance(thinking, dict) and thinking.get("budget_tokens") is not None \
            and not _is_int(thinking["budget_tokens"]):
        raise invalid_value("thinking.budget_tokens", "thinking.budget_tokens: must be an "
                            "integer")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid_value("metadata", "metadata: must be an object")


def validate_messages(body: dict[str, Any], server: ServerConfig) -> None:
    """`POST /v1/messages`: `model`, `max_tokens` and `messages` required (a template may
    supply them; the template stage checks again after it expanded)."""
    has_template = _template(body)
    _common(body, server, has_template)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        if not has_template:
            raise _missing("max_tokens")
    elif not _is_int(max_tokens) or not 1 <= max_tokens <= 10_000_000:
        raise invalid_value("max_tokens", "max_tokens: must be an integer of at least 1")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_value("stream", "stream: must be a boolean")
    _num(body, "temperature", 0, 1)
    _num(body, "top_p", 0, 1)
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid_value("top_k", "top_k: must be an integer of at least 0")
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list)
                                  and all(isinstance(s, str) for s in stops)):
        raise invalid_value("stop_sequences", "stop_sequences: must be an array of strings")


def validate_count_tokens(body: dict[str, Any], server: ServerConfig) -> None:
    """`POST /v1/messages/count_tokens`: the same body without `max_tokens` and `stream`."""
    if body.get("template") is not None:
        raise invalid_value("template", "template: count_tokens takes no template")
    _common(body, server, has_template=False)


def check_expanded(body: Mapping[str, Any]) -> None:
    """After a template expanded: what a Messages request must have."""
    if not isinstance(body.get("max_tokens"), int):
        raise _missing("max_tokens")
    if not body.get("messages"):
        raise invalid_value("messages", "messages: at least one message is required")
