"""Model access: the model must exist (404) and the key, its team and the key's effective
policy must allow it (403). Resolves the policy every later stage reads."""

from __future__ import annotations

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import Forbidden, InvalidRequest, ModelNotFound, excerpt
from gateway.policies.store import PolicyRegistry


class ModelAccess:
    def __init__(self, models: frozenset[str], policies: PolicyRegistry) -> None:
        self.models = models
        self.policies = policies

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        model = ctx.body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("missing required parameter: 'model'", param="model",
                                 code="missing_required_parameter")
        ctx.model = model
        ctx.event.fields["model_requested"] = model
        if model not in self.models:
            raise ModelNotFound(f"the model {excerpt(model)} does not exist", param="model")
        principal = ctx.principal
        assert principal is not None
        policy = ctx.policy = self.policies.effective(principal)
        if not principal.may_use_model(model) or (
                policy.models is not None and not policy.models.permits(model)):
            raise Forbidden(f"this key may not use the model {excerpt(model)}", param="model",
                            code="model_not_allowed")
        return await call_next(ctx)
