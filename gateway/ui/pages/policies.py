"""Policies: the files loaded, and a dry run of the PII rules on a text."""

from __future__ import annotations

import yaml
from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.forms import form_of, text_field
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import (
    render,
)


async def policies(request: Request) -> Response:
    key_id = request.query_params.get("key_id", "").strip()
    effective, error = None, None
    if key_id:
        try:
            effective = await api(request, "GET", "/admin/policies/effective",
                                  query={"key_id": key_id})
        except ApiError as exc:
            if exc.status == 403:
                raise
            error = exc.message
    return render(request, "policies.html", key_id=key_id, error=error,
                  effective=yaml.safe_dump(effective, sort_keys=False) if effective else None,
                  dry=None, dry_error=None, text="", policy="default")


async def policy_dry_run(request: Request) -> Response:
    form = await form_of(request)
    text = form.get("text") if isinstance(form.get("text"), str) else ""
    policy = text_field(form, "policy") or "default"
    dry, error = None, None
    try:
        dry = await api(request, "POST", "/admin/policies/dry-run",
                        body={"text": text, "policy": policy})
    except ApiError as exc:
        if exc.status == 403:
            raise
        error = exc.message
    return render(request, "policies.html", status=400 if error else 200, key_id="",
                  error=None, effective=None, dry=dry, dry_error=error, text=text,
                  policy=policy)
