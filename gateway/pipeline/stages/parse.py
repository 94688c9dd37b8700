"""The body of a model request: within `server.max_body_bytes` (413), a JSON object, no field
or header that would choose an upstream or its credentials (400), then the protocol's checks."""

from __future__ import annotations

from gateway.config import ServerConfig
from gateway.core.request import Reply, RequestContext
from gateway.core.stages import Handler
from gateway.protocols import validate
from gateway.protocols.json_body import parse_object


class Parse:
    def __init__(self, server: ServerConfig) -> None:
        self.server = server

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        validate.refuse_routing_headers(ctx.headers, ctx.protocol.credential_headers)
        body = parse_object(await ctx.read_body(self.server.max_body_bytes))
        validate.scan_body(body, self.server.max_json_depth)
        ctx.protocol.validate(body, self.server)
        ctx.body = body
        ctx.user = body.get("user")
        ctx.event.fields["user"] = ctx.user
        read_stream_flags(ctx)
        return await call_next(ctx)


def read_stream_flags(ctx: RequestContext) -> None:
    """`stream` and `stream_options.include_usage` from the body (a template may set them)."""
    ctx.stream = bool(ctx.body.get("stream")) and ctx.protocol.can_stream
    options = ctx.body.get("stream_options")
    ctx.include_usage = ctx.stream and isinstance(options, dict) and \
        options.get("include_usage") is True
    ctx.event.fields["stream"] = ctx.stream
