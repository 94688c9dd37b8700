"""Keys and teams: list, create, update, revoke. A refused form keeps what was typed; a
change done says so; a revoked key looks revoked; budgets show their own period."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.budgets import budget_states
from gateway.ui.forms import form_of, limits_from, text_field
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import redirect, render

KEY_FIELDS = ("name", "team", "role", "models", "rpm", "tpm", "max_concurrent", "budget_usd",
              "budget_period", "expires_at")
TEAM_FIELDS = ("name", "models", "rpm", "tpm", "max_concurrent", "budget_usd",
               "budget_period", "policy")


def typed(form: Any, names: tuple[str, ...]) -> dict[str, str]:
    """What the person typed, to show again in the form that refused it."""
    return {name: text_field(form, name) for name in names}


async def _keys_page(request: Request, created: Any = None, error: str | None = None,
                     status: int = 200, form: dict[str, str] | None = None) -> Response:
    keys = (await api(request, "GET", "/admin/keys"))["data"]
    keys.sort(key=lambda k: (k["revoked"], k["name"].lower()))
    teams = (await api(request, "GET", "/admin/teams"))["data"]
    revoked_id = request.query_params.get("revoked")
    revoked = next((k for k in keys if k["id"] == revoked_id and k["revoked"]), None)
    return render(request, "keys.html", status=status, keys=keys, teams=teams,
                  budgets=await budget_states(request, keys, "key"), created=created,
                  error=error, form=form, revoked=revoked)


async def keys_list(request: Request) -> Response:
    return await _keys_page(request)


async def key_create(request: Request) -> Response:
    form = await form_of(request)
    try:
        body: dict[str, Any] = {"name": text_field(form, "name"),
                                **limits_from(form, patch=False)}
        for name in ("team", "role", "expires_at"):
            if text_field(form, name):
                body[name] = text_field(form, name)
        created = await api(request, "POST", "/admin/keys", body=body)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _keys_page(request, error=exc.message, status=exc.status,
                                form=typed(form, KEY_FIELDS))
    return await _keys_page(request, created=created)


async def _key_page(request: Request, key_id: str, *, error: str | None = None,
                    saved: bool = False, form: dict[str, str] | None = None,
                    status: int = 200) -> Response:
    key = await api(request, "GET", f"/admin/keys/{key_id}")
    budget = (await budget_states(request, [key], "key")).get(key_id)
    return render(request, "key.html", status=status, key=key, key_budget=budget, error=error,
                  saved=saved, form=form, audit_qs=f"key_id={quote(key_id)}",
                  changes_qs=f"target_id={quote(key_id)}")


async def key_detail(request: Request) -> Response:
    return await _key_page(request, request.path_params["key_id"])


async def key_update(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    form = await form_of(request)
    try:
        await api(request, "PATCH", f"/admin/keys/{key_id}", body=limits_from(form, patch=True))
    except ApiError as exc:
        if exc.status in (403, 404):
            raise
        return await _key_page(request, key_id, error=exc.message, status=400,
                               form=typed(form, KEY_FIELDS))
    return await _key_page(request, key_id, saved=True)


async def key_revoke(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    await api(request, "DELETE", f"/admin/keys/{key_id}")
    return redirect(f"/ui/keys?revoked={quote(key_id)}")


async def _teams_page(request: Request, error: str | None = None, status: int = 200,
                      form: dict[str, str] | None = None, failed: str | None = None
                      ) -> Response:
    """`failed`: the team whose form refused `form` (None: the new-team form)."""
    teams = (await api(request, "GET", "/admin/teams")).get("data", [])
    names = {t["name"] for t in teams}
    done = None
    for param, words in (("created", "created"), ("saved", "saved")):
        name = request.query_params.get(param)
        if name in names:
            done = f"Team {name} {words}."
    return render(request, "teams.html", status=status, teams=teams,
                  budgets=await budget_states(request, teams, "team"), error=error,
                  form=form, failed=failed, done=done)


async def teams_list(request: Request) -> Response:
    return await _teams_page(request)


async def team_create(request: Request) -> Response:
    form = await form_of(request)
    try:
        body = {"name": text_field(form, "name"), **limits_from(form, patch=False)}
        if text_field(form, "policy"):
            body["policy"] = text_field(form, "policy")
        await api(request, "POST", "/admin/teams", body=body)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _teams_page(request, error=exc.message, status=exc.status,
                                 form=typed(form, TEAM_FIELDS))
    return redirect(f"/ui/teams?created={quote(text_field(form, 'name'))}")


async def team_update(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    try:
        body = limits_from(form, patch=True)
        body["policy"] = text_field(form, "policy") or None
        await api(request, "PATCH", f"/admin/teams/{name}", body=body)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _teams_page(request, error=exc.message, status=exc.status,
                                 form={**typed(form, TEAM_FIELDS), "name": name}, failed=name)
    return redirect(f"/ui/teams?saved={quote(name)}")
