"""The Responses API over a deployment that speaks OpenAI Chat: requests one way, answers and
streams the other (`providers/bridge.py` calls it per attempt).

Request, Responses -> Chat:

    instructions                     a first `system` message
    input: "text"                    one user message
    message items                    messages (`developer` -> `system`); input_text -> text,
                                     input_image -> image_url, input_file -> file,
                                     output_text / refusal -> the assistant's text
    function_call items              `tool_calls` of an assistant message (consecutive calls
                                     join the assistant message before them)
    function_call_output items       `tool` messages (`output` parts joined as text)
    reasoning items                  dropped (Chat has no place for them)
    tools (flat)                     tools nested under `function`
    tool_choice {type, name}         {"type": "function", "function": {"name"}}
    tool_choice allowed_tools        its mode, and only the tools it allows
    text.format                      response_format (json_schema: name, schema, strict)
    text.verbosity                   verbosity
    reasoning.effort                 reasoning_effort
    max_output_tokens                max_tokens
    temperature, top_p, user, parallel_tool_calls, service_tier, safety_identifier,
    prompt_cache_key                 as they are; top_logprobs -> logprobs + top_logprobs
    store, metadata, include, truncation, previous_response_id, background,
    max_tool_calls, stream_options   the gateway's or not Chat's: not sent
    any other field                  sent as it came (an OpenAI-compatible server's extras)

Hosted tools, hosted tool choices and item types a Chat upstream cannot take are refused
before routing (`pipeline/stages/responses.py`), so nothing here raises on a client's body.

Answer, Chat -> Responses: `reasoning_content` (or `reasoning`) -> a reasoning item with
its text as the summary; the message's text and refusal -> a message item; tool calls ->
function_call items (`call_id` = the Chat call id); `finish_reason: length` -> status
`incomplete`, `incomplete_details.reason: max_output_tokens` (`content_filter` likewise);
usage -> Responses usage. The stream is the same, event by event (`responses_stream.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from gateway.protocols.responses_shapes import (
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    skeleton,
    text_part,
    usage_from_chat,
)
from gateway.protocols.responses_stream import ChatToResponsesStream

# Responses fields that are the gateway's or have no Chat meaning: never sent to Chat.
NOT_SENT = frozenset({
    "input", "instructions", "tools", "tool_choice", "text", "reasoning", "max_output_tokens",
    "top_logprobs", "store", "metadata", "include", "truncation", "previous_response_id",
    "background", "max_tool_calls", "stream", "stream_options", "prompt", "template",
    "conversation",
})
_SAME = ("model", "temperature", "top_p", "user", "parallel_tool_calls", "service_tier",
         "safety_identifier", "prompt_cache_key")
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponsesTranslator:
    """The `Translator` for `/v1/responses` (registered in `app.py`)."""

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        return chat_request(body)

    def response(self, result: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        return responses_answer(result, body)

    def stream(self, chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]
               ) -> AsyncIterator[list[dict[str, Any]]]:
        return _events(chunks, body)


async def _events(chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]
                  ) -> AsyncIterator[list[dict[str, Any]]]:
    """The events of each upstream chunk as one list: the relay sends them in one write
    (the first chunk alone is five events: created, in_progress, the message item, its
    text part, the first delta)."""
    machine = ChatToResponsesStream(body)
    async for chunk in chunks:
        events = machine.feed(chunk)
        if events:
            yield events
    events = machine.finish()
    if events:
        yield events


# --- request ---------------------------------------------------------------------------------

def chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: body[k] for k in _SAME if k in body}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping):
                _add_item(messages, item)
    out["messages"] = messages
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = {t.get("name") for t in choice.get("tools") or () if isinstance(t, Mapping)}
        tools = [t for t in tools or () if t.get("name") in allowed]
        choice = "required" if choice.get("mode") == "required" else "auto"
    if tools:
        out["tools"] = [_chat_tool(t) for t in tools]
    if choice is not None:
        out["tool_choice"] = _chat_tool_choice(choice)
    text = body.get("text")
    if isinstance(text, Mapping):
        fmt = text.get("format")
        if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema"):
            out["response_format"] = _response_format(fmt)
        if text.get("verbosity") is not None:
            out["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None:
        out["reasoning_effort"] = reasoning["effort"]
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    if body.get("top_logprobs"):
        out["logprobs"] = True
        out["top_logprobs"] = body["top_logprobs"]
    for key, value in body.items():  # a server's own extras, as chat requests pass them
        if key not in NOT_SENT and key not in out:
            out[key] = value
    return out


def _add_item(messages: list[dict[str, Any]], item: Mapping[str, Any]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        role = "system" if role == "developer" else role
        content = item.get("content")
        if role == "assistant":
            messages.append({"role": "assistant", "content": _assistant_text(content)})
        else:
            messages.append({"role": role, "content": _chat_content(content)})
    elif kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")}}
        last = messages[-1] if messages else None
        if last is not None and last.get("role") == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                         "content": output if isinstance(output, str) else _parts_text(output)})
    # reasoning (and item kinds refused before routing): nothing for Chat


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(str(p.get("text") or p.get("refusal") or "") for p in parts
                   if isinstance(p, Mapping))


def _assistant_text(content: Any) -> str:
    return content if isinstance(content, str) else _parts_text(content)


def _chat_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            image: dict[str, Any] = {"url": part.get("image_url")}
            if part.get("detail") is not None:
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file = {k: part[k] for k in ("file_data", "file_id", "filename") if k in part}
            parts.append({"type": "file", "file": file})
        elif kind == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part.get("input_audio")})
    return parts


def _chat_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict")
          if tool.get(k) is not None}
    return {"type": "function", "function": fn}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(fmt: Mapping[str, Any]) -> dict[str, Any]:
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    schema = {k: fmt[k] for k in ("name", "description", "schema", "strict")
              if fmt.get(k) is not None}
    return {"type": "json_schema", "json_schema": schema}


# --- answer ----------------------------------------------------------------------------------

def responses_answer(result: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """A Chat completion as a Responses response object."""
    created = result.get("created")
    created = created if isinstance(created, int) else int(time.time())
    response = skeleton(body, response_id=new_id("resp"), model=str(result.get("model") or ""),
                        created_at=created, status="completed")
    choices = result.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    finish = choice.get("finish_reason")
    incomplete = INCOMPLETE.get(str(finish))
    output: list[dict[str, Any]] = []
    thought = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(thought, str) and thought:
        output.append(reasoning_item(new_id("rs"), thought))
    parts = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(text_part(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(message_item(new_id("msg"), parts,
                                   "incomplete" if incomplete else "completed"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append(function_call_item(new_id("fc"), str(call.get("id") or new_id("call")),
                                         str(fn.get("name") or ""),
                                         str(fn.get("arguments") or ""), "completed"))
    response["output"] = output
    response["usage"] = usage_from_chat(result.get("usage"))
    response["completed_at"] = int(time.time())
    if incomplete:
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": incomplete}
    return response
