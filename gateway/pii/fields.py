"""Every text a request or response body carries: one walker over the whole body, by schema.

The walker visits every string leaf of a body, at any depth, in the body's own order, and
yields it as a `TextField` (path, get, set) unless the schema below says it is not text. So a
field the schema does not know (a new OpenAI parameter, a free-form `metadata` value, a
template variable, a JSON schema's descriptions) is scanned: a field is left out only by
being listed, never by being forgotten. In objects the schema does not describe, the names
of the entries are text too (`metadata` keys, JSON schema property names).

Paths name a place in a body: keys joined by `.`, `[]` for every item of a list (a field's
own `path` has the item's index, and `#name` when it is an entry's name).
- `NOT_TEXT`: identifiers, enums and names the API matches on (`model`, `role`, ids, tool
  names, `type`, ...). A listed path skips its whole subtree (`tool_choice` is an enum or an
  object naming a tool).
- `BINARY`: base64 payloads with no text to scan (audio).
- `URLS`: scanned by the text they carry (`urls.text_of`: percent-decoded; a `data:` URL's
  payload when it is text; an image or PDF payload is binary and skipped).

Token arrays (`prompt` / `input` as integers) are not text either: tokens are
tokenizer-specific, so the gateway cannot read them reliably; `token_array_field` names the
field that carries them, for the PII stage to refuse and the audit store to leave out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.pii import messages_fields, urls

ENDPOINTS = ("chat", "completions", "embeddings", "responses", "messages", "messages:stored")

NOT_TEXT = (
    "model", "messages[].role", "messages[].tool_call_id",
    "messages[].content[].type", "messages[].content[].image_url.detail",
    "messages[].content[].input_audio.format", "messages[].content[].file.file_id",
    "messages[].tool_calls[].id", "messages[].tool_calls[].type",
    "messages[].tool_calls[].function.name", "messages[].function_call.name",
    "messages[].audio.id",
    "tools[].type", "tools[].function.name", "functions[].name", "tool_choice", "function_call",
    "response_format.type", "response_format.json_schema.name", "prediction.type",
    "reasoning_effort", "service_tier", "modalities", "audio.voice", "audio.format",
    "verbosity", "web_search_options.search_context_size",
    "web_search_options.user_location.type", "encoding_format",
)
BINARY = ("messages[].content[].input_audio.data",)
URLS = ("messages[].content[].image_url.url", "messages[].content[].file.file_data")
RESPONSE_NOT_TEXT = (
    "id", "object", "model", "system_fingerprint", "service_tier", "usage",
    "choices[].finish_reason", "choices[].message.role", "choices[].message.tool_calls[].id",
    "choices[].message.tool_calls[].type", "choices[].message.tool_calls[].function.name",
    "choices[].message.function_call.name", "choices[].message.audio.id",
    "choices[].message.annotations[].type", "data[].object", "data[].embedding",
)
RESPONSE_BINARY = ("choices[].message.audio.data",)
RESPONSE_URLS = ("choices[].message.annotations[].url_citation.url",)

# /v1/responses: input items and tools (flat), the answer's output items, and the request
# fields a response object echoes. One schema serves every endpoint: these paths do not
# occur in the others' bodies (embeddings' `input` holds strings or token arrays only).
RESPONSES_NOT_TEXT = (
    "input[].type", "input[].role", "input[].id", "input[].status", "input[].call_id",
    "input[].name", "input[].content[].type", "input[].content[].detail",
    "input[].content[].file_id", "input[].output[].type", "input[].summary[].type",
    "tools[].name", "text.format.type", "text.format.name", "text.verbosity", "reasoning",
    "previous_response_id", "include", "truncation",
)
RESPONSES_BINARY = ("input[].encrypted_content",)
RESPONSES_URLS = ("input[].content[].image_url", "input[].content[].file_data",
                  "input[].content[].file_url")
RESPONSES_RESPONSE_NOT_TEXT = (
    "status", "incomplete_details", "error.code", "output[].type", "output[].id",
    "output[].status", "output[].role", "output[].call_id", "output[].name",
    "output[].content[].type", "output[].content[].annotations[].type",
    "output[].summary[].type", "tool_choice", "tools[].type", "tools[].name",
    "text.format.type", "text.format.name", "text.verbosity", "reasoning", "truncation",
    "previous_response_id",
)
RESPONSES_RESPONSE_BINARY = ("output[].encrypted_content",)
RESPONSES_RESPONSE_URLS = ("output[].content[].annotations[].url",)

_SKIP = "skip"
_URL = "url"
Schema = dict[str, Any]


def _schema(marked: Iterable[tuple[str, Iterable[str]]]) -> Schema:
    root: Schema = {}
    for mark, paths in marked:
        for path in paths:
            *parents, leaf = path.replace("[]", ".[]").split(".")
            node = root
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = mark
    return root


REQUEST_SCHEMA = _schema(((_SKIP, NOT_TEXT), (_SKIP, BINARY), (_URL, URLS),
                         (_SKIP, RESPONSES_NOT_TEXT), (_SKIP, RESPONSES_BINARY),
                         (_URL, RESPONSES_URLS)))
RESPONSE_SCHEMA = _schema(((_SKIP, RESPONSE_NOT_TEXT), (_SKIP, RESPONSE_BINARY),
                          (_URL, RESPONSE_URLS), (_SKIP, RESPONSES_RESPONSE_NOT_TEXT),
                          (_SKIP, RESPONSES_RESPONSE_BINARY), (_URL, RESPONSES_RESPONSE_URLS)))
# Anthropic Messages (`messages_fields.py`): signed thinking is never rewritten by a policy;
# "messages:stored" is the stored view (audit bodies, traces), which scans it too.
_M = messages_fields
SCHEMAS: dict[str, tuple[Schema, Schema]] = {
    "messages": (_schema(((_SKIP, _M.NOT_TEXT + _M.SIGNED), (_SKIP, _M.BINARY),
                          (_URL, _M.URLS))),
                 _schema(((_SKIP, _M.RESPONSE_NOT_TEXT + _M.RESPONSE_SIGNED),))),
    "messages:stored": (_schema(((_SKIP, _M.NOT_TEXT), (_SKIP, _M.BINARY), (_URL, _M.URLS))),
                        _schema(((_SKIP, _M.RESPONSE_NOT_TEXT),))),
}
STORED = {"messages": "messages:stored"}  # endpoint -> the schema of its stored view


@dataclass(frozen=True, slots=True)
class TextField:
    """One string inside a body: `get()` reads its text, `set(text)` replaces it in place.

    A URL field reads and writes the text it carries (`urls.text_of` / `urls.rebuild`); a
    key field is the name of an entry of a free-form object (`metadata`, a JSON schema's
    `properties`), and `set` renames the entry in place, keeping the order. Set the fields
    of one walk in reverse order (`set_texts`), so an entry is renamed after its value is
    set.
    """

    path: str
    container: dict[str, Any] | list[Any]
    key: str | int
    url: bool = False
    is_key: bool = False

    def get(self) -> str:
        if self.is_key:
            return self.key  # type: ignore[return-value]
        value: str = self.container[self.key]  # type: ignore[index]
        if self.url:
            return urls.text_of(value) or ""
        return value

    def set(self, value: str) -> None:
        container = self.container
        if self.is_key:
            assert isinstance(container, dict)
            items = list(container.items())
            container.clear()
            container.update((value if k == self.key else k, v) for k, v in items)
            return
        if self.url:
            value = urls.rebuild(container[self.key], value)  # type: ignore[index]
        container[self.key] = value  # type: ignore[index]


def set_texts(fields: list[TextField], texts: list[str | None]) -> None:
    """Set each field to its new text (None: unchanged), last field first."""
    for f, text in zip(reversed(fields), reversed(texts), strict=True):
        if text is not None:
            f.set(text)


def copy_json(value: Any, memo: dict[int, Any] | None = None) -> Any:
    """A copy of a JSON value's dicts and lists (strings and numbers are immutable);
    `memo` gets `id(original container) -> its copy`."""
    if isinstance(value, dict):
        new: Any = {k: copy_json(v, memo) for k, v in value.items()}
    elif isinstance(value, list):
        new = [copy_json(v, memo) for v in value]
    else:
        return value
    if memo is not None:
        memo[id(value)] = new
    return new


def replaced(body: Any, fields: list[TextField], texts: list[str | None]) -> Any:
    """A copy of `body` with its `fields` (from one walk of it) set to `texts` (None:
    unchanged); `body` itself when nothing changes. `body` is never mutated."""
    if all(text is None for text in texts):
        return body
    memo: dict[int, Any] = {}
    new = copy_json(body, memo)
    moved = [(TextField(f.path, memo[id(f.container)], f.key, f.url, f.is_key), text)
             for f, text in zip(fields, texts, strict=True) if text is not None]
    set_texts([f for f, _ in moved], [text for _, text in moved])
    return new


def _walk(container: dict[str, Any] | list[Any], schema: Schema | None, path: str,
          out: list[TextField]) -> None:
    """Append the text fields under `container`; `schema` None: every string is text."""
    if isinstance(container, dict):
        for key, value in container.items():
            if schema is None:  # a free-form object: the names of its entries are text too
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    out.append(TextField(f"{where}#name", container, key, is_key=True))
                sub = None
            else:
                if not isinstance(value, (str, dict, list)):
                    continue
                sub = schema.get(key)
                if sub is _SKIP:
                    continue
                where = f"{path}.{key}" if path else str(key)
            _visit(container, key, value, sub, where, out)
    else:
        sub = schema.get("[]") if schema is not None else None
        if sub is _SKIP:
            return
        for i, value in enumerate(container):
            if isinstance(value, (str, dict, list)):
                _visit(container, i, value, sub, f"{path}[{i}]", out)


def _visit(container: dict[str, Any] | list[Any], key: str | int, value: Any, sub: Any,
           where: str, out: list[TextField]) -> None:
    if isinstance(value, str):
        if sub is _URL:
            if urls.text_of(value) is not None:
                out.append(TextField(where, container, key, url=True))
        else:
            out.append(TextField(where, container, key))
    elif isinstance(value, (dict, list)) and value:
        _walk(value, sub if isinstance(sub, dict) else None, where, out)


def _check(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r} (one of {', '.join(ENDPOINTS)})")


def walk_texts(body: dict[str, Any], endpoint: str) -> Iterator[TextField]:
    """Every text field of a request body for `endpoint` (chat, completions, embeddings)."""
    _check(endpoint)
    out: list[TextField] = []
    _walk(body, SCHEMAS[endpoint][0] if endpoint in SCHEMAS else REQUEST_SCHEMA, "", out)
    return iter(out)


def walk_response_texts(resp: dict[str, Any], endpoint: str) -> Iterator[TextField]:
    """Every text field of a non-streamed response (answers, refusals, tool-call
    arguments, completions text, log-prob tokens, ...)."""
    _check(endpoint)
    out: list[TextField] = []
    _walk(resp, SCHEMAS[endpoint][1] if endpoint in SCHEMAS else RESPONSE_SCHEMA, "", out)
    return iter(out)


def _is_tokens(value: Any) -> bool:
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    if isinstance(first, list):
        first = first[0] if first else None
    return isinstance(first, int) and not isinstance(first, bool)


def token_array_field(body: dict[str, Any], endpoint: str) -> str | None:
    """`prompt` or `input` when the body sends token arrays there, else None."""
    name = {"completions": "prompt", "embeddings": "input"}.get(endpoint)
    if name is None:
        return None
    value = body.get(name)
    if _is_tokens(value):
        return name
    if isinstance(value, list) and any(_is_tokens(v) for v in value if isinstance(v, list)):
        return name
    return None
