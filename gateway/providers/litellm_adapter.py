"""Every provider that needs translation (Anthropic, Azure, Bedrock, Vertex, Gemini, Cohere, …)
goes through the litellm SDK here, and only here. litellm is imported on first use.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

from gateway.providers.base import Endpoint, ProviderError, Target


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True
    return litellm


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if dump else dict(obj)


class LiteLLMProvider:
    def __init__(self) -> None:
        self._litellm: Any = None
        self._lock = asyncio.Lock()

    async def _lib(self) -> Any:
        if self._litellm is None:
            async with self._lock:
                if self._litellm is None:
                    self._litellm = await asyncio.to_thread(_import_litellm)
        return self._litellm

    async def close(self) -> None:
        return None

    def _error(self, exc: Exception) -> ProviderError:
        lib = self._litellm
        status = getattr(exc, "status_code", None)
        message = str(getattr(exc, "message", "") or exc).splitlines()[0][:300]
        if lib is not None and isinstance(exc, lib.Timeout | asyncio.TimeoutError):
            return ProviderError("upstream timed out", kind="timeout")
        if lib is not None and isinstance(exc, lib.APIConnectionError):
            return ProviderError("cannot reach upstream", kind="connect")
        retry_after = None
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None and headers.get("retry-after"):
            try:
                retry_after = float(headers.get("retry-after"))
            except ValueError:
                retry_after = None
        return ProviderError(f"upstream answered {status}: {message}"
                             if status else f"upstream failed: {message}",
                             status=status if isinstance(status, int) else None,
                             kind="http" if isinstance(status, int) else "protocol",
                             retry_after_s=retry_after)

    def _kwargs(self, body: dict[str, Any], target: Target) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k not in ("model", "stream")}
        kwargs["model"] = target.litellm_model
        kwargs["timeout"] = target.timeout_s
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        kwargs["num_retries"] = 0
        return kwargs

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        lib = await self._lib()
        kwargs = self._kwargs(body, target)
        try:
            if endpoint == "chat":
                result = await lib.acompletion(**kwargs)
            elif endpoint == "completions":
                result = await lib.atext_completion(**kwargs)
            else:
                result = await lib.aembedding(**kwargs)
        except Exception as exc:  # litellm raises its own tree; map it once, here
            raise self._error(exc) from None
        out = _as_dict(result)
        out.pop("_hidden_params", None)
        out.pop("_response_ms", None)
        return out

    async def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                     ) -> AsyncIterator[dict[str, Any]]:
        if endpoint == "embeddings":
            raise ProviderError("embeddings cannot stream", status=400)
        lib = await self._lib()
        kwargs = self._kwargs(body, target)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        call = lib.acompletion if endpoint == "chat" else lib.atext_completion
        try:
            async with asyncio.timeout(target.first_token_timeout_s):
                response = await call(**kwargs)
                iterator = response.__aiter__()
                first = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise self._error(exc) from None
        yield _as_dict(first)
        while True:
            try:
                async with asyncio.timeout(target.idle_timeout_s):
                    chunk = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderError("upstream stream stalled", kind="timeout") from None
            except Exception as exc:
                raise self._error(exc) from None
            yield _as_dict(chunk)
