"""Request body checks for the `/v1` endpoints: plain dict checks, no pydantic on the hot path.

Each check raises `InvalidRequest` naming the field (`param`) as OpenAI does. A client value
is type-checked before it is compared with a set of allowed values (`_one_of`): an object or
array is not hashable, and a set lookup on it would be a 500 instead of a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.config import ServerConfig
from gateway.errors import InvalidRequest, excerpt, invalid_value
from gateway.protocols.forbidden_keys import forbidden

# Standard HTTP headers whose names hold a destination or credential word but which choose
# nothing upstream: our own key, the host the client called, a reverse proxy's own headers.
_HTTP_HEADERS = frozenset({"authorization", "proxy-authorization", "proxy-connection", "host",
                           "cookie"})
_PROXY_HEADER_PREFIXES = ("x-forwarded-", "x-original-", "x-real-")
# Subtrees that hold the caller's own data, where a key such as `api_key` or `headers` is a
# name in that data and chooses nothing: free-form metadata, JSON schemas, tool arguments,
# token biases, template variables. They still count for the depth limit.
_FREE_FORM = frozenset({"metadata", "parameters", "schema", "json_schema", "guided_json",
                        "arguments", "logit_bias", "variables"})
_NOT_ALLOWED = ("is not allowed: upstreams, their credentials and the gateway's routing come "
                "only from its configuration")

_ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_ENCODINGS = frozenset({"float", "base64"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})


def refuse_routing_headers(headers: Mapping[str, str],
                           credentials: frozenset[str] = frozenset()) -> None:
    """Refuse a header whose name names a destination, a credential or routing machinery
    (`credentials`: the headers a protocol takes the caller's own key from)."""
    for name in headers:
        lower = name.lower()
        if lower in _HTTP_HEADERS or lower in credentials or \
                lower.startswith(_PROXY_HEADER_PREFIXES):
            continue
        if forbidden(name):
            raise InvalidRequest(f"the header {excerpt(name)} {_NOT_ALLOWED}", param=name,
                                 code="forbidden_parameter")


def scan_body(body: Any, max_depth: int) -> None:
    """Refuse keys naming a destination, a credential or routing machinery at any depth (see
    `forbidden_keys`), outside the caller's own data; and bodies deeper than `max_depth`."""
    stack: list[tuple[Any, int, str, bool]] = [(body, 1, "", True)]
    while stack:
        node, depth, path, checked = stack.pop()
        if depth > max_depth:
            raise InvalidRequest(f"the request body is nested deeper than {max_depth} levels",
                                 code="invalid_json")
        if isinstance(node, dict):
            for key, value in node.items():
                if checked and forbidden(key):
                    where = f"{path}.{key}" if path else key
                    raise InvalidRequest(f"{excerpt(where)} {_NOT_ALLOWED}", param=where,
                                         code="forbidden_parameter")
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, f"{path}.{key}" if path else key,
                                  checked and key not in _FREE_FORM))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, f"{path}[{i}]", checked))


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"missing required parameter: {param!r}", param=param,
                          code="missing_required_parameter")


def _one_of(value: Any, allowed: frozenset[str]) -> bool:
    """`value in allowed` for any JSON value: only a string can be a member."""
    return isinstance(value, str) and value in allowed


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt_int(body: Mapping[str, Any], name: str, lo: int, hi: int | None = None) -> None:
    v = body.get(name)
    if v is None:
        return
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise invalid_value(name, f"{name!r} must be an integer {bound}")


