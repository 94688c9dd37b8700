"""The shapes of the OpenAI Responses API that both its paths share: ids, the response object
with the request echoed in it, output items, input items as stored, and usage both ways.

The response object carries every field the official SDKs and the Open Responses schema
require (`tools`, `text`, `truncation`, `top_p`, … even when the request left them out), with
OpenAI's defaults: clients parse the terminal event against that schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.request import Usage
from gateway.ids import random_hex

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Events whose payload is a whole response object (the snapshot a client may read).
RESPONSE_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued",
                             *TERMINAL_EVENTS})
# Usage inside the gateway only: the translator estimated it (the upstream sent none).
ESTIMATED = "_gateway_estimated"


def new_id(prefix: str) -> str:
    """`resp_`, `msg_`, `fc_`, `rs_` + 48 hex digits: opaque, unguessable."""
    return f"{prefix}_{random_hex(24)}"


def skeleton(body: Mapping[str, Any], *, response_id: str, model: str, created_at: int,
             status: str = "in_progress") -> dict[str, Any]:
    """A response object for `body` with no output yet: the request echoed, defaults filled."""
    reasoning = body.get("reasoning")
    reasoning = reasoning if isinstance(reasoning, Mapping) else {}
    text = body.get("text")
    text = dict(text) if isinstance(text, Mapping) else {}
    text.setdefault("format", {"type": "text"})
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": _or(body.get("parallel_tool_calls"), True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": _or(body.get("service_tier"), "default"),
        "store": _or(body.get("store"), True),
        "temperature": _or(body.get("temperature"), 1.0),
        "text": text,
        "tool_choice": _or(body.get("tool_choice"), "auto"),
        "tools": [_echoed_tool(t) for t in body.get("tools") or ()],
        "top_logprobs": _or(body.get("top_logprobs"), 0),
        "top_p": _or(body.get("top_p"), 1.0),
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "truncation": _or(body.get("truncation"), "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _echoed_tool(tool: Any) -> Any:
    """A function tool as a response lists it: every field present (null: not given)."""
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        return tool
    return {"type": "function", "name": tool.get("name"), "description": None,
            "parameters": None, "strict": None, **tool}


# --- output items ---------------------------------------------------------------------------

def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": parts}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str,
                       status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def reasoning_item(item_id: str, summary: str | None) -> dict[str, Any]:
    parts = [] if summary is None else [{"type": "summary_text", "text": summary}]
    return {"id": item_id, "type": "reasoning", "summary": parts}


def output_text(response: Mapping[str, Any]) -> str:
    """The answer's text (the SDKs' `output_text`): every output_text part, in order."""
    out = []
    for item in response.get("output") or ():
        if isinstance(item, Mapping) and item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, Mapping) and part.get("type") == "output_text":
                    out.append(str(part.get("text") or ""))
    return "".join(out)


# --- input items -----------------------------------------------------------------------------

def input_items(value: Any) -> list[dict[str, Any]]:
    """`input` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    if isinstance(value, list):
        return value
    return []


_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
                "reasoning": "rs"}


def stored_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """An input item as `input_items` lists it: typed, with an id, message content as parts."""
    out = dict(item)
    kind = out.setdefault("type", "message")
    if kind == "message":
        content = out.get("content")
        if isinstance(content, str):
            part = "output_text" if out.get("role") == "assistant" else "input_text"
            out["content"] = [{"type": part, "text": content}]
        out.setdefault("status", "completed")
    if not isinstance(out.get("id"), str):
        out["id"] = new_id(_ITEM_PREFIX.get(str(kind), "item"))
    return out


def replayed(items: list[Any]) -> list[dict[str, Any]]:
    """Stored items as input for a later request: without the ids and statuses the upstream
    never issued, and without reasoning items (only the upstream that made them reads them)."""
    out = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("type") == "reasoning":
            continue
        out.append({k: v for k, v in item.items() if k not in ("id", "status")})
    return out


# --- usage -----------------------------------------------------------------------------------

def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_chat(usage: Any) -> dict[str, Any] | None:
    """A Chat `usage` object as Responses usage (cached and reasoning tokens kept)."""
    if not isinstance(usage, Mapping):
        return None
    prompt = _int(usage.get("prompt_tokens"))
    completion = _int(usage.get("completion_tokens"))
    pdet = usage.get("prompt_tokens_details")
    cdet = usage.get("completion_tokens_details")
    cached = _int(pdet.get("cached_tokens")) if isinstance(pdet, Mapping) else 0
    reasoning = _int(cdet.get("reasoning_tokens")) if isinstance(cdet, Mapping) else 0
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": _int(usage.get("total_tokens")) or prompt + completion}


def usage_of(usage: Any) -> Usage | None:
    """Responses usage as the gateway's `Usage` (details in OpenAI's Chat shape, for pricing)."""
    if not isinstance(usage, Mapping):
        return None
    inp = _int(usage.get("input_tokens"))
    out = _int(usage.get("output_tokens"))
    idet = usage.get("input_tokens_details")
    odet = usage.get("output_tokens_details")
    total = _int(usage.get("total_tokens")) or inp + out
    details = {
        "prompt_tokens": inp, "completion_tokens": out, "total_tokens": total,
        "prompt_tokens_details": {
            "cached_tokens": _int(idet.get("cached_tokens")) if isinstance(idet, Mapping) else 0},
        "completion_tokens_details": {
            "reasoning_tokens": _int(odet.get("reasoning_tokens"))
            if isinstance(odet, Mapping) else 0},
    }
    return Usage(inp, out, total, "estimated" if usage.get(ESTIMATED) else "provider", details)
