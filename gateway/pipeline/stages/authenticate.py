"""The caller's key: 401 for a missing, unknown, revoked or expired one, 403 for a compliance
key (model endpoints are for app and admin keys)."""

from __future__ import annotations

from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import Forbidden
from gateway.keys.authenticator import Authenticator


class Authenticate:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        principal = await self.auth.authenticate(ctx.protocol.authorization(ctx.headers))
        ctx.principal = principal
        ctx.event.set_principal(principal)
        if principal.role == "compliance":
            raise Forbidden("compliance keys may not call the model endpoints",
                            code="endpoint_not_allowed")
        return await call_next(ctx)
