"""PII: the effective policy's `pii.input` rules over every text the request carries (after
the template is rendered) before the call, `pii.output` rules and `restore` over the answer.

Input: `block` -> 400 `pii_blocked`, a detector failure -> 503 `redaction_unavailable` (fail
closed), nothing sent upstream either way. Token arrays (`prompt` / `input` as integers) are
refused with 400 `invalid_value` when there are input rules: tokens are text in some
tokenizer's encoding, and a model's deployments and fallbacks need not share one, so
decoding them with a guessed encoding could pass PII unseen. Output: whole answers after the
call, streams as they pass (`PiiChunkSink`); with `restore: true` the request's placeholders
become the caller's values again, in the caller's answer only, never in what is stored or
sent upstream. What was found is the audit event's `pii` field, also when refused.
"""

from __future__ import annotations

import logging

from gateway.core.request import ChunkSink, Reply, RequestContext
from gateway.core.stages import Handler
from gateway.errors import GatewayError, InvalidRequest, RedactionUnavailable
from gateway.pii.actions import Redactor
from gateway.pii.fields import token_array_field
from gateway.pii.messages_stream import MessagesPiiSink
from gateway.pii.output import AnswerFilter, PiiChunkSink, conceal_value
from gateway.pii.policy import redact_request
from gateway.pii.responses_events import ResponsesAnswerFilter, ResponsesPiiSink
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.pii")


class Pii:
    def __init__(self, hash_key: bytes, metrics: Metrics) -> None:
        self.hash_key = hash_key
        self.metrics = metrics

    async def __call__(self, ctx: RequestContext, call_next: Handler) -> Reply:
        pii = ctx.policy.pii if ctx.policy is not None else None
        if pii is None or not (pii.input or pii.output):
            return await call_next(ctx)
        redactor = Redactor(self.hash_key)
        try:
            if pii.input:
                self._redact_input(ctx, dict(pii.input), redactor)
            restore = pii.restore and redactor.restorable
            if not (pii.output or restore):
                return await call_next(ctx)
            rules, endpoint = dict(pii.output), ctx.endpoint
            ctx.stream_filters.append(lambda inner: _chunk_sink(inner, endpoint, rules,
                                                                restore, redactor))
            if restore:
                # What the caller got back holds the originals: storage gets placeholders.
                ctx.conceal = lambda value: conceal_value(value, redactor)
            reply = await call_next(ctx)
            if reply.body is not None:
                reply.body = _answer_filter(endpoint, rules, restore, redactor).response(
                    reply.body)
            return reply
        finally:
            self._record(ctx, redactor)

    @staticmethod
    def _redact_input(ctx: RequestContext, rules: dict[str, str], redactor: Redactor) -> None:
        tokens = token_array_field(ctx.body, ctx.endpoint)
        if tokens is not None:
            raise InvalidRequest(
                f"'{tokens}' is given as token arrays, which cannot be scanned for PII as "
                f"this key's policy requires: send '{tokens}' as text",
                param=tokens, code="invalid_value")
        try:
            body, _ = redact_request(ctx.body, ctx.endpoint, rules, redactor)
        except GatewayError:  # pii_blocked / redaction_unavailable
            raise
        except Exception as exc:  # any detector failure: refuse, never pass through
            log.error("PII input scan failed", extra={"error": type(exc).__name__})
            raise RedactionUnavailable("PII detection failed; nothing was sent upstream") \
                from None
        if body is not ctx.body:
            ctx.original_body = ctx.body
            ctx.body = body
            ctx.event.fields["user"] = body.get("user")

    def _record(self, ctx: RequestContext, redactor: Redactor) -> None:
        summary = redactor.summary()
        ctx.event.fields["pii"] = summary or None
        for kind, entry in summary.items():
            self.metrics.pii_findings.labels(kind, str(entry["action"]), "any").inc(
                int(entry["count"]))  # type: ignore[call-overload]


def _chunk_sink(inner: ChunkSink, endpoint: str, rules: dict[str, str], restore: bool,
                redactor: Redactor) -> ChunkSink:
    if endpoint == "responses":  # events, not chunks (pii/responses_events.py)
        return ResponsesPiiSink(inner, rules, restore, redactor)
    if endpoint == "messages":
        return MessagesPiiSink(inner, rules, restore, redactor)
    return PiiChunkSink(inner, endpoint, rules, restore, redactor)


def _answer_filter(endpoint: str, rules: dict[str, str], restore: bool, redactor: Redactor
                   ) -> AnswerFilter:
    if endpoint == "responses":  # output rules on the output items only
        return ResponsesAnswerFilter(endpoint, rules, restore, redactor)
    return AnswerFilter(endpoint, rules, restore, redactor)
