"""Every provider that needs translation (Anthropic, Azure, Bedrock, Vertex, Gemini, Cohere, …)
goes through the litellm SDK here, and only here. litellm is imported on first use.

litellm gets only the allowed fields of a request (`litellm_params`), and its failures come
back as our own one-line summaries (`summary.upstream_failure`). Its loggers are silenced:
they write plain text past the JSON log format, and their lines carry upstream error text
and request data.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from gateway.core.iterators import aclose_quietly
from gateway.protocols.anthropic import UPSTREAM_HEADERS
from gateway.providers import litellm_params
from gateway.providers.anthropic_native import beta_header, events_from_sse
from gateway.providers.base import Endpoint, ProviderError, Target
from gateway.providers.retry_after import retry_after_s
from gateway.providers.summary import upstream_failure

_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
# litellm's exception classes, as the error code when the upstream's own is unusable.
_CODES = {
    "ContextWindowExceededError": "context_length_exceeded",
    "ContentPolicyViolationError": "content_policy_violation",
    "RateLimitError": "rate_limit_exceeded",
    "AuthenticationError": "authentication_error",
    "PermissionDeniedError": "permission_error",
    "NotFoundError": "not_found_error",
    "BadRequestError": "invalid_request_error",
    "UnprocessableEntityError": "invalid_request_error",
    "ServiceUnavailableError": "overloaded_error",
    "InternalServerError": "api_error",
}


def _import_litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True
    for name in _LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = False
        logger.disabled = True
    return litellm


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    return dump() if dump else dict(obj)


class LiteLLMProvider:
    # Every try ends within the target's `timeout_s` (a stream's first chunk within
    # `first_token_timeout_s`): the router need not time it as well.
    enforces_timeouts = True

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

    def _error(self, exc: BaseException) -> ProviderError:
        """litellm's exception tree -> one `ProviderError` with our own summary (never the
        upstream's text, which can echo the key)."""
        lib = self._litellm
        unanswered = lib is not None and isinstance(exc, lib.APIConnectionError)
        if isinstance(exc, TimeoutError) or (lib is not None and isinstance(exc, lib.Timeout)) \
                or (unanswered and _timed_out(exc)):
            # litellm reports some time limits (connect, read) as a connection error: the
            # cause decides, so a try that ran out of time is a timeout in every phase
            return ProviderError("upstream timed out", kind="timeout")
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) and not unanswered else None
        if status is None and not _network_failure(exc):
            # No answer and no network error: litellm refused the body itself while building
            # the provider's request (it calls that an `APIConnectionError` too). The
            # request's fault, not the deployment's, which it must not cool down.
            return ProviderError("the request cannot be translated for this provider "
                                 "(invalid_request_error)", status=400)
        if unanswered:
            return ProviderError("cannot reach upstream", kind="connect")
        context = lib is not None and isinstance(exc, lib.ContextWindowExceededError)
        if context:
            status = status or 400
        message = upstream_failure(
            status, code="context_length_exceeded" if context else getattr(exc, "code", None),
            type_=_CODES.get(type(exc).__name__), param=getattr(exc, "param", None),
            text=str(getattr(exc, "message", "") or ""))
        retry_after = None
        headers = getattr(getattr(exc, "response", None), "headers", None)
        if headers is not None and hasattr(headers, "get"):
            retry_after = retry_after_s(headers.get)
        return ProviderError(message, status=status, kind="http" if status else "protocol",
                             retry_after_s=retry_after)

    @staticmethod
    def _kwargs(endpoint: Endpoint, body: dict[str, Any], target: Target) -> dict[str, Any]:
        kwargs = litellm_params.forwarded(endpoint, body)
        kwargs["model"] = target.litellm_model
        kwargs["timeout"] = _timeout(target)
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        kwargs["num_retries"] = 0  # the router retries, across deployments
        return kwargs

    async def _messages(self, body: dict[str, Any], target: Target, *, stream: bool) -> Any:
        """Anthropic Messages as they came, to Claude on Bedrock or Vertex AI (litellm signs
        the request); only the listed fields, the client's `anthropic-beta` as a header."""
        await self._lib()
        from litellm.anthropic_interface import messages as anthropic_messages

        kwargs: dict[str, Any] = {k: v for k, v in body.items()
                                  if k in litellm_params.MESSAGES}
        kwargs.update(model=target.litellm_model, timeout=_timeout(target), stream=stream)
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        sent = body.get(UPSTREAM_HEADERS) or {}
        beta = sent.get("anthropic-beta")
        if beta:
            beta = beta_header(beta, target.anthropic_betas)
        if beta:
            kwargs["extra_headers"] = {"anthropic-beta": beta}
        return await anthropic_messages.acreate(**kwargs)

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        if endpoint == "messages":
            try:
                async with asyncio.timeout(target.timeout_s):
                    return _as_dict(await self._messages(body, target, stream=False))
            except Exception as exc:
                raise self._error(exc) from None
        lib = await self._lib()
        kwargs = self._kwargs(endpoint, body, target)
        try:
            # litellm's own timeout is per HTTP read for some providers: bound the whole try
            async with asyncio.timeout(target.timeout_s):
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
        """Like `OpenAICompatProvider.stream`: first chunk within `first_token_timeout_s` of
        the call, then at most `idle_timeout_s` between chunks; closing it closes the upstream."""
        if endpoint == "embeddings":
            raise ProviderError("embeddings cannot stream", status=400)
        lib = await self._lib()
        if endpoint == "messages":
            async def call(**_: Any) -> Any:
                return events_from_sse(await self._messages(body, target, stream=True))
            kwargs: dict[str, Any] = {}
        else:
            kwargs = self._kwargs(endpoint, body, target)
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
            call = lib.acompletion if endpoint == "chat" else lib.atext_completion
        response: Any = None
        try:
            try:
                async with asyncio.timeout(target.first_token_timeout_s):
                    response = await call(**kwargs)
                    iterator = response.__aiter__()
                    first = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise ProviderError(f"upstream sent no first chunk within "
                                    f"{target.first_token_timeout_s:g} s",
                                    kind="timeout") from None
            except ProviderError:
                raise
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
                    raise ProviderError(f"upstream stalled for {target.idle_timeout_s:g} s",
                                        kind="timeout") from None
                except ProviderError:
                    raise
                except Exception as exc:
                    raise self._error(exc) from None
                yield _as_dict(chunk)
        finally:
            await aclose_quietly(response)


def _network_failure(exc: BaseException) -> bool:
    """Whether a network error (refused, reset, TLS, DNS, …) is in `exc`'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(16):
        if seen is None:
            return False
        if isinstance(seen, OSError) or type(seen).__module__.split(".")[0] in _NETWORK_LIBS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_NETWORK_LIBS = frozenset({"httpx", "httpcore", "aiohttp"})


def _timed_out(exc: BaseException) -> bool:
    """Whether a time limit (ours, the OS's, or an HTTP library's, such as httpx's
    `ConnectTimeout` or aiohttp's `ServerTimeoutError`) is in `exc`'s chain of causes."""
    seen: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(16):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError) or "Timeout" in type(seen).__name__:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _timeout(target: Target) -> Any:
    """litellm takes an `httpx.Timeout` (connect and total) where a provider supports it."""
    try:
        import httpx
    except ImportError:  # pragma: no cover - litellm depends on httpx
        return target.timeout_s
    return httpx.Timeout(target.timeout_s, connect=target.connect_timeout_s)
