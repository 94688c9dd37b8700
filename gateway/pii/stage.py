"""The PII stage of the request pipeline, and its output filter.

Input: the effective policy's `pii.input` rules over every text the request carries (after
the template is rendered); `block` -> 400 `pii_blocked`, a detector failure -> 503
`redaction_unavailable` (fail closed), nothing sent upstream either way. Token arrays
(`prompt` / `input` as integers) are refused with 400 `invalid_value` when there are input
rules: tokens are text in some tokenizer's encoding, and a model's deployments and
fallbacks need not share one, so decoding them with a guessed encoding could pass PII
unseen. Output: the
`pii.output` rules over the answer (streamed or not), then, with `restore: true`, the
request's placeholders turned back into the caller's values: in the caller's response
only, never in what is stored or sent upstream.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from gateway.errors import GatewayError, InvalidRequest, RedactionUnavailable
from gateway.pii.actions import Redactor
from gateway.pii.fields import token_array_field
from gateway.pii.policy import redact_request, redact_response, restore_response
from gateway.pii.stream import ChunkFilter
from gateway.pipeline.state import RequestState
from gateway.settings import Settings
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.pii")


def _conceal(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.conceal(value)
    if isinstance(value, dict):
        return {k: _conceal(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_conceal(v, redactor) for v in value]
    return value


def pii_hash_key(settings: Settings) -> bytes:
    """The `hash` action's key: its own setting, else derived from another secret."""
    for secret in (settings.pii_hash_key, settings.audit_hmac_key, settings.admin_key):
        if secret is not None:
            return hashlib.sha256(b"gateway-pii-hash:" + secret.get_secret_value().encode()
                                  ).digest()
    log.warning("no GATEWAY_PII_HASH_KEY: PII hashes are stable only within this process")
    return os.urandom(32)


class PiiOutputFilter:
    """Output rules, then restore; keeps the pre-restore answer for the audit store."""

    def __init__(self, state: RequestState, rules: dict[str, str], restore: bool,
                 redactor: Redactor) -> None:
        self.state = state
        self.endpoint = state.endpoint
        self.rules = rules
        self.restore = restore
        self.redactor = redactor
        self.chunks = ChunkFilter(self.endpoint, rules, redactor, restore=restore)

    def response(self, result: dict[str, Any]) -> dict[str, Any]:
        try:
            if self.rules:
                result, _ = redact_response(result, self.endpoint, self.rules, self.redactor)
            if self.restore:
                result = restore_response(result, self.endpoint, self.redactor)
        except GatewayError:
            raise
        except Exception as exc:  # fail closed: never pass unscanned output through
            log.error("PII output scan failed", extra={"error": type(exc).__name__})
            raise RedactionUnavailable("PII detection failed; the answer was withheld") \
                from None
        return result

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.chunks.feed(chunk)
        return [] if out is None else [out]  # None: all it said is held back for now

    def flush(self, template_chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return self.chunks.flush()


class PiiStage:
    def __init__(self, hash_key: bytes, metrics: Metrics) -> None:
        self.hash_key = hash_key
        self.metrics = metrics

    def _record(self, state: RequestState, redactor: Redactor) -> None:
        summary = redactor.summary()
        state.event["pii"] = summary or None
        for kind, entry in summary.items():
            self.metrics.pii_findings.labels(kind, str(entry["action"]), "any").inc(
                int(entry["count"]))  # type: ignore[call-overload]

    async def before(self, state: RequestState) -> None:
        policy = state.extra.get("policy")
        pii = policy.pii if policy is not None else None
        if pii is None or not (pii.input or pii.output):
            return
        if pii.input:
            tokens = token_array_field(state.body, state.endpoint)
            if tokens is not None:
                raise InvalidRequest(
                    f"'{tokens}' is given as token arrays, which cannot be scanned for PII as "
                    f"this key's policy requires: send '{tokens}' as text",
                    param=tokens, code="invalid_value")
        redactor = Redactor(self.hash_key)
        state.finishers.append(lambda s: self._record(s, redactor))
        if pii.input:
            try:
                body, _ = redact_request(state.body, state.endpoint, dict(pii.input),
                                                redactor)
            except GatewayError:  # pii_blocked / redaction_unavailable: the finisher records
                raise
            except Exception as exc:  # any detector failure: refuse, never pass through
                log.error("PII input scan failed", extra={"error": type(exc).__name__})
                raise RedactionUnavailable("PII detection failed; nothing was sent upstream") \
                    from None
            if body is not state.body:
                state.extra["original_body"] = state.body
                state.body = body
                state.event["user"] = body.get("user")
        if pii.output or (pii.restore and redactor.restorable):
            state.output_filters.append(
                PiiOutputFilter(state, dict(pii.output), pii.restore, redactor))
        if pii.restore and redactor.restorable:
            # What the caller got back holds the originals: storage gets placeholders.
            state.extra["conceal"] = lambda value: _conceal(value, redactor)
