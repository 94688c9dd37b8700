"""Reading the UI's forms into API bodies."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request

from gateway.errors import GatewayError
from gateway.ui.inprocess import ApiError
from gateway.web.body import read_body
from gateway.web.context import services

AUDIT_FILTERS = ("key_id", "team", "user", "model_requested", "model_served", "deployment",
                 "template_name", "status_code", "error_code", "request_id", "stream",
                 "pii_kind", "since", "until", "action", "actor_key_id", "target_type",
                 "target_id", "limit")
META = ("version", "author_key_id", "created_at", "source", "content_hash", "labels")


async def form_of(request: Request) -> dict[str, str]:
    """The urlencoded form (no multipart: nothing here uploads files), read within the
    server's `max_body_bytes` like every other body (413 beyond); cached per request."""
    cached = request.scope.get("ui_form")
    if cached is not None:
        return cached
    raw = b""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        try:
            raw = await read_body(request, services(request).config.server.max_body_bytes)
        except GatewayError as exc:  # too large, or a Content-Length that is not a number
            raise ApiError(exc.status_code, exc.to_openai_body()) from None
    form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    request.scope["ui_form"] = form
    return form


def text_field(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def limits_from(form: Any, *, patch: bool) -> dict[str, Any]:
    """Key/team limit fields from a form; on a patch an empty field clears the limit."""
    out: dict[str, Any] = {}
    for name in ("rpm", "tpm", "max_concurrent"):
        raw = text_field(form, name)
        if raw:
            try:
                out[name] = int(raw)
            except ValueError:
                raise ApiError(400, {"error": {"message": f"{name}: not a whole number"}}
                               ) from None
        elif patch:
            out[name] = None
    raw = text_field(form, "budget_usd")
    if raw:
        try:
            out["budget_usd"] = float(raw)
        except ValueError:
            raise ApiError(400, {"error": {"message": "budget_usd: not a number"}}) from None
    elif patch:
        out["budget_usd"] = None
    if text_field(form, "budget_period"):
        out["budget_period"] = text_field(form, "budget_period")
    models = text_field(form, "models")
    if models:
        out["models"] = [m.strip() for m in models.split(",") if m.strip()]
    elif patch:
        out["models"] = None
    return out
