"""One request's state as it moves through the stages, and the stage protocol.

A stage runs before the provider call (`before`) and may raise a `GatewayError`; it can
register a `finisher` that runs exactly once when the request ends (answered, failed,
rejected or cancelled), e.g. to settle a rate-limit reservation. Finishers are sync so they
are safe in the `finally` of a cancelled stream; async work is scheduled as a task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.context import Principal
from gateway.providers.base import Endpoint, Target


class OutputFilter(Protocol):
    """Rewrites what the provider answered before the client sees it (PII, restore)."""

    def response(self, result: dict[str, Any]) -> dict[str, Any]: ...

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]: ...

    def flush(self, template_chunk: dict[str, Any]) -> list[dict[str, Any]]: ...


@dataclass(slots=True)
class RequestState:
    endpoint: Endpoint
    event: dict[str, Any]
    principal: Principal | None = None
    body: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    target: Target | None = None
    usage: dict[str, Any] | None = None
    cost_nanos: int | None = None
    # Added to every response of this request, errors included (x-ratelimit-*, …).
    headers: dict[str, str] = field(default_factory=dict)
    finishers: list[Callable[[RequestState], None]] = field(default_factory=list)
    output_filters: list[OutputFilter] = field(default_factory=list)
    # Request and response bodies for the audit store, as the policy allows (None: not kept).
    audit_request_body: Any = None
    audit_response_body: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    completed: bool = False  # set by V1Pipeline.complete (it runs once per request)


class Stage(Protocol):
    async def before(self, state: RequestState) -> None: ...
