"""Messages requests to deployments that speak Messages themselves, as they came.

`NativeMessages` wraps a provider (litellm's or the OpenAI-compatible one) and serves the
`messages` endpoint for the deployments whose `Target.native` says so; everything else goes
to the wrapped provider. Where it goes:

- `anthropic/` deployments and any other with an `api_base` that speaks Messages
  (`native_messages: true`: vLLM, llama.cpp, Anthropic-compatible hosted APIs): our own HTTP
  client (`http1.py`), to `<api_base>/v1/messages` (Anthropic's public URL by default). The
  body goes as the client sent it, with only `model` rewritten; `anthropic-version` and
  `anthropic-beta` go as the client sent them (the version defaults to `2023-06-01`), except
  the beta flags a deployment's `anthropic_beta_allowlist` does not list, which are taken
  out instead of failing the request. The upstream key goes as `x-api-key` (and as a bearer
  token to non-Anthropic servers); the caller's virtual key never does. One exception to
  "as it came": an assistant `thinking` block without a signature (from a translated turn,
  which has none) is dropped, since Anthropic refuses it.
- `bedrock/` and `vertex_ai/` Claude deployments: litellm's `anthropic_messages` (their
  request signing), through the wrapped litellm provider.

Why our own client for Anthropic rather than litellm's pass-through: headers and body
byte for byte, no translation layer in between, and the hot path of the OpenAI-compatible
upstreams (the bench's Messages passthrough step).

Streams are parsed event by event (`data:` lines); an upstream `error` event fails the try
(before the first event: retried like any failure; after: the client gets an `error` event),
and a stream that ends before `message_stop` is a cut, never a silent end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.core.iterators import aclose_quietly
from gateway.core.request import StreamItem
from gateway.protocols.anthropic import UPSTREAM_HEADERS
from gateway.providers.base import Endpoint, Provider, ProviderError, Target
from gateway.providers.http1 import (
    Http1Client,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
)
from gateway.providers.openai_compat import _error_message, _failure, _retry_after
from gateway.providers.summary import upstream_failure

ANTHROPIC_BASE = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
LITELLM_FAMILIES = frozenset({"bedrock", "vertex_ai"})
_ERROR_BODY_LIMIT = 64 * 1024


def messages_url(target: Target, suffix: str = "") -> str:
    base = (target.api_base or ANTHROPIC_BASE).rstrip("/")
    if base.endswith("/v1/messages"):
        return base + suffix
    if base.endswith("/v1"):
        return base + "/messages" + suffix
    return base + "/v1/messages" + suffix


def beta_header(value: str, allowed: frozenset[str] | None) -> str | None:
    """The client's `anthropic-beta` as it goes upstream: unchanged without an allowlist,
    else only the listed flags (None: no header)."""
    if allowed is None:
        return value
    kept = [flag for flag in (f.strip() for f in value.split(",")) if flag in allowed]
    return ",".join(kept) or None


def upstream_headers(body: Mapping[str, Any], target: Target) -> dict[str, str]:
    sent = body.get(UPSTREAM_HEADERS) or {}
    headers = {"content-type": "application/json",
               "anthropic-version": sent.get("anthropic-version") or DEFAULT_VERSION}
    beta = sent.get("anthropic-beta")
    if beta:
        beta = beta_header(beta, target.anthropic_betas)
        if beta:
            headers["anthropic-beta"] = beta
    if target.api_key:
        headers["x-api-key"] = target.api_key
        if target.provider != "anthropic":
            headers["authorization"] = f"Bearer {target.api_key}"
    return headers


def _unsigned_thinking(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "thinking" \
        and not block.get("signature")


def upstream_payload(body: Mapping[str, Any], target: Target, **extra: Any) -> bytes:
    payload = {k: v for k, v in body.items() if k != UPSTREAM_HEADERS}
    payload["model"] = target.upstream_model
    payload.update(extra)
    messages = payload.get("messages")
    if isinstance(messages, list) and any(
            isinstance(m, dict) and m.get("role") == "assistant"
            and isinstance(m.get("content"), list)
            and any(_unsigned_thinking(b) for b in m["content"]) for m in messages):
        payload["messages"] = [
            {**m, "content": [b for b in m["content"] if not _unsigned_thinking(b)]}
            if isinstance(m, dict) and isinstance(m.get("content"), list) else m
            for m in messages]
    return orjson.dumps(payload)


class NativeMessages:
    """A provider that also serves `messages` natively (see the module docstring)."""

    enforces_timeouts = True

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self._http: Http1Client | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def http(self) -> Http1Client:
        if self._http is None:
            self._http = Http1Client(keepalive_s=30.0)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        await self.inner.close()

    @staticmethod
    def _ours(endpoint: Endpoint, target: Target) -> bool:
        return endpoint == "messages" and target.provider not in LITELLM_FAMILIES

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        if not self._ours(endpoint, target):
            return await self.inner.call(endpoint, body, target)
        return await self._post(messages_url(target), upstream_payload(body, target),
                                upstream_headers(body, target), target)

    async def count_tokens(self, body: dict[str, Any], target: Target) -> int:
        """The upstream's own count (`/v1/messages/count_tokens`)."""
        if target.provider in LITELLM_FAMILIES:
            raise ProviderError("no count API through litellm", kind="protocol")
        result = await self._post(messages_url(target, "/count_tokens"),
                                  upstream_payload(body, target),
                                  upstream_headers(body, target), target)
        count = result.get("input_tokens")
        if not isinstance(count, int) or isinstance(count, bool):
            raise ProviderError("upstream sent no input_tokens", kind="protocol")
        return count

    async def _post(self, url: str, data: bytes, headers: dict[str, str], target: Target
                    ) -> dict[str, Any]:
        try:
            answer = await self.http.post(url, data, headers, timeout_s=target.timeout_s,
                                          connect_timeout_s=target.connect_timeout_s)
        except TimeoutError:
            raise ProviderError(f"upstream did not answer within {target.timeout_s:g} s",
                                kind="timeout") from None
        except (UpstreamConnectError, UpstreamClosed, UpstreamProtocolError) as exc:
            raise _failure(exc) from None
        if answer.status >= 400:
            raise ProviderError(_error_message(answer.status, answer.body[:_ERROR_BODY_LIMIT]),
                                status=answer.status, retry_after_s=_retry_after(answer))
        try:
            parsed = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            raise ProviderError("upstream sent a body that is not JSON", kind="protocol",
                                status=answer.status) from None
        if not isinstance(parsed, dict):
            raise ProviderError("upstream sent an unexpected body", kind="protocol")
        return parsed

    def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
               ) -> AsyncIterator[StreamItem]:
        if not self._ours(endpoint, target):
            return self.inner.stream(endpoint, body, target)
        return self._stream(body, target)

    async def _stream(self, body: dict[str, Any], target: Target
                      ) -> AsyncIterator[dict[str, Any]]:
        """Events as dicts: the first within `first_token_timeout_s` of the call, each next
        within `idle_timeout_s`; closing the iterator closes the upstream connection."""
        url = messages_url(target)
        data = upstream_payload(body, target, stream=True)
        loop = asyncio.get_running_loop()
        first_deadline = loop.time() + target.first_token_timeout_s
        try:
            async with asyncio.timeout_at(first_deadline):
                resp = await self.http.open_stream(url, data, upstream_headers(body, target),
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
                    what = (f"sent no first event within {target.first_token_timeout_s:g} s"
                            if first else f"stalled for {target.idle_timeout_s:g} s")
                    raise ProviderError(f"upstream {what}", kind="timeout") from None
                if not line:
                    raise ProviderError("upstream closed the stream before message_stop",
                                        kind="protocol")
                if not line.startswith(b"data:"):
                    continue
                event = _event(line[5:].strip())
                first = False
                yield event
                if event.get("type") == "message_stop":
                    return
        except UpstreamClosed:
            raise ProviderError("upstream connection dropped mid-stream",
                                kind="protocol") from None
        except UpstreamProtocolError as exc:
            raise ProviderError(str(exc), kind="protocol") from None
        finally:
            resp.close()


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise ProviderError("upstream sent an event that is not JSON", kind="protocol") from None
    if not isinstance(event, dict):
        raise ProviderError("upstream sent an unexpected event", kind="protocol")
    if event.get("type") == "error":
        found = event.get("error")
        err: dict[str, Any] = found if isinstance(found, dict) else {}
        status = 529 if err.get("type") == "overloaded_error" else None
        raise ProviderError(upstream_failure(status, type_=err.get("type")) + " mid-stream",
                            status=status, kind="protocol")
    return event


async def events_from_sse(raw: AsyncIterator[Any]) -> AsyncIterator[dict[str, Any]]:
    """Messages events from an iterator of SSE bytes (litellm's `anthropic_messages`)."""
    buffer = b""
    try:
        async for piece in raw:
            if isinstance(piece, dict):
                yield piece
                continue
            buffer += piece if isinstance(piece, bytes) else str(piece).encode()
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    yield _event(line[5:].strip())
        if buffer.startswith(b"data:"):
            yield _event(buffer[5:].strip())
    finally:
        await aclose_quietly(raw)
