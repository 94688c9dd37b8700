"""A model that litellm may serve takes only the fields litellm is allowed to see.

Runs after model access (the model is known, a template's params are in the body) and before
limits, so a refused request reserves nothing, and before routing, so it reaches no
deployment and counts against none: a client cannot put a deployment into cooldown with
fields it was refused. "May serve": a deployment of the model or of one of its fallbacks is
translated by litellm (`Router.translated`); the answer does not depend on which one a
request would have reached.
"""

from __future__ import annotations

from gateway.errors import InvalidRequest, excerpt
from gateway.pipeline.state import RequestState
from gateway.providers.litellm_params import first_unsupported
from gateway.routing.router import Router


class TranslatedFields:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def before(self, state: RequestState) -> None:
        if state.model not in self.router.translated:
            return
        name = first_unsupported(state.endpoint, state.body)
        if name is not None:
            raise InvalidRequest(
                f"{excerpt(name)} is not supported by this model: its provider is reached "
                "through translation, which takes the parameters the gateway's README lists",
                param=name, code="unsupported_parameter")
