"""Request and response bodies for the audit store, as the effective policy says.

`audit.bodies` (the key's policy, else `gateway.yaml`): `none` keeps nothing; `redacted` keeps
the request as it was sent upstream (`state.body`: the PII stage puts the redacted one there);
`full` keeps the caller's original (`state.extra["original_body"]`, else `state.body`). The
response is the answer as the client got it: the JSON object for a non-stream request, the
concatenated text for a stream (also when it was cut or cancelled).

Bodies are stored as JSON text, at most `limit` characters each: a longer one is kept as a JSON
string holding its first `limit` characters and a `…[truncated: N characters]` marker.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.audit.chain import clean_json

DEFAULT_LIMIT = 64 * 1024
_OPTS = orjson.OPT_NON_STR_KEYS


def body_text(value: Any, limit: int = DEFAULT_LIMIT) -> str | None:
    """A body as bounded JSON text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    try:
        text = orjson.dumps(value, default=str, option=_OPTS).decode()
    except (orjson.JSONEncodeError, TypeError):
        value = clean_json(value)
        text = orjson.dumps(value, default=str, option=_OPTS).decode()
    if len(text) <= limit:
        return text
    source = value if isinstance(value, str) else text
    marker = f"…[truncated: {len(source)} characters]"
    return orjson.dumps(source[:limit] + marker).decode()


class BodyRecorder:
    """A `V1Pipeline` observer: puts the bodies the policy allows on the audit event."""

    def __init__(self, default_mode: str) -> None:
        self.default_mode = default_mode

    def mode(self, state: Any) -> str:
        policy = state.extra.get("policy")
        rules = getattr(policy, "audit", None)
        return getattr(rules, "bodies", None) or self.default_mode

    def __call__(self, state: Any) -> None:
        event = state.event
        mode = self.mode(state)
        if mode == "none":
            event.pop("request_body", None)
            event.pop("response_body", None)
            return
        if event.get("request_body") is None:
            body = state.body if mode == "redacted" else state.extra.get("original_body",
                                                                           state.body)
            if body:
                event["request_body"] = body
        if event.get("response_body") is None:
            answer = state.extra.get("response_body")
            if answer is None:
                answer = state.extra.get("response_text")
            conceal = state.extra.get("conceal")  # PII restore: store placeholders
            if answer is not None and conceal is not None and mode == "redacted":
                answer = conceal(answer)
            if answer is not None:
                event["response_body"] = answer
