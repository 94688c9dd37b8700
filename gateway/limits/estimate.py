"""What a request may use, before it is sent: prompt tokens (tiktoken) and output tokens.

Counting stays bounded: `gateway.tokens` counts long texts in fixed-size pieces (linear
time, about 0.15 s per MB on this machine), and a prompt over `OFFLOAD_CHARS` characters is
counted in a worker thread so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from gateway import tokens

OFFLOAD_CHARS = 64 * 1024
# A non-text content part (an image, audio): OpenAI bills a high-detail image at up to ~1,100
# tokens; the reservation takes that much and settles to what the provider reports.
NON_TEXT_PART_TOKENS = 1_105
# The output a request may produce when it sets no max_tokens and the price map does not
# know the model's maximum output.
DEFAULT_MAX_OUTPUT_TOKENS = 4_096


def _text_size(value: Any) -> int:
    """Characters of text a body field holds (a cheap upper bound, no tokenizing)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    if isinstance(value, Mapping):
        return sum(_text_size(v) for v in value.values())
    return 0


def _texts(value: Any, model: str) -> int:
    """Tokens of a prompt/input: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return tokens.count_text(value, model)
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return len(value)
        return sum(_texts(v, model) for v in value)
    return 0


def _chat_tokens(body: Mapping[str, Any], model: str) -> int:
    messages = body.get("messages") or []
    total = tokens.count_messages(messages, model)
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            total += NON_TEXT_PART_TOKENS * sum(
                1 for p in content if isinstance(p, Mapping) and p.get("type") != "text")
        calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        if calls:
            total += tokens.count_text(orjson.dumps(calls).decode(), model)
    for field in ("tools", "functions", "response_format"):
        value = body.get(field)
        if value:
            total += tokens.count_text(orjson.dumps(value).decode(), model)
    return total


def count_prompt(endpoint: str, body: Mapping[str, Any], model: str) -> int:
    if endpoint == "chat":
        return _chat_tokens(body, model)
    if endpoint == "completions":
        return _texts(body.get("prompt"), model) + _texts(body.get("suffix"), model)
    return _texts(body.get("input"), model)


async def prompt_tokens(endpoint: str, body: Mapping[str, Any], model: str) -> int:
    """Prompt tokens of a request, off the event loop when the prompt is large."""
    field = {"chat": "messages", "completions": "prompt"}.get(endpoint, "input")
    if _text_size(body.get(field)) > OFFLOAD_CHARS:
        return await asyncio.to_thread(count_prompt, endpoint, body, model)
    return count_prompt(endpoint, body, model)


def requested_output(body: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The output cap the request sets itself: (`max_completion_tokens` | `max_tokens`, N)."""
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool):
            return field, value
    return None, None


def choices(body: Mapping[str, Any]) -> int:
    """How many answers the request asks for (each may use max_tokens)."""
    n = body.get("n")
    best_of = body.get("best_of")
    count = max(n if isinstance(n, int) and not isinstance(n, bool) else 1,
                best_of if isinstance(best_of, int) and not isinstance(best_of, bool) else 1)
    return max(1, count)
