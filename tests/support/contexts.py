"""Request contexts for tests that exercise one stage or recorder without a server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.core.audit_event import AuditEvent
from gateway.core.request import RequestContext
from gateway.protocols.openai import PROTOCOLS


class NullTransport:
    """A client connection that keeps what is written."""

    def __init__(self) -> None:
        self.started = False
        self.headers: dict[str, str] = {}
        self.written: list[bytes] = []

    async def start(self, headers: Mapping[str, str]) -> None:
        self.started = True
        self.headers = dict(headers)

    async def write(self, data: bytes) -> None:
        self.written.append(data)


def make_ctx(endpoint: str = "chat", body: dict[str, Any] | None = None,
             **fields: Any) -> RequestContext:
    protocol = PROTOCOLS[endpoint]

    async def no_body(max_bytes: int) -> bytes:
        return b""

    ctx = RequestContext(endpoint=endpoint, protocol=protocol,  # type: ignore[arg-type]
                         event=AuditEvent("test-request", protocol.path), headers={},
                         read_body=no_body, transport=NullTransport(), body=body or {})
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx
