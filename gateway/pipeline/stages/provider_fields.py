"""A model that litellm may serve takes only the fields litellm is allowed to see.

Runs after model access (the model is known, a template's params are in the body) and before
limits, so a refused request reserves nothing, and before routing, so it reaches no
deployment and counts against none: a client cannot put a deployment into cooldown with
fields it was refused. "May serve": a deployment of the model or of one of its fallbacks is
translated by litellm (`Router.translated`); the answer does not depend on which one a
request would have reached.
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import InvalidRequest, excerpt
from gateway.providers.litellm_params import first_unsupported


class TranslatedFields:
    def __init__(self, translated: Collection[str]) -> None:
        self.translated = translated  # models a deployment of which litellm serves

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        if ctx.model in self.translated:
            name = first_unsupported(ctx.endpoint, ctx.body)
            if name is not None:
                raise InvalidRequest(
                    f"{excerpt(name)} is not supported by this model: its provider is reached "
                    "through translation, which takes the parameters the gateway's README "
                    "lists", param=name, code="unsupported_parameter")
        return await call_next(ctx)
