"""Where HTTP answers meet the audit spool: an answer goes out once its event is durable.

(The pipeline stage that refuses a request before the upstream when no audit record can be
made is `gateway.pipeline.stages.audit_gate`.)

- `AuditDurabilityMiddleware` (pure ASGI): the events a request submits are awaited before
  its answer goes out: a non-stream response's start is held until its event is on disk (a
  few milliseconds: one group commit); a stream's last message likewise. If an event could
  not be made durable after all, a response that has not started becomes 503
  `audit_unavailable`. It also refuses admin changes (non-GET `/admin/…`) up front while the
  audit spool is unavailable, since each of them must leave an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.audit.committer import current_tickets
from gateway.errors import AuditUnavailable

log = logging.getLogger("gateway.audit")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_TICKET_TIMEOUT_S = 30.0


async def _durable(tickets: list[asyncio.Future[bool]], writer: Any) -> bool:
    """Wait for the request's events (at most `_TICKET_TIMEOUT_S`); True when all are durable.

    The awaited tickets leave the list, so a later message does not wait for them again."""
    awaited = tickets[:]
    del tickets[:len(awaited)]
    started = time.perf_counter()
    pending = [t for t in awaited if not t.done()]
    if pending:
        # A timer that gives up on the tickets, rather than an asyncio.timeout scope: the same
        # limit for a fraction of the bookkeeping, on the path of every answer.
        timer = asyncio.get_running_loop().call_later(_TICKET_TIMEOUT_S, _give_up, pending)
        try:
            for ticket in pending:
                await ticket
        finally:
            timer.cancel()
    metrics = getattr(writer, "metrics", None)
    if metrics is not None:
        metrics.audit_durable_wait.observe(time.perf_counter() - started)
    return all(t.result() for t in awaited)


def _give_up(tickets: list[asyncio.Future[bool]]) -> None:
    late = [t for t in tickets if not t.done()]
    if late:
        log.error("audit events not durable in time", extra={"events": len(late)})
    for ticket in late:
        ticket.set_result(False)


class AuditDurabilityMiddleware:
    def __init__(self, app: ASGIApp, writer: Any) -> None:
        self.app = app
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in _READS and scope["path"].startswith("/admin/"):
            reason = self.writer.unavailable()
            if reason is not None:
                self.writer.count_refused()
                await _send_unavailable(send, reason)
                return
        tickets: list[asyncio.Future[bool]] = []
        token = current_tickets.set(tickets)
        refused = False

        async def send_durably(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            kind = message["type"]
            if kind == "http.response.start" and tickets and not _is_stream(message):
                if not await _durable(tickets, self.writer):
                    refused = True
                    await _send_unavailable(
                        send, "the audit record could not be made durable")
                    return
            elif kind == "http.response.body" and not message.get("more_body") and tickets:
                await _durable(tickets, self.writer)  # streamed already: delay the end
            await send(message)

        try:
            await self.app(scope, receive, send_durably)
        finally:
            current_tickets.reset(token)


def _is_stream(message: Message) -> bool:
    for name, value in message.get("headers") or ():
        if name.lower() == b"content-type":
            return value.startswith(b"text/event-stream")
    return False


async def _send_unavailable(send: Send, reason: str) -> None:
    body = AuditUnavailable(reason).to_json()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
