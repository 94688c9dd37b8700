"""Request and response bodies for the audit store, as the effective policy says.

`audit.bodies` (the key's policy, else `gateway.yaml`): `none` keeps nothing; `redacted` keeps
the request as it was sent upstream (`ctx.body`: the PII stage puts the policy's redaction
there), or as received when a stage refused it, then redacted again for EVERY built-in PII
kind, also those the policy lets through to the provider (`pii.storage`); `full` keeps the
caller's original (`ctx.original_body`, else `ctx.body`). The response is the
answer as the client got it: the JSON object for a non-stream request, the concatenated text
for a stream (also when it was cut or cancelled), under `redacted` redacted the same way.
Under `none` and `redacted` the `user` column is redacted too.

Bodies are stored as JSON text, at most `limit` characters each: a longer one is kept as a JSON
string holding its first `limit` characters and a `…[truncated: N characters]` marker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from gateway.audit.chain import clean_json
from gateway.pii.storage import StorageRedactor

DEFAULT_LIMIT = 64 * 1024
_OPTS = orjson.OPT_NON_STR_KEYS


def body_text(value: Any, limit: int = DEFAULT_LIMIT) -> str | None:
    """A body as bounded JSON text (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
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


def answer_of(ctx: Any) -> Any:
    """The answer as the client got it: a JSON object, or a stream's text."""
    answer = ctx.answer
    return "".join(answer) if isinstance(answer, list) else answer


class StoredView:
    """What of one request may be stored or traced, redacted for every built-in PII kind
    (`pii.storage`): the request and the answer in one scan, done on first use.
    `stored_view(ctx)` gives the request's one view."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.redactor = StorageRedactor()
        self._bodies: tuple[Any, Any] | None = None

    def _both(self) -> tuple[Any, Any]:
        if self._bodies is None:
            ctx = self.ctx
            answer = answer_of(ctx)
            conceal = ctx.conceal  # PII restore: back to this request's placeholders
            if answer is not None and conceal is not None:
                answer = conceal(answer)
            self._bodies = self.redactor.request_and_answer(ctx.body or None, answer,
                                                            ctx.endpoint)
        return self._bodies

    def request(self) -> dict[str, Any] | None:
        """The request as sent upstream (or as received, when a stage refused it)."""
        return self._both()[0]

    def answer(self) -> Any:
        """The answer as the client got it, placeholders concealed again under `restore`."""
        return self._both()[1]

    def text(self, value: str) -> str:
        return self.redactor.text(value)

    def value(self, value: Any) -> Any:
        """Any other body about to be stored: a request object, an answer, a text."""
        if isinstance(value, dict) and ("messages" in value or "prompt" in value
                                        or "input" in value):
            return self.redactor.request_and_answer(value, None, self.ctx.endpoint)[0]
        return self.redactor.request_and_answer(None, value, self.ctx.endpoint)[1]


def stored_view(ctx: Any) -> StoredView:
    """The request's one view (made on first use, kept on `ctx.stored`)."""
    view = ctx.stored
    if view is None:
        view = ctx.stored = StoredView(ctx)
    return view


class BodyRecorder:
    """Called by the audit stage: puts the bodies the policy allows on the audit event.

    Under `none` and `redacted` nothing leaves here unredacted, whichever stage refused the
    request: the `user` column, a `model` that is not a configured one and a template name
    that resolved to no version (a client could put anything there) and, under `redacted`,
    both bodies go through `StoredView`.
    """

    def __init__(self, default_mode: str, models: Iterable[str] = ()) -> None:
        self.default_mode = default_mode
        self.models = frozenset(models)

    def mode(self, ctx: Any) -> str:
        rules = getattr(ctx.policy, "audit", None)
        return getattr(rules, "bodies", None) or self.default_mode

    def __call__(self, ctx: Any) -> None:
        event = ctx.event.fields
        mode = self.mode(ctx)
        if mode == "full":
            self._full(ctx)
            return
        preset = event.pop("request_body", None), event.pop("response_body", None)
        try:
            self._redacted(ctx, mode, preset)
        except Exception:  # fail closed: what could not be redacted is not kept
            event.pop("request_body", None)
            event.pop("response_body", None)
            event["user"] = None
            if event.get("model_requested") not in self.models:
                event["model_requested"] = None
            if event.get("template_version") is None:
                event["template_name"] = None
            raise

    def _redacted(self, ctx: Any, mode: str, preset: tuple[Any, Any]) -> None:
        event = ctx.event.fields
        view = stored_view(ctx)
        model = event.get("model_requested")
        unknown_model = isinstance(model, str) and model not in self.models
        if unknown_model:
            event["model_requested"] = view.text(model)
        template = event.get("template_name")
        if isinstance(template, str) and event.get("template_version") is None:
            event["template_name"] = view.text(template)  # not found: the client's text
        body = None
        if mode == "redacted":
            body = view.request() if preset[0] is None else view.value(preset[0])
        user = event.get("user")
        if isinstance(user, str) and user:
            original = ctx.body.get("user") if ctx.body else None
            # the body's `user` was redacted with it: no second scan
            event["user"] = body["user"] if user == original and isinstance(body, dict) and \
                isinstance(body.get("user"), str) else view.text(user)
        if mode == "none":
            return
        if body:
            if unknown_model and body.get("model") == model:
                body = {**body, "model": event["model_requested"]}
            event["request_body"] = body
        answer = view.answer() if preset[1] is None else view.value(preset[1])
        if answer is not None:
            event["response_body"] = answer

    @staticmethod
    def _full(ctx: Any) -> None:
        """The operator's explicit choice: the caller's original request, the answer as
        the client got it."""
        event = ctx.event.fields
        if event.get("request_body") is None:
            body = ctx.original_body if ctx.original_body is not None else ctx.body
            if body:
                event["request_body"] = body
        if event.get("response_body") is None:
            answer = answer_of(ctx)
            if answer is not None:
                event["response_body"] = answer
