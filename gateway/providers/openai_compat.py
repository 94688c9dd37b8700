"""Our own client for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, llama.cpp, …).

One pooled HTTP/1.1 client per process (`gateway/providers/http1.py`); bodies go out as orjson
bytes; streams are parsed line by line with a first-chunk and an idle time limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.providers.base import Endpoint, ProviderError, Target
from gateway.providers.http1 import (
    Http1Client,
    UpstreamAnswer,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamProtocolError,
    UpstreamStream,
)
from gateway.providers.retry_after import retry_after_s
from gateway.providers.summary import upstream_failure

# Providers that speak the OpenAI protocol, with their public base URL when they have one.
DIRECT_PROVIDERS: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "text-completion-openai": "https://api.openai.com/v1",
    "hosted_vllm": None,
    "vllm": None,
    "llamacpp": None,
    "lm_studio": None,
    "llamafile": None,
    "openai_compatible": None,
    "deepseek": "https://api.deepseek.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "xai": "https://api.x.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
}

_PATHS = {"chat": "/chat/completions", "completions": "/completions",
          "embeddings": "/embeddings", "responses": "/responses"}
# A Responses stream ends with one of these (there is no `data: [DONE]`).
_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete",
                                 "response.failed"})
_ERROR_BODY_LIMIT = 64 * 1024


def _retry_after(answer: UpstreamAnswer | UpstreamStream) -> float | None:
    return retry_after_s(answer.header)


def _error_message(status: int, raw: bytes) -> str:
    """Our summary of the upstream's error body: its status and safe fields, never its text."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return upstream_failure(status)
    if not isinstance(parsed, dict):
        return upstream_failure(status)
    # OpenAI {"error": {...}}, vLLM {"object": "error", "type", ...}, FastAPI {"detail": "..."}
    err = parsed.get("error", parsed)
    err = {"message": err} if isinstance(err, str) else err if isinstance(err, dict) else {}
    return upstream_failure(status, code=err.get("code"), type_=err.get("type"),
                            param=err.get("param"),
                            text=err.get("message") or parsed.get("detail"))


class OpenAICompatProvider:
    # Every try ends within the target's `timeout_s` (a stream's first chunk within
    # `first_token_timeout_s`): the router need not time it as well.
    enforces_timeouts = True

    def __init__(self) -> None:
        self._http = Http1Client(keepalive_s=30.0)

    async def close(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _request(endpoint: Endpoint, body: dict[str, Any], target: Target
                 ) -> tuple[str, bytes, dict[str, str]]:
        base = target.api_base or DIRECT_PROVIDERS.get(target.provider)
        if not base:
            raise ProviderError("deployment has no api_base", kind="connect")
        headers = {"content-type": "application/json"}
        if target.api_key:
            headers["authorization"] = f"Bearer {target.api_key}"
        payload = dict(body)
        payload["model"] = target.upstream_model
        return base + _PATHS[endpoint], orjson.dumps(payload), headers

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        url, data, headers = self._request(endpoint, body, target)
        try:
            answer = await self._http.post(url, data, headers, timeout_s=target.timeout_s,
                                           connect_timeout_s=target.connect_timeout_s)
        except TimeoutError:
            raise ProviderError(f"upstream did not answer within {target.timeout_s:g} s",
                                kind="timeout") from None
        except (UpstreamConnectError, UpstreamClosed, UpstreamProtocolError) as exc:
            raise _failure(exc) from None
        raw, status = answer.body, answer.status
        if status >= 400:
            raise ProviderError(_error_message(status, raw[:_ERROR_BODY_LIMIT]),
                                status=status, retry_after_s=_retry_after(answer))
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError("upstream sent a body that is not JSON", kind="protocol",
                                status=status) from None
        if not isinstance(parsed, dict):
            raise ProviderError("upstream sent an unexpected body", kind="protocol")
        return parsed

    async def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                     ) -> AsyncIterator[dict[str, Any]]:
        """Chunks as dicts. The first must arrive within `first_token_timeout_s` of the call
        (connecting and the response headers included), each next one within `idle_timeout_s`.
        Closing the iterator (or cancelling the task reading it) closes the upstream connection.
        """
        # Chat and completions report usage only when asked; Responses always does, in
        # its terminal event, and knows no `include_usage`.
        extra = {"stream": True} if endpoint == "responses" else \
            {"stream": True, "stream_options": {"include_usage": True}}
        url, data, headers = self._request(endpoint, {**body, **extra}, target)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + target.first_token_timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                resp = await self._http.open_stream(url, data, headers,
                                                    connect_timeout_s=target.connect_timeout_s)
        except TimeoutError:
            raise ProviderError(f"upstream sent no first byte within "
                                f"{target.first_token_timeout_s:g} s", kind="timeout") from None
        except (UpstreamConnectError, UpstreamClosed, UpstreamProtocolError) as exc:
            raise _failure(exc) from None
        try:
            if resp.status >= 400:
                try:
                    async with asyncio.timeout_at(first_deadline):
                        raw = await resp.read(_ERROR_BODY_LIMIT)
                except (TimeoutError, UpstreamClosed, UpstreamProtocolError):
                    raw = b""
                raise ProviderError(_error_message(resp.status, raw), status=resp.status,
                                    retry_after_s=_retry_after(resp))
            first = True
            while True:
                when = first_deadline if first else loop.time() + target.idle_timeout_s
                try:
                    line = await resp.readline(when)
                except TimeoutError:
                    what = (f"sent no first chunk within {target.first_token_timeout_s:g} s"
                            if first else f"stalled for {target.idle_timeout_s:g} s")
                    raise ProviderError(f"upstream {what}", kind="timeout") from None
                if not line:
                    raise ProviderError("upstream closed the stream before [DONE]"
                                        if endpoint != "responses" else "upstream closed the "
                                        "stream before its terminal event", kind="protocol")
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    raise ProviderError("upstream sent a chunk that is not JSON",
                                        kind="protocol") from None
                if endpoint == "responses" and isinstance(chunk, dict):
                    kind = chunk.get("type")
                    if kind == "error":
                        raise ProviderError(upstream_failure(
                            None, code=chunk.get("code"), type_="error") + " mid-stream",
                            kind="protocol")
                    first = False
                    yield chunk
                    if kind in _RESPONSES_TERMINAL:
                        return
                    continue
                if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                    err = chunk["error"] if isinstance(chunk["error"], dict) else {}
                    raise ProviderError(upstream_failure(None, code=err.get("code"),
                                                         type_=err.get("type")) + " mid-stream",
                                        kind="protocol")
                first = False
                yield chunk
        except UpstreamClosed:
            raise ProviderError("upstream connection dropped mid-stream",
                                kind="protocol") from None
        except UpstreamProtocolError as exc:
            raise ProviderError(str(exc), kind="protocol") from None
        finally:
            resp.close()


def _failure(exc: Exception) -> ProviderError:
    """The provider error for a failed exchange, without the host, port or OS error text.
    A connection not made within `connect_timeout_s` is a timeout (504 when it is the last
    failure), not a refusal."""
    if isinstance(exc, UpstreamConnectTimeout):
        return ProviderError("upstream did not accept the connection in time", kind="timeout")
    if isinstance(exc, UpstreamConnectError):
        return ProviderError("cannot connect to upstream", kind="connect")
    if isinstance(exc, UpstreamClosed) and not exc.answered:
        return ProviderError("upstream closed the connection without an answer", kind="connect")
    if isinstance(exc, UpstreamClosed):
        return ProviderError("upstream connection dropped mid-answer", kind="protocol")
    return ProviderError(str(exc), kind="protocol")
