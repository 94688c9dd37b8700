"""PII on the way back: output rules and `restore` over a whole answer or a stream, and the
inverse (`conceal`) for what is stored after an answer was restored for the caller.

Failures fail closed: an answer that could not be scanned is withheld (503
`redaction_unavailable`), never passed on unscanned.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from gateway.core.request import ChunkSink
from gateway.errors import GatewayError, RedactionUnavailable
from gateway.pii.actions import Redactor
from gateway.pii.policy import redact_response, restore_response
from gateway.pii.stream import ChunkFilter
from gateway.settings import Settings

log = logging.getLogger("gateway.pii")


@contextmanager
def fail_closed() -> Iterator[None]:
    """Around an output scan: a failure other than the gateway's own refusal withholds the
    answer (503 `redaction_unavailable`); unscanned output never passes."""
    try:
        yield
    except GatewayError:
        raise
    except Exception as exc:
        log.error("PII output scan failed", extra={"error": type(exc).__name__})
        raise RedactionUnavailable("PII detection failed; the answer was withheld") from None


def pii_hash_key(settings: Settings) -> bytes:
    """The `hash` action's key: its own setting, else derived from another secret."""
    for secret in (settings.pii_hash_key, settings.audit_hmac_key, settings.admin_key):
        if secret is not None:
            return hashlib.sha256(b"gateway-pii-hash:" + secret.get_secret_value().encode()
                                  ).digest()
    log.warning("no GATEWAY_PII_HASH_KEY: PII hashes are stable only within this process")
    return os.urandom(32)


def conceal_value(value: Any, redactor: Redactor) -> Any:
    """This request's original values back to their placeholders, anywhere in `value`."""
    if isinstance(value, str):
        return redactor.conceal(value)
    if isinstance(value, dict):
        return {k: conceal_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [conceal_value(v, redactor) for v in value]
    return value


class AnswerFilter:
    """A whole answer: output rules, then restore."""

    def __init__(self, endpoint: str, rules: Mapping[str, str], restore: bool,
                 redactor: Redactor) -> None:
        self.endpoint = endpoint
        self.rules = dict(rules)
        self.restore = restore
        self.redactor = redactor

    def response(self, result: dict[str, Any]) -> dict[str, Any]:
        with fail_closed():
            if self.rules:
                result, _ = redact_response(result, self.endpoint, self.rules, self.redactor)
            if self.restore:
                result = restore_response(result, self.endpoint, self.redactor)
        return result


class PiiChunkSink:
    """A stream's chunks through the output rules and restore, on their way to `inner`.

    Text that could still become part of a finding is held back; a chunk left with nothing
    to say is not sent (no empty deltas)."""

    def __init__(self, inner: ChunkSink, endpoint: str, rules: Mapping[str, str],
                 restore: bool, redactor: Redactor) -> None:
        self.inner = inner
        self.filter = ChunkFilter(endpoint, rules, redactor, restore=restore)

    async def send(self, chunk: dict[str, Any]) -> None:
        with fail_closed():
            out = self.filter.feed(chunk)
        if out is not None:  # None: all it said is held back for now
            await self.inner.send(out)

    async def close(self, last: dict[str, Any]) -> None:
        with fail_closed():
            held = self.filter.flush()
        for out in held:
            await self.inner.send(out)
        await self.inner.close(last)

    async def fail(self, error: Any) -> None:
        await self.inner.fail(error)
