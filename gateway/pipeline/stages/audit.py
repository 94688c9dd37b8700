"""The one audit event of a request: whatever happens inside, it is closed and submitted
exactly once, in `finally`, with the status the client got, the bodies the policy keeps
(redacted for every PII kind under `redacted`), and `cancelled`/`partial` when the client
left or the answer was cut. An unexpected failure is logged and answered 500 `internal_error`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.audit.bodies import BodyRecorder
from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import GatewayError, InternalError

log = logging.getLogger("gateway.v1")


class Audit:
    def __init__(self, writer: Any, bodies: BodyRecorder) -> None:
        self.writer = writer
        self.bodies = bodies

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        status: int = InternalError.status_code
        code: str | None = InternalError.code
        try:
            reply = await call_next(ctx)
            status, code = reply.status, reply.error_code
            if reply.body is not None:
                ctx.answer = reply.body
            return reply
        except GatewayError as exc:
            status, code = exc.status_code, exc.code
            known = getattr(exc, "principal", None)  # a revoked or expired key
            if known is not None:
                ctx.event.set_principal(known)
            raise
        except asyncio.CancelledError:  # the client left
            fields = ctx.event.fields
            fields["cancelled"] = fields["partial"] = True
            status, code = 200, None
            raise
        except Exception:
            log.exception("unexpected error", extra={"request_id": ctx.event.fields[
                "request_id"]})
            raise InternalError("the gateway failed to handle this request") from None
        finally:
            try:
                self.bodies(ctx)
            except Exception:  # the recorder dropped what it could not redact
                log.exception("audit body recording failed")
            ctx.event.submit_to(self.writer, status, code)
