"""Messages <-> OpenAI Chat, for every deployment that does not speak Messages itself
(OpenAI-compatible servers, local ones, litellm's other providers, `demo`).

Request (Messages -> Chat):
- `system` (a string or text blocks) -> one leading `system` message, and a `system` turn
  (Claude Code sends them mid-conversation) -> a `system` message in its place;
  `cache_control` marks are dropped (OpenAI-compatible servers cache by themselves).
- user turns: text and images (base64 -> `data:` URL, url -> url) -> content parts;
  `tool_result` blocks -> one `tool` message each, placed first (Chat wants them right after
  the assistant turn that called the tools); `is_error` results keep their text.
- assistant turns: text -> `content`, `tool_use` -> `tool_calls` (input as a JSON string);
  `thinking` and `redacted_thinking` are dropped (signed for Anthropic only; never altered).
- `tools` -> function tools (`input_schema` -> `parameters`); Anthropic's own tool types
  (web search, code execution, bash, text editor, computer, ...) cannot run here: 400 naming
  the tool. `tool_choice` auto/any/tool/none -> auto/required/{function}/none;
  `disable_parallel_tool_use` -> `parallel_tool_calls: false`.
- `max_tokens`, `temperature`, `top_p`, `stop_sequences` (-> `stop`) carry over; `top_k`,
  `thinking`, `metadata`, `service_tier` and other Anthropic-only fields are dropped (OpenAI
  refuses `top_k`, and `reasoning_effort` on a model without reasoning).

Answer (Chat -> Messages): `reasoning_content` (DeepSeek, vLLM) -> a `thinking` block with an
empty signature (an unsigned block: nothing is fabricated; a passthrough deployment drops it
when it comes back), only when the request enabled `thinking` (as Anthropic would); text ->
a `text` block, tool calls -> `tool_use` blocks; finish reason stop/length/tool_calls/
content_filter -> end_turn/max_tokens/tool_use/refusal. Usage: `input_tokens` =
`prompt_tokens` - cached (Anthropic's excludes cache reads), `cache_read_input_tokens` =
cached.

Stream: one state machine over Chat chunks: `message_start` (its `input_tokens` the gateway's
prompt count, filled in by the encoder), then per block `content_block_start`, deltas
(`thinking_delta`, `text_delta`, `input_json_delta`), `content_block_stop`; at the end
`message_delta` (stop reason, cumulative usage: the provider's when it reported one) and
`message_stop`. Blocks are closed on `finish_reason` and also when the upstream ends without
one. An upstream failure propagates as an exception: the client gets an `error` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway import tokens
from gateway.errors import excerpt, invalid_value
from gateway.ids import random_hex
from gateway.protocols.anthropic import ESTIMATED

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "function_call": "tool_use", "content_filter": "refusal"}
_CHOICES = {"auto": "auto", "any": "required", "none": "none"}


# --------------------------------------------------------------------------- request

def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text") or "" for b in content
                         if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def _image_part(block: Mapping[str, Any]) -> dict[str, Any] | None:
    source = block.get("source")
    if not isinstance(source, Mapping):
        return None
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
    elif source.get("type") == "url":
        url = str(source.get("url") or "")
    else:
        return None
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            part = _image_part(block)
            if part is None:
                raise invalid_value(f"{where}.content.{i}.source",
                                    f"{where}.content.{i}.source: this model takes base64 or "
                                    "url images")
            parts.append(part)
        elif kind == "tool_result":
            inner = block.get("content")
            text = _text_of(inner)
            if isinstance(inner, list):
                images = [_image_part(b) for b in inner
                          if isinstance(b, Mapping) and b.get("type") == "image"]
                if any(images):
                    text += "\n[the tool result's images follow in the next message]"
                    parts.extend(p for p in images if p is not None)
            results.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": text})
        else:
            raise _untranslatable(f"{where}.content.{i}", kind)
    out = results
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append({"role": "user", "content": "\n".join(p["text"] for p in parts)
                    if only_text else parts})
    return out


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content or ()):
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append({"id": block["id"], "type": "function",
                          "function": {"name": block["name"],
                                       "arguments": orjson.dumps(block["input"]).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _untranslatable(f"{where}.content.{i}", kind)
    # no text: null beside tool calls, else "" (Chat refuses an empty assistant turn's null)
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(texts) or (None if calls else "")}
    if calls:
        message["tool_calls"] = calls
    return message


def _untranslatable(where: str, kind: Any) -> Exception:
    return invalid_value(where, f"{where}: {excerpt(kind)} blocks cannot be sent to this model "
                         "(it is reached through translation to OpenAI Chat)")


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom"):
            raise invalid_value(f"tools.{i}.type", f"tools.{i}: the tool {excerpt(tool['name'])} "
                                f"of type {excerpt(tool['type'])} cannot run on this model (it "
                                "is reached through translation to OpenAI Chat): use custom "
                                "tools with an input_schema")
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Mapping[str, Any]) -> Any:
    if choice["type"] == "tool":
        return {"type": "function", "function": {"name": choice["name"]}}
    return _CHOICES[choice["type"]]


def to_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Messages request body as a Chat body."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for i, message in enumerate(body.get("messages") or ()):
        where = f"messages.{i}"
        if message["role"] == "user":
            messages.extend(_user_turn(message.get("content"), where))
        elif message["role"] == "system":  # a system turn mid-conversation, kept in place
            messages.append({"role": "system", "content": _text_of(message.get("content"))})
        else:
            messages.append(_assistant_turn(message.get("content"), where))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        chat["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools:
        chat["tools"] = _tools(tools)
        if isinstance(choice, Mapping):
            chat["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use") is True:
                chat["parallel_tool_calls"] = False
    return chat


# --------------------------------------------------------------------------- answer

def message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-").removeprefix("chatcmpl_")
    return "msg_" + random_hex(12)


def _arguments(text: Any) -> dict[str, Any]:
    if isinstance(text, str) and text.strip():
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return {}
        return value if isinstance(value, dict) else {}
    return {}


def _usage(usage: Any) -> dict[str, Any]:
    """OpenAI usage -> Anthropic's: `input_tokens` excludes the cache reads that OpenAI's
    `prompt_tokens` includes (no double count), `output_tokens` = `completion_tokens`."""
    if not isinstance(usage, Mapping):
        return {"input_tokens": 0, "output_tokens": 0}
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") or 0) if isinstance(details, Mapping) else 0
    cached = min(cached, prompt)
    return {"input_tokens": prompt - cached, "output_tokens": usage.get("completion_tokens") or 0,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _reasoning(message: Mapping[str, Any]) -> str | None:
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) and text else None


def thinks(body: Mapping[str, Any]) -> bool:
    """The request asked for thinking blocks."""
    thinking = body.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


def from_chat(result: Mapping[str, Any], thinking: bool = True) -> dict[str, Any]:
    """A Chat answer (its first choice) as a Messages answer."""
    choices = result.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = _reasoning(message)
    if reasoning and thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _tool_id(),
                        "name": function.get("name") or "", "input":
                        _arguments(function.get("arguments"))})
    return {"id": message_id(result.get("id")), "type": "message", "role": "assistant",
            "model": result.get("model"), "content": content,
            "stop_reason": STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"),
            "stop_sequence": None, "usage": _usage(result.get("usage"))}


def _tool_id() -> str:
    return "toolu_" + random_hex(12)


# --------------------------------------------------------------------------- stream

class _StreamState:
    """Which block is open, what the tool calls are, what was written (for the estimate)."""

    __slots__ = ("index", "kind", "model", "started", "stop_reason", "thinking", "tools",
                 "usage", "written")

    def __init__(self) -> None:
        self.thinking = True  # the request asked for thinking blocks
        self.started = False
        self.index = -1  # the open block's index (-1: none yet)
        self.kind: str | None = None  # the open block's kind
        self.tools: dict[int, int] = {}  # Chat tool call index -> block index
        self.stop_reason: str | None = None
        self.usage: Any = None
        self.written: list[str] = []
        self.model: Any = None

    def close(self) -> dict[str, Any] | None:
        if self.kind is None:
            return None
        self.kind = None
        return {"type": "content_block_stop", "index": self.index}

    def open(self, kind: str, block: dict[str, Any]) -> list[dict[str, Any]]:
        events = [e for e in (self.close(),) if e is not None]
        self.index += 1
        self.kind = kind
        events.append({"type": "content_block_start", "index": self.index,
                       "content_block": block})
        return events


def _delta(state: _StreamState, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": state.index, "delta": delta}


def _choice_events(state: _StreamState, choice: Mapping[str, Any]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    delta = choice.get("delta") or {}
    reasoning = _reasoning(delta)
    if reasoning and not state.thinking:
        state.written.append(reasoning)
    elif reasoning:
        if state.kind != "thinking":
            events += state.open("thinking", {"type": "thinking", "thinking": "",
                                              "signature": ""})
        events.append(_delta(state, {"type": "thinking_delta", "thinking": reasoning}))
        state.written.append(reasoning)
    text = delta.get("content")
    if isinstance(text, str) and text:
        if state.kind != "text":
            events += state.open("text", {"type": "text", "text": ""})
        events.append(_delta(state, {"type": "text_delta", "text": text}))
        state.written.append(text)
    for pos, call in enumerate(delta.get("tool_calls") or ()):
        if not isinstance(call, Mapping):
            continue
        position = call.get("index", pos)
        function = call.get("function") or {}
        if position not in state.tools:
            events += state.open("tool_use", {"type": "tool_use",
                                              "id": call.get("id") or _tool_id(),
                                              "name": function.get("name") or "", "input": {}})
            state.tools[position] = state.index
            state.written.append(function.get("name") or "")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and \
                state.tools[position] == state.index and state.kind == "tool_use":
            events.append(_delta(state, {"type": "input_json_delta",
                                         "partial_json": arguments}))
            state.written.append(arguments)
    reason = choice.get("finish_reason")
    if reason:
        state.stop_reason = STOP_REASONS.get(reason, "end_turn")
        events += [e for e in (state.close(),) if e is not None]
    return events


def _start(state: _StreamState, chunk: Mapping[str, Any]) -> dict[str, Any]:
    state.started = True
    return {"type": "message_start", ESTIMATED: True,
            "message": {"id": message_id(chunk.get("id")), "type": "message",
                        "role": "assistant", "model": chunk.get("model") or state.model,
                        "content": [], "stop_reason": None, "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 1,
                                  "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0}}}


def _end(state: _StreamState) -> list[dict[str, Any]]:
    events = [e for e in (state.close(),) if e is not None]
    end: dict[str, Any] = {"type": "message_delta",
                           "delta": {"stop_reason": state.stop_reason or "end_turn",
                                     "stop_sequence": None}}
    if state.usage is not None:
        end["usage"] = _usage(state.usage)
    else:  # the upstream reported none: the estimate (the relay estimates the audit's)
        end[ESTIMATED] = True
        end["usage"] = {"output_tokens": tokens.count_text("".join(state.written),
                                                           str(state.model or ""))}
    events.append(end)
    events.append({"type": "message_stop"})
    return events


async def stream_from_chat(chunks: AsyncIterator[dict[str, Any]], model: Any = None,
                           thinking: bool = True) -> AsyncIterator[dict[str, Any]]:
    """Chat chunks -> Messages events (see the module docstring)."""
    state = _StreamState()
    state.model = model
    state.thinking = thinking
    async for chunk in chunks:
        if not state.started:
            yield _start(state, chunk)
        if chunk.get("usage"):
            state.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                for event in _choice_events(state, choice):
                    yield event
    if not state.started:
        yield _start(state, {})
    for event in _end(state):
        yield event


class MessagesTranslator:
    """The `Translator` of the Messages protocol (`providers/bridge.py`)."""

    @staticmethod
    def request(body: dict[str, Any]) -> dict[str, Any]:
        return to_chat(body)

    @staticmethod
    def response(result: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return from_chat(result, thinks(body))

    @staticmethod
    def stream(chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]
               ) -> AsyncIterator[dict[str, Any]]:
        return stream_from_chat(chunks, body.get("model"), thinks(body))

