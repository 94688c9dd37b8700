"""The terminal handler of `POST /v1/messages/count_tokens`: the prompt's tokens, counted by
the model's first deployment that has a count API (Anthropic's `/v1/messages/count_tokens`,
or any `native_messages` server), else estimated with tiktoken, which the answer says with
`x-gateway-estimated: true` (also when that count API failed: counting never fails on it).

Its chain is the model chain without templates, limits, cost and the call: a count is not a
model call (no tokens are used, nothing is billed), but it is authenticated, checked for
model access, scanned by the PII input rules (the body may go upstream) and audited.
"""

from __future__ import annotations

from gateway.core.request import Reply, RequestContext
from gateway.limits.estimate import prompt_tokens_of
from gateway.pipeline.stages.call import provider_body
from gateway.providers.base import ProviderError
from gateway.routing.router import Router

ESTIMATED_HEADER = "x-gateway-estimated"


class CountTokens:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, ctx: RequestContext) -> Reply:
        assert ctx.model is not None
        event = ctx.event.fields
        for slot in self.router.slots[ctx.model]:
            target = slot.target
            if "messages" not in target.native:
                continue
            count = getattr(self.router.provider_for(target), "count_tokens", None)
            if count is None:
                continue
            event["attempts"] = 1
            event["model_served"] = target.model
            event["deployment"] = target.deployment
            ctx.target = target
            try:
                return Reply(body={"input_tokens": await count(provider_body(ctx), target)})
            except ProviderError:
                break  # the estimate below
        ctx.response_headers[ESTIMATED_HEADER] = "true"
        return Reply(body={"input_tokens": await prompt_tokens_of(ctx)})
