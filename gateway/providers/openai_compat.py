"""Our own client for OpenAI-compatible upstreams (OpenAI, vLLM, Ollama, llama.cpp, …) on aiohttp.

One pooled session per process; bodies go out as orjson bytes; streams are parsed line by
line with a first-chunk and an idle time limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.providers.base import Endpoint, ProviderError, Target
from gateway.providers.summary import scrub

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
          "embeddings": "/embeddings"}
_ERROR_BODY_LIMIT = 64 * 1024


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_message(status: int, raw: bytes, target: Target) -> str:
    """A short, scrubbed summary of the upstream's error (its code and message), never its body."""
    detail = code = ""
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or "")
            code = str(err.get("code") or err.get("type") or "")
        elif isinstance(err, str):
            detail = err
        elif isinstance(parsed, dict) and isinstance(parsed.get("detail"), str):
            detail = parsed["detail"]  # vLLM / FastAPI style
    except orjson.JSONDecodeError:
        pass
    detail = scrub(detail, (target.api_key, target.api_base))
    code = scrub(code[:60])
    return (f"upstream answered {status}" + (f" ({code})" if code else "")
            + (f": {detail}" if detail else ""))


class OpenAICompatProvider:
    # Every try ends within the target's `timeout_s` (a stream's first chunk within
    # `first_token_timeout_s`): the router need not time it as well.
    enforces_timeouts = True

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300,
                                             keepalive_timeout=30, enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                                  skip_auto_headers=("User-Agent",))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

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
        timeout = aiohttp.ClientTimeout(total=target.timeout_s,
                                        sock_connect=target.connect_timeout_s)
        try:
            async with self._client().post(url, data=data, headers=headers,
                                           timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
                if status >= 400:
                    raise ProviderError(_error_message(status, raw[:_ERROR_BODY_LIMIT], target),
                                        status=status, retry_after_s=_retry_after(resp.headers))
        except TimeoutError:
            raise ProviderError(f"upstream did not answer within {target.timeout_s:g} s",
                                kind="timeout") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(_connection_failure(exc), kind="connect") from None
        except aiohttp.ClientPayloadError:
            raise ProviderError("upstream connection dropped mid-answer", kind="protocol") from None
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
        url, data, headers = self._request(endpoint, {**body, "stream": True,
                                                      "stream_options": {"include_usage": True}},
                                           target)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + target.first_token_timeout_s
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=target.connect_timeout_s)
        try:
            async with asyncio.timeout_at(first_deadline):
                resp = await self._client().post(url, data=data, headers=headers,
                                                 timeout=timeout)
        except TimeoutError:
            raise ProviderError(f"upstream sent no first byte within "
                                f"{target.first_token_timeout_s:g} s", kind="timeout") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(_connection_failure(exc), kind="connect") from None
        try:
            if resp.status >= 400:
                try:
                    async with asyncio.timeout_at(first_deadline):
                        raw = await resp.content.read(_ERROR_BODY_LIMIT)
                except TimeoutError:
                    raw = b""
                raise ProviderError(_error_message(resp.status, raw, target), status=resp.status,
                                    retry_after_s=_retry_after(resp.headers))
            first = True
            while True:
                when = first_deadline if first else loop.time() + target.idle_timeout_s
                try:
                    async with asyncio.timeout_at(when):
                        line = await resp.content.readline()
                except TimeoutError:
                    what = (f"sent no first chunk within {target.first_token_timeout_s:g} s"
                            if first else f"stalled for {target.idle_timeout_s:g} s")
                    raise ProviderError(f"upstream {what}", kind="timeout") from None
                if not line:
                    raise ProviderError("upstream closed the stream before [DONE]",
                                        kind="protocol")
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
                if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                    err = chunk["error"]
                    msg = err.get("message") if isinstance(err, dict) else str(err)
                    raise ProviderError("upstream failed mid-stream: "
                                        + scrub(str(msg), (target.api_key, target.api_base)),
                                        kind="protocol")
                first = False
                yield chunk
        except aiohttp.ClientPayloadError:
            raise ProviderError("upstream connection dropped mid-stream",
                                kind="protocol") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(_connection_failure(exc), kind="connect") from None
        finally:
            resp.release() if resp.content.at_eof() else resp.close()


def _connection_failure(exc: aiohttp.ClientConnectionError) -> str:
    """Which kind of connection failure, without the host, port or OS error text."""
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "upstream closed the connection without an answer"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect to upstream"
    return f"upstream connection failed ({type(exc).__name__})"
