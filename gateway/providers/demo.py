"""The built-in offline `demo` provider: deterministic answers, streams, embeddings, real usage.

Replies echo the caller's last text so tests and first-time users can see the round trip.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway import tokens
from gateway.providers.base import Endpoint, ProviderError, Target

PREFIX = "This is the offline demo model. You said: "
DEFAULT_DIMENSIONS = 256
_WORDS = re.compile(r"\s*\S+")
_ECHO_CHARS = 2000


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return tokens.content_text(message.get("content"))
    return tokens.content_text(messages[-1].get("content")) if messages else ""


def _limit(text: str, max_tokens: int | None, model: str) -> tuple[str, str]:
    if max_tokens is None:
        return text, "stop"
    ids = tokens.encode(text, model)
    if len(ids) <= max_tokens:
        return text, "stop"
    return tokens.encoding_for(model).decode(ids[:max_tokens]), "length"


def _reply_text(body: dict[str, Any], prompt: str) -> str:
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return orjson.dumps({"echo": prompt[:_ECHO_CHARS]}).decode()
    return PREFIX + prompt[:_ECHO_CHARS]


def _tool_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """A forced tool, or on `auto` the first tool when the user has just asked something (a
    model that decides to use its tool; once the tool's result is in, it answers in text)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    messages = body.get("messages") or [{}]
    asked = isinstance(messages[-1], dict) and messages[-1].get("role") == "user"
    if not tools or choice == "none" or (choice in (None, "auto") and not asked):
        return None
    name = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
    tool = next((t.get("function") or {} for t in tools if isinstance(t, dict)
                 and (name is None or (t.get("function") or {}).get("name") == name)), {})
    name = name or tool.get("name", "tool")
    return {"id": "call_demo_0", "type": "function",
            "function": {"name": name, "arguments": _arguments(tool.get("parameters"))}}


def _arguments(schema: Any) -> str:
    """Arguments its schema accepts: a stand-in value for each required property."""
    if not isinstance(schema, dict):
        return "{}"
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    stand_in = {"string": "demo", "integer": 1, "number": 1, "boolean": True, "array": [],
                "object": {}}
    return orjson.dumps({k: stand_in.get(str((props.get(k) or {}).get("type")), "demo")
                         for k in schema.get("required") or () if isinstance(k, str)}).decode()


def _prompts(prompt: Any) -> list[Any]:
    """A completions `prompt` as its prompts: strings, or token arrays (lists of ints)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        return prompt
    return [prompt if isinstance(prompt, str | list) else ""]


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) else None


def _embedding(text: str, dims: int) -> list[float]:
    out: list[float] = []
    counter = 0
    seed = text.encode()
    while len(out) < dims:
        block = hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        out.extend((b - 127.5) / 127.5 for b in block)
        counter += 1
    vec = out[:dims]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


class DemoProvider:
    """Answers offline. `target.upstream_model` names the demo model (e.g. `demo-1`)."""

    async def close(self) -> None:
        return None

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        if endpoint == "embeddings":
            return self._embeddings(body, target)
        if endpoint == "completions":
            return self._completion(body, target)
        return self._chat(body, target)

    async def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                     ) -> AsyncIterator[dict[str, Any]]:
        if endpoint == "embeddings":
            raise ProviderError("embeddings cannot stream", status=400)
        created = int(time.time())
        model = target.upstream_model
        if endpoint == "completions":
            full = self._completion(body, target)
            rid, obj = full["id"], "text_completion"
            for choice in full["choices"]:
                for piece in _WORDS.findall(choice["text"]):
                    yield {"id": rid, "object": obj, "created": created, "model": model,
                           "choices": [{"index": choice["index"], "text": piece,
                                        "finish_reason": None, "logprobs": None}]}
                yield {"id": rid, "object": obj, "created": created, "model": model,
                       "choices": [{"index": choice["index"], "text": "",
                                    "finish_reason": choice["finish_reason"], "logprobs": None}]}
            yield {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
                   "usage": full["usage"]}
            return
        full = self._chat(body, target)
        rid, obj = full["id"], "chat.completion.chunk"
        for choice in full["choices"]:
            idx, message = choice["index"], choice["message"]
            yield {"id": rid, "object": obj, "created": created, "model": model,
                   "choices": [{"index": idx, "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None}]}
            if message.get("tool_calls"):
                calls = [{"index": 0, **message["tool_calls"][0]}]
                yield {"id": rid, "object": obj, "created": created, "model": model,
                       "choices": [{"index": idx, "delta": {"tool_calls": calls},
                                    "finish_reason": None}]}
            for piece in _WORDS.findall(message.get("content") or ""):
                yield {"id": rid, "object": obj, "created": created, "model": model,
                       "choices": [{"index": idx, "delta": {"content": piece},
                                    "finish_reason": None}]}
            yield {"id": rid, "object": obj, "created": created, "model": model,
                   "choices": [{"index": idx, "delta": {},
                                "finish_reason": choice["finish_reason"]}]}
        yield {"id": rid, "object": obj, "created": created, "model": model, "choices": [],
               "usage": full["usage"]}

    def _chat(self, body: dict[str, Any], target: Target) -> dict[str, Any]:
        messages = body.get("messages") or []
        model = target.upstream_model
        prompt = _last_user_text(messages)
        call = _tool_call(body)
        text, finish = _limit(_reply_text(body, prompt), _max_tokens(body), model)
        n = body.get("n") or 1
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        if call is not None:
            message = {"role": "assistant", "content": None, "refusal": None,
                       "tool_calls": [call]}
            finish = "tool_calls"
        out_tokens = (tokens.count_text(text, model) if call is None
                      else tokens.count_text(call["function"]["name"], model) + 3)
        prompt_tokens = tokens.count_messages(messages, model)
        digest = hashlib.sha256(orjson.dumps(messages, option=orjson.OPT_SORT_KEYS)).hexdigest()
        return {
            "id": f"chatcmpl-demo{digest[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, "message": message, "finish_reason": finish,
                         "logprobs": None} for i in range(n)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": out_tokens * n,
                      "total_tokens": prompt_tokens + out_tokens * n},
            "system_fingerprint": "demo",
        }

    def _completion(self, body: dict[str, Any], target: Target) -> dict[str, Any]:
        model = target.upstream_model
        prompts = _prompts(body.get("prompt", ""))
        n = body.get("n") or 1
        choices: list[dict[str, Any]] = []
        out_tokens = in_tokens = 0
        for p in prompts:
            in_tokens += tokens.count_prompt(p, model)
            echo = p[:_ECHO_CHARS] if isinstance(p, str) else ""  # token ids are not echoed
            text, finish = _limit(PREFIX + echo, _max_tokens(body), model)
            for _ in range(n):
                choices.append({"index": len(choices), "text": text, "finish_reason": finish,
                                "logprobs": None})
                out_tokens += tokens.count_text(text, model)
        digest = hashlib.sha256(orjson.dumps(prompts)).hexdigest()
        return {"id": f"cmpl-demo{digest[:24]}", "object": "text_completion",
                "created": int(time.time()), "model": model, "choices": choices,
                "usage": {"prompt_tokens": in_tokens, "completion_tokens": out_tokens,
                          "total_tokens": in_tokens + out_tokens}}

    def _embeddings(self, body: dict[str, Any], target: Target) -> dict[str, Any]:
        model = target.upstream_model
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
            inputs = [" ".join(map(str, raw))]
        elif isinstance(raw, list):
            inputs = [x if isinstance(x, str) else " ".join(map(str, x)) for x in raw]
        else:
            inputs = []
        dims = body.get("dimensions") or DEFAULT_DIMENSIONS
        as_base64 = body.get("encoding_format") == "base64"
        data, used = [], 0
        for i, text in enumerate(inputs):
            used += tokens.count_text(text, model)
            vec = _embedding(text, dims)
            value: Any = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                          if as_base64 else vec)
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": used, "total_tokens": used}}
