"""What a request may use, before it is sent: prompt tokens (tiktoken) and output tokens.

Counting stays bounded: `gateway.tokens` counts long texts in fixed-size pieces (linear
time, about 0.15 s per MB on this machine), and a prompt over `OFFLOAD_CHARS` characters is
counted in a worker thread so the event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gateway import tokens
from gateway.core.request import RequestContext

OFFLOAD_CHARS = 64 * 1024
# The output a request may produce when it sets no max_tokens and the price map does not
# know the model's maximum output.
DEFAULT_MAX_OUTPUT_TOKENS = 4_096
_PROMPT_FIELD = {"chat": "messages", "completions": "prompt"}


async def prompt_tokens(endpoint: str, body: Mapping[str, Any], model: str) -> int:
    """`tokens.count_request`, off the event loop when the prompt is large."""
    if tokens.text_size(body.get(_PROMPT_FIELD.get(endpoint, "input"))) > OFFLOAD_CHARS:
        return await asyncio.to_thread(tokens.count_request, endpoint, body, model)
    return tokens.count_request(endpoint, body, model)


def requested_output(body: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The output cap the request sets itself: (`max_completion_tokens` | `max_tokens` |
    `max_output_tokens` (Responses), N)."""
    for field in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
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


async def prompt_tokens_of(ctx: RequestContext) -> int:
    """The request's one prompt-token count (its protocol's), made once and kept on `ctx`."""
    if ctx.prompt_tokens is not None:
        return ctx.prompt_tokens
    body, model = ctx.body, ctx.model or ""
    if ctx.protocol.prompt_size(body) > OFFLOAD_CHARS:
        count: int = await asyncio.to_thread(ctx.protocol.count_prompt, body, model)
    else:
        count = ctx.protocol.count_prompt(body, model)
    ctx.prompt_tokens = count
    return count
