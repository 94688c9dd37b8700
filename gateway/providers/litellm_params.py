"""The request fields that may reach litellm, per endpoint: an allowlist, never a denylist.

litellm's call functions take several hundred keyword arguments besides the OpenAI ones, and
many of them steer litellm itself: where to send (`api_base`, `base_url`, a `fallbacks` model
string naming a URL), what to run (`success_callback`, `logger_fn`), what to pretend
(`mock_response`), how to retry, what to log and bill (`metadata`, `input_cost_per_token`).
So a translated route forwards only what is listed here:

- the OpenAI parameters of the endpoint that litellm translates for its providers;
- three provider extras users of those providers need: `top_k` (Anthropic, Gemini, Mistral,
  Bedrock, Cohere), `thinking` (Anthropic's extended thinking; `reasoning_effort` is the
  OpenAI spelling litellm maps to it) and `safety_settings` (Gemini).

`metadata` is OpenAI's, but litellm reads its own settings out of it: refused here.
`model`, `stream` and `stream_options` are the gateway's to set. The pipeline refuses any
other field with 400 `unsupported_parameter` before anything is sent (`pipeline/
provider_fields.py`); the adapter forwards nothing else either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.providers.base import Endpoint

_EXTRAS = frozenset({"top_k", "thinking", "safety_settings"})

CHAT = frozenset({
    "messages", "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user",
    "seed", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "reasoning_effort", "verbosity", "modalities", "audio", "prediction",
    "web_search_options", "service_tier", "store", "prompt_cache_key", "safety_identifier",
}) | _EXTRAS

COMPLETIONS = frozenset({
    "prompt", "suffix", "echo", "best_of", "temperature", "top_p", "n", "stop", "max_tokens",
    "presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "user", "seed", "top_k",
})

EMBEDDINGS = frozenset({"input", "dimensions", "encoding_format", "user"})

# /v1/responses on a litellm route is translated to a Chat body first (`protocols/
# responses_translate.py`), which then passes `CHAT`: these are the Responses fields the
# translation reads or knowingly drops.
RESPONSES = frozenset({
    "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
    "max_output_tokens", "max_tool_calls", "temperature", "top_p", "top_logprobs", "text",
    "reasoning", "user", "safety_identifier", "prompt_cache_key", "service_tier", "store",
    "metadata", "include", "truncation", "previous_response_id", "background",
}) | _EXTRAS
# Anthropic Messages fields litellm's `anthropic_messages` may get (Bedrock, Vertex AI).
MESSAGES = frozenset({
    "messages", "max_tokens", "system", "metadata", "stop_sequences", "temperature", "top_p",
    "top_k", "thinking", "tools", "tool_choice", "service_tier", "context_management",
    "output_format", "output_config",
})

ALLOWED: Mapping[Endpoint, frozenset[str]] = {
    "chat": CHAT, "completions": COMPLETIONS, "embeddings": EMBEDDINGS,
    "responses": RESPONSES}
# Set by the gateway itself on every call, whatever the client sent.
GATEWAY_SET = frozenset({"model", "stream", "stream_options"})


def first_unsupported(endpoint: Endpoint, body: Mapping[str, Any]) -> str | None:
    """The first field of `body` that a translated route does not forward, or None.

    Only OpenAI's own protocols reach litellm as they came: another client protocol is
    translated to Chat first (`providers/bridge.py`), by a translator that builds the Chat
    body from the fields it knows, so it has nothing to check here."""
    allowed = ALLOWED.get(endpoint)
    if allowed is None:
        return None
    for name in body:
        if name not in allowed and name not in GATEWAY_SET:
            return name
    return None


def forwarded(endpoint: Endpoint, body: Mapping[str, Any]) -> dict[str, Any]:
    """The allowed fields of `body`, as keyword arguments for litellm."""
    allowed = ALLOWED[endpoint]
    return {k: v for k, v in body.items() if k in allowed}
