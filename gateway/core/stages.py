"""Stages: one shape, composed once at start-up.

A stage is `async (ctx, call_next) -> Reply`: it may refuse (raise a `GatewayError`), change the
request before `call_next`, and do its "after" work in a `try/finally` around it, which sees
answers, errors, streams and cancellations alike. The last handler (the provider call) takes
no `call_next`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from gateway.core.request import Reply, RequestContext

Handler = Callable[[RequestContext], Awaitable[Reply]]


class Stage(Protocol):
    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply: ...


def compose(stages: Sequence[Stage], terminal: Handler) -> Handler:
    """`stages[0]` outermost, `terminal` innermost: one closure per stage, built once."""
    handler = terminal
    for stage in reversed(stages):
        handler = _bind(stage, handler)
    return handler


def _bind(stage: Stage, call_next: Handler) -> Handler:
    async def handle(ctx: RequestContext) -> Reply:
        return await stage(ctx, call_next)

    handle.__qualname__ = f"{type(stage).__name__}.handle"
    return handle
