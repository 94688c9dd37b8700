"""Redaction for what is kept or traced: every built-in kind, whatever the policy lets through.

The provider gets what the key's policy allows; the audit store and traces keep the minimum.
`StorageRedactor` applies `STORAGE_RULES` (`redact` for every built-in kind) with one
placeholder map per request, so a value has the same placeholder in the stored request,
`user` and answer. `request_and_answer` scans both in one pass (`body_scan`: one detector
call), returning the inputs themselves when nothing is found. Token arrays are kept only as
their length: tokens are text in a tokenizer's encoding, which the gateway cannot scan.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from gateway.pii.actions import Redactor
from gateway.pii.body_scan import scan_texts
from gateway.pii.detectors import BUILTIN_KINDS
from gateway.pii.fields import (
    STORED,
    TextField,
    replaced,
    token_array_field,
    walk_response_texts,
    walk_texts,
)

STORAGE_RULES = MappingProxyType(dict.fromkeys(BUILTIN_KINDS, "redact"))


def _token_count(value: Any) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for v in value)


def _fields(value: Any, endpoint: str, request: bool) -> list[TextField]:
    if not isinstance(value, dict) or not value:
        return []
    endpoint = STORED.get(endpoint, endpoint)
    return list(walk_texts(value, endpoint) if request else walk_response_texts(value, endpoint))


class StorageRedactor:
    """Redacted copies of one request's values (inputs are never mutated)."""

    def __init__(self) -> None:
        self.redactor = Redactor()

    def request_and_answer(self, body: Any, answer: Any, endpoint: str) -> tuple[Any, Any]:
        """The request body and the answer (a JSON object, or a stream's text), redacted."""
        asked = _fields(body, endpoint, request=True)
        answered = [] if isinstance(answer, str) else _fields(answer, endpoint, request=False)
        texts = [f.get() for f in asked]
        texts += [answer] if isinstance(answer, str) else [f.get() for f in answered]
        n = len(asked)
        new_texts, _ = scan_texts(texts, STORAGE_RULES, self.redactor,
                                  groups=[0] * n + [1] * (len(texts) - n))
        body = replaced(body, asked, new_texts[:n])
        if isinstance(answer, str):
            answer = answer if new_texts[n] is None else new_texts[n]
        else:
            answer = replaced(answer, answered, new_texts[n:])
        tokens = token_array_field(body, endpoint) if isinstance(body, dict) else None
        if tokens is not None:
            body = {**body, tokens: f"[{_token_count(body[tokens])} tokens, not stored]"}
        return body, answer

    def text(self, text: str) -> str:
        (new,), _ = scan_texts([text], STORAGE_RULES, self.redactor)
        return text if new is None else new
