"""Token counting with tiktoken, bounded in time for any input size.

`count_request(endpoint, body, model)` is THE prompt count of a request (limits reserve it,
streams without provider usage report it): the messages by OpenAI's accounting, tool calls,
tools, schemas, and a flat estimate per image or audio part.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

import orjson
import tiktoken

from gateway.offline_data import use_offline_tiktoken

# BPE on one enormous "word" is super-linear; long texts are counted in pieces.
_PIECE = 4096
_O200K_MARKERS = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
# A non-text content part (an image, audio): OpenAI bills a high-detail image at up to ~1,100
# tokens; a reservation takes that much and settles to what the provider reports.
NON_TEXT_PART_TOKENS = 1_105


@cache
def _encoding(name: str) -> tiktoken.Encoding:
    use_offline_tiktoken()  # the encodings ship in litellm's wheel; never download them
    return tiktoken.get_encoding(name)


def encoding_name(model: str) -> str:
    """The tiktoken encoding counted for `model` (a public name or a litellm model string)."""
    short = model.rsplit("/", 1)[-1]
    return "o200k_base" if short.startswith(_O200K_MARKERS) else "cl100k_base"


def encoding_for(model: str) -> tiktoken.Encoding:
    return _encoding(encoding_name(model))


def count_text(text: str, model: str = "") -> int:
    if not text:
        return 0
    enc = encoding_for(model)
    if len(text) <= _PIECE:
        return len(enc.encode_ordinary(text))
    return sum(len(enc.encode_ordinary(text[i:i + _PIECE]))
               for i in range(0, len(text), _PIECE))


def encode(text: str, model: str = "") -> list[int]:
    return encoding_for(model).encode_ordinary(text)


def decode_each(tokens: Iterable[int], model: str = "") -> list[str]:
    enc = encoding_for(model)
    return [enc.decode([t]) for t in tokens]


def count_prompt(prompt: Any, model: str = "") -> int:
    """Tokens of a completions `prompt`: a string, a token array (its length), or a list of
    either."""
    if isinstance(prompt, str):
        return count_text(prompt, model)
    if not isinstance(prompt, list):
        return 0
    if all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return sum(count_prompt(p, model) for p in prompt if isinstance(p, (str, list)))


def content_text(content: Any) -> str:
    """The text of a message `content`: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return ""


def count_messages(messages: Iterable[Mapping[str, Any]], model: str = "") -> int:
    """OpenAI's chat accounting: 3 tokens per message, its fields, then 3 for the reply."""
    total = 3
    for message in messages:
        total += 3
        total += count_text(content_text(message.get("content")), model)
        role = message.get("role")
        if isinstance(role, str):
            total += count_text(role, model)
        name = message.get("name")
        if isinstance(name, str):
            total += 1 + count_text(name, model)
    return total


def text_size(value: Any) -> int:
    """Characters of text a body field holds (a cheap upper bound, no tokenizing)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_size(v) for v in value)
    if isinstance(value, Mapping):
        return sum(text_size(v) for v in value.values())
    return 0


def _chat_tokens(body: Mapping[str, Any], model: str) -> int:
    messages = body.get("messages") or []
    total = count_messages(messages, model)
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            total += NON_TEXT_PART_TOKENS * sum(
                1 for p in content if isinstance(p, Mapping) and p.get("type") != "text")
        calls = message.get("tool_calls") if isinstance(message, Mapping) else None
        if calls:
            total += count_text(orjson.dumps(calls).decode(), model)
    for field in ("tools", "functions", "response_format"):
        value = body.get(field)
        if value:
            total += count_text(orjson.dumps(value).decode(), model)
    return total


def count_request(endpoint: str, body: Mapping[str, Any], model: str) -> int:
    """The prompt tokens of a request of `endpoint` (chat, completions, embeddings)."""
    if endpoint == "chat":
        return _chat_tokens(body, model)
    if endpoint == "completions":
        return count_prompt(body.get("prompt"), model) + count_prompt(body.get("suffix"), model)
    return count_prompt(body.get("input"), model)
