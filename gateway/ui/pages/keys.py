"""Keys and teams: list, create, update, revoke."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.forms import form_of, limits_from, month_start, spend_by, text_field
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import redirect, render


async def _keys_page(request: Request, created: Any = None, error: str | None = None,
                     status: int = 200) -> Response:
    keys = (await api(request, "GET", "/admin/keys"))["data"]
    teams = (await api(request, "GET", "/admin/teams"))["data"]
    spend = await spend_by(request, "key", month_start())
    return render(request, "keys.html", status=status, keys=keys, teams=teams, spend=spend,
                  created=created, error=error)


async def keys_list(request: Request) -> Response:
    return await _keys_page(request)


async def key_create(request: Request) -> Response:
    form = await form_of(request)
    body: dict[str, Any] = {"name": text_field(form, "name"), **limits_from(form, patch=False)}
    for name in ("team", "role", "expires_at"):
        if text_field(form, name):
            body[name] = text_field(form, name)
    try:
        created = await api(request, "POST", "/admin/keys", body=body)
    except ApiError as exc:
        return await _keys_page(request, error=exc.message, status=exc.status)
    return await _keys_page(request, created=created)


async def key_detail(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    key = await api(request, "GET", f"/admin/keys/{key_id}")
    spend = (await spend_by(request, "key", month_start())).get(key_id)
    return render(request, "key.html", key=key, spend=spend, error=None, saved=False)


async def key_update(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    form = await form_of(request)
    error, saved = None, False
    try:
        await api(request, "PATCH", f"/admin/keys/{key_id}", body=limits_from(form, patch=True))
        saved = True
    except ApiError as exc:
        if exc.status in (403, 404):
            raise
        error = exc.message
    key = await api(request, "GET", f"/admin/keys/{key_id}")
    spend = (await spend_by(request, "key", month_start())).get(key_id)
    return render(request, "key.html", status=400 if error else 200, key=key, spend=spend,
                  error=error, saved=saved)


async def key_revoke(request: Request) -> Response:
    await api(request, "DELETE", f"/admin/keys/{request.path_params['key_id']}")
    return redirect("/ui/keys")


async def _teams_page(request: Request, error: str | None = None, status: int = 200
                      ) -> Response:
    teams = (await api(request, "GET", "/admin/teams"))["data"]
    spend = await spend_by(request, "team", month_start())
    return render(request, "teams.html", status=status, teams=teams, spend=spend, error=error)


async def teams_list(request: Request) -> Response:
    return await _teams_page(request)


async def team_create(request: Request) -> Response:
    form = await form_of(request)
    body = {"name": text_field(form, "name"), **limits_from(form, patch=False)}
    if text_field(form, "policy"):
        body["policy"] = text_field(form, "policy")
    try:
        await api(request, "POST", "/admin/teams", body=body)
    except ApiError as exc:
        return await _teams_page(request, error=exc.message, status=exc.status)
    return redirect("/ui/teams")


async def team_update(request: Request) -> Response:
    form = await form_of(request)
    body = limits_from(form, patch=True)
    body["policy"] = text_field(form, "policy") or None
    try:
        await api(request, "PATCH", f"/admin/teams/{request.path_params['name']}", body=body)
    except ApiError as exc:
        return await _teams_page(request, error=exc.message, status=exc.status)
    return redirect("/ui/teams")
