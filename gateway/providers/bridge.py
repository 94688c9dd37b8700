"""Client protocols a deployment does not speak, served by translation, per attempt.

The router tries deployments in turn, and a model's deployments (and its fallbacks) need not
speak the same protocols: each try is sent as it came when the deployment speaks the
client's protocol natively (`Target.native`, and OpenAI's chat, completions and embeddings
everywhere), else through that protocol's `Translator` to OpenAI Chat and back. The
pipeline sees one protocol either way: the client's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, cast

from gateway.core.request import Endpoint, StreamItem
from gateway.providers.base import Provider, ProviderError, Target

OPENAI_ENDPOINTS = frozenset({"chat", "completions", "embeddings"})


class Translator(Protocol):
    """A client protocol over a deployment that speaks OpenAI Chat."""

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The client's body as a Chat body."""

    def response(self, result: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
        """A Chat answer as the client's protocol answers (`body`: the client's request)."""

    def stream(self, chunks: AsyncIterator[dict[str, Any]], body: dict[str, Any]
               ) -> AsyncIterator[StreamItem]:
        """Chat chunks as the client's protocol's stream events, terminal event included
        (an event, or a list of the events one upstream chunk became)."""


class Bridge:
    """A provider that serves every client protocol: natively or by translation."""

    def __init__(self, inner: Provider, translators: Mapping[str, Translator]) -> None:
        self.inner = inner
        self.translators = translators

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _translator(self, endpoint: Endpoint, target: Target) -> Translator | None:
        if endpoint in OPENAI_ENDPOINTS or endpoint in target.native:
            return None
        translator = self.translators.get(endpoint)
        if translator is None:
            raise ProviderError(f"the deployment cannot serve {endpoint} requests", status=400)
        return translator

    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]:
        translator = self._translator(endpoint, target)
        if translator is None:
            return await self.inner.call(endpoint, body, target)
        result = await self.inner.call("chat", translator.request(body), target)
        return translator.response(result, body)

    def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
               ) -> AsyncIterator[StreamItem]:
        translator = self._translator(endpoint, target)
        if translator is None:
            return self.inner.stream(endpoint, body, target)
        chunks = cast(AsyncIterator[dict[str, Any]],  # an inner provider's are chunks
                      self.inner.stream("chat", translator.request(body), target))
        return translator.stream(chunks, body)

    async def close(self) -> None:
        await self.inner.close()
