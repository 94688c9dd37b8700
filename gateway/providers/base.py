"""The provider interface and the one error type providers raise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.core.request import Endpoint, StreamItem


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment, resolved: what to call, where, with which secret and time limits."""

    model: str  # public model name
    deployment: str  # audit label
    provider: str  # litellm provider prefix
    litellm_model: str  # full litellm model string
    upstream_model: str  # model name as the upstream knows it
    api_base: str | None
    api_key: str | None
    timeout_s: float
    connect_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    # Client protocols this deployment serves as they are, beyond OpenAI's own three
    # (e.g. "responses", "messages"); any other is translated (`providers/bridge.py`).
    native: frozenset[str] = frozenset()
    # Messages passthrough: the `anthropic-beta` flags it may get (None: all, unchanged).
    anthropic_betas: frozenset[str] | None = None


class ProviderError(Exception):
    """A failed try. `status` is the upstream HTTP status (None: no answer at all)."""

    def __init__(self, message: str, *, status: int | None = None,
                 kind: Literal["http", "connect", "timeout", "protocol"] = "http",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        if self.kind in ("connect", "timeout", "protocol"):
            return True
        return self.status is not None and (self.status in (408, 409, 429) or self.status >= 500)


class Provider(Protocol):
    async def call(self, endpoint: Endpoint, body: dict[str, Any], target: Target
                   ) -> dict[str, Any]: ...

    def stream(self, endpoint: Endpoint, body: dict[str, Any], target: Target
               ) -> AsyncIterator[StreamItem]: ...

    async def close(self) -> None: ...
