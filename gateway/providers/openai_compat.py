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


def _error_message(status: int, raw: bytes) -> str:
    """A short summary of the upstream's error, never its whole body."""
    detail = ""
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            detail = str(err.get("message") or "")
        elif isinstance(err, str):
            detail = err
    except orjson.JSONDecodeError:
        pass
    detail = detail[:300]
    return f"upstream answered {status}" + (f": {detail}" if detail else "")


class OpenAICompatProvider:
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
                if resp.status >= 400:
                    raise ProviderError(_error_message(resp.status, raw[:_ERROR_BODY_LIMIT]),
                                        status=resp.status,
                                        retry_after_s=_retry_after(resp.headers))
        except TimeoutError:
            raise ProviderError("upstream timed out", kind="timeout") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(f"cannot reach upstream ({type(exc).__name__})",
                                kind="connect") from None
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError("upstream sent a body that is not JSON", kind="protocol",
                                status=resp.status) from None
        if not isinstance(parsed, dict):
            raise ProviderError("upstream sent an unexpected body", kind="protocol")
        return parsed

    async def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                     ) -> AsyncIterator[dict[str, Any]]:
        url, data, headers = self._request(endpoint, {**body, "stream": True,
                                                      "stream_options": {"include_usage": True}},
                                           target)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=target.connect_timeout_s)
        try:
            async with asyncio.timeout(target.first_token_timeout_s):
                resp = await self._client().post(url, data=data, headers=headers,
                                                 timeout=timeout)
        except TimeoutError:
            raise ProviderError("upstream sent no first byte in time", kind="timeout") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(f"cannot reach upstream ({type(exc).__name__})",
                                kind="connect") from None
        try:
            if resp.status >= 400:
                raw = await resp.content.read(_ERROR_BODY_LIMIT)
                raise ProviderError(_error_message(resp.status, raw), status=resp.status,
                                    retry_after_s=_retry_after(resp.headers))
            first = True
            while True:
                limit = target.first_token_timeout_s if first else target.idle_timeout_s
                try:
                    async with asyncio.timeout(limit):
                        line = await resp.content.readline()
                except TimeoutError:
                    raise ProviderError("upstream stream stalled", kind="timeout") from None
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
                    raise ProviderError(f"upstream failed mid-stream: {str(msg)[:300]}",
                                        kind="protocol")
                first = False
                yield chunk
        except aiohttp.ClientPayloadError:
            raise ProviderError("upstream connection dropped mid-stream",
                                kind="protocol") from None
        except aiohttp.ClientConnectionError as exc:
            raise ProviderError(f"upstream connection failed ({type(exc).__name__})",
                                kind="connect") from None
        finally:
            resp.release() if resp.content.at_eof() else resp.close()