def _opt_num(body: Mapping[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if not _is_num(v) or not lo <= v <= hi:
        raise invalid_value(name, f"{name!r} must be a number between {lo} and {hi}")


def _opt_type(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str
              ) -> None:
    v = body.get(name)
    if v is not None and (not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool)):
        raise invalid_value(name, f"{name!r} must be {what}")


def _common(body: Mapping[str, Any], server: ServerConfig, has_template: bool) -> None:
    model = body.get("model")
    if model is None:
        if not has_template:
            raise _missing("model")
    elif not isinstance(model, str) or not model:
        raise invalid_value("model", "'model' must be a non-empty string")
    _opt_type(body, "stream", bool, "a boolean")
    _opt_int(body, "n", 1, server.max_n)
    _opt_int(body, "max_tokens", 1, 10_000_000)
    _opt_int(body, "max_completion_tokens", 1, 10_000_000)
    _opt_num(body, "temperature", 0, 2)
    _opt_num(body, "top_p", 0, 1)
    _opt_num(body, "presence_penalty", -2, 2)
    _opt_num(body, "frequency_penalty", -2, 2)
    _opt_int(body, "seed", -(2**63), 2**63 - 1)
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise invalid_value("user", "'user' must be a string of at most 256 characters")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise invalid_value("stop", "'stop' must be a string or a list of up to 4 strings")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise invalid_value("stream_options", "'stream_options' must be an object")
        inc = options.get("include_usage")
        if inc is not None and not isinstance(inc, bool):
            raise invalid_value("stream_options.include_usage", "'include_usage' must be a boolean")


def _template(body: Mapping[str, Any]) -> bool:
    tpl = body.get("template")
    if tpl is None:
        return False
    if not isinstance(tpl, dict) or not isinstance(tpl.get("name"), str):
        raise invalid_value("template", "'template' must be an object with a 'name'")
    return True


def _content(param: str, content: Any, role: str) -> None:
    if content is None:
        if role in ("assistant", "function"):
            return
        raise invalid_value(param, f"{param!r} must not be null for role {role!r}")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise invalid_value(param, f"{param!r} must be a string or an array of content parts")
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid_value(f"{param}[{i}]",
                                "each content part must be an object with a 'type'")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise invalid_value(f"{param}[{i}].text", "a text part needs a string 'text'")


def validate_chat(body: dict[str, Any], server: ServerConfig, *, final: bool = True) -> None:
    """`final`: the body is all that goes upstream (a template's params, when it names one,
    are merged later and the template stage runs `check_tool_choice` then)."""
    has_template = _template(body)
    _common(body, server, has_template)
    messages = body.get("messages")
    if messages is None:
        if not has_template:
            raise _missing("messages")
        messages = []
    if not isinstance(messages, list):
        raise invalid_value("messages", "'messages' must be an array")
    if not messages and not has_template:
        raise invalid_value("messages", "'messages' must not be empty")
    if len(messages) > server.max_messages:
        raise invalid_value("messages", f"at most {server.max_messages} messages are allowed")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid_value(where, f"{where!r} must be an object")
        role = message.get("role")
        if not _one_of(role, _ROLES):
            raise invalid_value(f"{where}.role", f"'{where}.role' must be one of "
                                + ", ".join(sorted(_ROLES)))
        _content(f"{where}.content", message.get("content"), str(role))
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise invalid_value(f"{where}.name", f"'{where}.name' must be a string")
    _tools(body)
    if final and not has_template:
        check_tool_choice(body)
    _opt_type(body, "parallel_tool_calls", bool, "a boolean")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict)
                            or not _one_of(fmt.get("type"), _RESPONSE_FORMATS)):
        raise invalid_value("response_format",
                            "'response_format.type' must be text, json_object or json_schema")


def _tools(body: Mapping[str, Any]) -> None:
    """`tools` are function tools with string names; `tool_choice` has one of its shapes."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_value("tools", "'tools' must be an array")
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise invalid_value(f"tools[{i}]", "each tool needs a 'function' with a 'name'")
            if tool.get("type") != "function":
                raise invalid_value(f"tools[{i}].type", f"'tools[{i}].type' must be 'function'")
            # litellm's translations crash on other shapes: a 502 that cooled the deployment
            # down for every client
            for name, kind, what in (("parameters", dict, "an object (a JSON Schema)"),
                                     ("description", str, "a string"),
                                     ("strict", bool, "a boolean")):
                if fn.get(name) is not None and not isinstance(fn[name], kind):
                    raise invalid_value(f"tools[{i}].function.{name}",
                                        f"'tools[{i}].function.{name}' must be {what}")
    choice = body.get("tool_choice")
    if choice is None or _one_of(choice, _TOOL_CHOICES):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return
        raise invalid_value("tool_choice.function.name",
                            "'tool_choice.function.name' must be a string")
    raise invalid_value("tool_choice", "'tool_choice' must be none, auto, required or "
                        '{"type": "function", "function": {"name": NAME}}')


def check_tool_choice(body: Mapping[str, Any]) -> None:
    """A `tool_choice` that forces a tool needs `tools`, and a named one must be among them.

    Run on the body as it goes upstream (after a template added its params). Shapes were
    checked by `validate_chat`."""
    choice = body.get("tool_choice")
    if choice is None or choice in ("none", "auto"):
        return
    tools = body.get("tools") or []
    if not tools:
        raise invalid_value("tool_choice",
                            "'tool_choice' forces a tool, but the request has no 'tools'")
    if isinstance(choice, dict):
        name = choice["function"]["name"]
        if not any(tool["function"]["name"] == name for tool in tools):
            raise invalid_value("tool_choice.function.name", f"'tool_choice' names the tool "
                                f"{name[:64]!r}, which is not in 'tools'")


def _tokens_or_text(param: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value) or all(_is_int(v) for v in value):
            return
        if all(isinstance(v, list) and v and all(_is_int(t) for t in v) for v in value):
            return
    raise invalid_value(param, f"{param!r} must be a string, an array of strings, or token arrays")


def validate_completion(body: dict[str, Any], server: ServerConfig) -> None:
    has_template = _template(body)
    _common(body, server, has_template)
    prompt = body.get("prompt")
    if prompt is None:
        if not has_template:
            raise _missing("prompt")
    else:
        _tokens_or_text("prompt", prompt)
    _opt_type(body, "echo", bool, "a boolean")
    _opt_type(body, "suffix", str, "a string")
    _opt_int(body, "best_of", 1, server.max_n)


def validate_embeddings(body: dict[str, Any], server: ServerConfig) -> None:
    _common(body, server, has_template=False)
    if body.get("stream"):
        raise invalid_value("stream", "embeddings cannot stream")
    if "input" not in body:
        raise _missing("input")
    _tokens_or_text("input", body["input"])
    fmt = body.get("encoding_format")
    if fmt is not None and not _one_of(fmt, _ENCODINGS):
        raise invalid_value("encoding_format", "'encoding_format' must be float or base64")
    _opt_int(body, "dimensions", 1, 65536)
