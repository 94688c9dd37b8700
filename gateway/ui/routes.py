"""`/ui`: admin and compliance pages, server-rendered with Jinja2 (autoescaped).

Every page gets its data and makes its changes by calling the JSON API in-process (an ASGI
call into this same app) with the signed-in key: the API's own role checks, team scoping,
validation and change audit apply unchanged; there is no second implementation of a rule.
The audit export is the API's export endpoint itself, called as the signed-in key.

Every page is reached through `gateway.ui.access` (the `ROUTES` table below names each
route's roles): the session's key is authenticated again on each request, so a revoked key or
a changed role or team takes effect at once. Safety: a strict CSP on every response, no
inline script or style, a per-session CSRF token on every POST form, HttpOnly +
SameSite=Strict session cookie (Secure over HTTPS) holding only a random session id,
sign-in attempts limited per client IP and audited.
"""

from __future__ import annotations

import difflib
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.api import audit as audit_api
from gateway.api.http import services
from gateway.errors import GatewayError
from gateway.pipeline import audit_event
from gateway.templates.spec import to_yaml
from gateway.ui.access import (
    COOKIE,
    LOGIN_COOKIE,
    UI_ROLES,
    ApiError,
    api,
    form_of,
    login_limiter,
    page_routes,
    same,
    session_key_header,
    sessions,
)
from gateway.ui.sessions import SESSION_TTL_S, Session
from gateway.ui.web import (
    ADMIN,
    HERE,
    READERS,
    StaticWithHeaders,
    harden,
    redirect,
    refuse,
    render,
    secure,
)

AUDIT_FILTERS = ("key_id", "team", "user", "model_requested", "model_served", "deployment",
                 "template_name", "status_code", "error_code", "request_id", "stream",
                 "pii_kind", "since", "until", "limit")
_META = ("version", "author_key_id", "created_at", "source", "content_hash", "labels")


# --- signing in and out ------------------------------------------------------------------

def _client_ip(request: Request) -> str:
    # Not X-Forwarded-For: a client could choose it. Behind a proxy all users share a bucket.
    return request.client.host if request.client else "unknown"


async def login_form(request: Request) -> Response:
    if sessions.get(request.cookies.get(COOKIE)):
        return redirect("/ui")
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", login_csrf=token, error=None)
    response.set_cookie(LOGIN_COOKIE, token, max_age=600, path="/ui/login", httponly=True,
                        samesite="strict", secure=secure(request))
    return response


async def login(request: Request) -> Response:
    svc = services(request)
    event = audit_event.new_event(request.state.request_id, "POST /ui/login")
    ip = _client_ip(request)
    status, code, message = 303, None, None
    response: Response | None = None
    try:
        try:
            form = await form_of(request)
        except ApiError as exc:  # 413: larger than the server's max_body_bytes
            status, code = exc.status, "request_too_large"
            response = refuse(request, exc.status, exc.message)
            return response
        token, cookie = form.get("csrf_token"), request.cookies.get(LOGIN_COOKIE)
        if login_limiter.blocked(ip):
            status, code = 429, "rate_limit_exceeded"
            message = "Too many failed sign-in attempts. Try again later."
            response = refuse(request, 429, message)
            response.headers["retry-after"] = str(login_limiter.retry_after(ip))
            return response
        if not same(token, cookie):
            status, code = 403, "csrf_failed"
            response = refuse(request, 403, "Missing or invalid CSRF token: reload the page.")
            return response
        key = form.get("key")
        key = key.strip() if isinstance(key, str) else ""
        try:
            principal = await svc.auth.authenticate(f"Bearer {key}")
        except GatewayError as exc:
            status, code = exc.status_code, exc.code
            if status == 503:  # the key store is down: the key is not known to be wrong
                response = render(request, "login.html", status=status, login_csrf=token,
                                  error="The key store cannot be reached; try again shortly.")
                return response
            login_limiter.failed(ip)
            known = getattr(exc, "principal", None)
            if known is not None:
                audit_event.set_principal(event, known)
            response = render(request, "login.html", status=status, login_csrf=token,
                              error="That key was not accepted.")
            return response
        audit_event.set_principal(event, principal)
        if principal.role not in UI_ROLES:
            login_limiter.failed(ip)
            status, code = 403, "endpoint_not_allowed"
            response = render(request, "login.html", status=403, login_csrf=token,
                              error="Only admin and compliance keys may sign in here.")
            return response
        session = sessions.create(key, principal.key_id, principal.key_name, principal.role,
                                  principal.team)
        response = redirect("/ui")
        response.set_cookie(COOKIE, session.sid, max_age=SESSION_TTL_S, path="/ui",
                            httponly=True, samesite="strict", secure=secure(request))
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login", httponly=True,
                               samesite="strict", secure=secure(request))
        return response
    finally:
        audit_event.finish(event, status, code)
        svc.audit.submit(event)


async def logout(request: Request) -> Response:
    sessions.drop(request.cookies.get(COOKIE))
    response = redirect("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=secure(request))
    return response


async def home(request: Request) -> Response:
    session: Session = request.scope["ui_session"]
    return redirect("/ui/templates" if session.role == "admin" else "/ui/audit")


# --- form helpers ------------------------------------------------------------------------

def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _limits(form: Any, *, patch: bool) -> dict[str, Any]:
    """Key/team limit fields from a form; on a patch an empty field clears the limit."""
    out: dict[str, Any] = {}
    for name in ("rpm", "tpm", "max_concurrent"):
        raw = _text(form, name)
        if raw:
            try:
                out[name] = int(raw)
            except ValueError:
                raise ApiError(400, {"error": {"message": f"{name}: not a whole number"}}
                               ) from None
        elif patch:
            out[name] = None
    raw = _text(form, "budget_usd")
    if raw:
        try:
            out["budget_usd"] = float(raw)
        except ValueError:
            raise ApiError(400, {"error": {"message": "budget_usd: not a number"}}) from None
    elif patch:
        out["budget_usd"] = None
    if _text(form, "budget_period"):
        out["budget_period"] = _text(form, "budget_period")
    models = _text(form, "models")
    if models:
        out["models"] = [m.strip() for m in models.split(",") if m.strip()]
    elif patch:
        out["models"] = None
    return out


def _month_start() -> str:
    now = datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


async def _spend_by(request: Request, group_by: str, since: str | None = None,
                    until: str | None = None) -> dict[str, dict[str, Any]]:
    query = {"group_by": group_by}
    if since:
        query["since"] = since
    if until:
        query["until"] = until
    rows = (await api(request, "GET", "/admin/spend", query=query))["data"]
    return {str(r["group"]): r for r in rows}


# --- keys and teams ----------------------------------------------------------------------

async def _keys_page(request: Request, created: Any = None, error: str | None = None,
                     status: int = 200) -> Response:
    keys = (await api(request, "GET", "/admin/keys"))["data"]
    teams = (await api(request, "GET", "/admin/teams"))["data"]
    spend = await _spend_by(request, "key", _month_start())
    return render(request, "keys.html", status=status, keys=keys, teams=teams, spend=spend,
                  created=created, error=error)


async def keys_list(request: Request) -> Response:
    return await _keys_page(request)


async def key_create(request: Request) -> Response:
    form = await form_of(request)
    body: dict[str, Any] = {"name": _text(form, "name"), **_limits(form, patch=False)}
    for name in ("team", "role", "expires_at"):
        if _text(form, name):
            body[name] = _text(form, name)
    try:
        created = await api(request, "POST", "/admin/keys", body=body)
    except ApiError as exc:
        return await _keys_page(request, error=exc.message, status=exc.status)
    return await _keys_page(request, created=created)


async def key_detail(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    key = await api(request, "GET", f"/admin/keys/{key_id}")
    spend = (await _spend_by(request, "key", _month_start())).get(key_id)
    return render(request, "key.html", key=key, spend=spend, error=None, saved=False)


async def key_update(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    form = await form_of(request)
    error, saved = None, False
    try:
        await api(request, "PATCH", f"/admin/keys/{key_id}", body=_limits(form, patch=True))
        saved = True
    except ApiError as exc:
        if exc.status in (403, 404):
            raise
        error = exc.message
    key = await api(request, "GET", f"/admin/keys/{key_id}")
    spend = (await _spend_by(request, "key", _month_start())).get(key_id)
    return render(request, "key.html", status=400 if error else 200, key=key, spend=spend,
                  error=error, saved=saved)


async def key_revoke(request: Request) -> Response:
    await api(request, "DELETE", f"/admin/keys/{request.path_params['key_id']}")
    return redirect("/ui/keys")


async def _teams_page(request: Request, error: str | None = None, status: int = 200
                      ) -> Response:
    teams = (await api(request, "GET", "/admin/teams"))["data"]
    spend = await _spend_by(request, "team", _month_start())
    return render(request, "teams.html", status=status, teams=teams, spend=spend, error=error)


async def teams_list(request: Request) -> Response:
    return await _teams_page(request)


async def team_create(request: Request) -> Response:
    form = await form_of(request)
    body = {"name": _text(form, "name"), **_limits(form, patch=False)}
    if _text(form, "policy"):
        body["policy"] = _text(form, "policy")
    try:
        await api(request, "POST", "/admin/teams", body=body)
    except ApiError as exc:
        return await _teams_page(request, error=exc.message, status=exc.status)
    return redirect("/ui/teams")


async def team_update(request: Request) -> Response:
    form = await form_of(request)
    body = _limits(form, patch=True)
    body["policy"] = _text(form, "policy") or None
    try:
        await api(request, "PATCH", f"/admin/teams/{request.path_params['name']}", body=body)
    except ApiError as exc:
        return await _teams_page(request, error=exc.message, status=exc.status)
    return redirect("/ui/teams")


# --- templates ---------------------------------------------------------------------------

def _doc(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in _META}


async def _version_stats(request: Request, name: str) -> dict[int, dict[str, Any]]:
    """Requests, tokens and cost per version, from the audit events of this template."""
    rows = (await api(request, "GET", "/audit/events",
                      query={"template_name": name, "limit": "1000"}))["data"]
    stats: dict[int, dict[str, Any]] = {}
    for row in rows:
        version = row.get("template_version")
        if version is None:
            continue
        s = stats.setdefault(version, {"requests": 0, "tokens": 0, "cost_usd": 0.0})
        s["requests"] += 1
        s["tokens"] += row.get("total_tokens") or 0
        s["cost_usd"] += row.get("cost_usd") or 0.0
    return stats


async def templates_list(request: Request) -> Response:
    data = (await api(request, "GET", "/admin/templates"))["data"]
    return render(request, "templates.html", templates=data)


async def _template_page(request: Request, name: str, version: int | None, *,
                         rendered: Any = None, render_error: str | None = None,
                         label_error: str | None = None, variables: Any = None,
                         status: int = 200) -> Response:
    query = {"version": str(version)} if version else None
    current = await api(request, "GET", f"/admin/templates/{name}", query=query)
    versions = (await api(request, "GET", f"/admin/templates/{name}/versions"))["data"]
    labels = (await api(request, "GET", f"/admin/templates/{name}/labels"))["data"]
    stats = await _version_stats(request, name)
    return render(request, "template.html", status=status, name=name, current=current,
                  source=to_yaml(_doc(current)), versions=versions, labels=labels,
                  stats=stats, rendered=rendered, render_error=render_error,
                  label_error=label_error, values=variables or {})


def _positive(raw: str) -> int | None:
    """A version number from a form or query, or None (int() refuses over 4300 digits)."""
    return int(raw) if raw.isdigit() and len(raw) <= 18 and int(raw) > 0 else None


def _version_param(request: Request) -> int | None:
    return _positive(request.query_params.get("version", ""))


async def template_detail(request: Request) -> Response:
    return await _template_page(request, request.path_params["name"], _version_param(request))


def _variables(form: Any, declared: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, spec in (declared or {}).items():
        kind = (spec or {}).get("type", "string")
        field = f"var_{var}"
        if kind == "boolean":
            if _text(form, f"{field}__present"):
                values[var] = form.get(field) == "on"
            continue
        raw = form.get(field)
        if not isinstance(raw, str) or raw == "":
            continue
        try:
            if kind == "integer":
                values[var] = int(raw)
            elif kind == "number":
                values[var] = float(raw)
            elif kind in ("array", "object"):
                values[var] = json.loads(raw)
            else:
                values[var] = raw
        except (ValueError, RecursionError):  # json.loads recurses once per nesting level
            values[var] = raw  # the API names the ill-typed variable
    return values


async def template_render(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    version = _positive(_text(form, "version"))
    current = await api(request, "GET", f"/admin/templates/{name}",
                        query={"version": str(version)} if version else None)
    values = _variables(form, current.get("variables") or {})
    rendered, error = None, None
    try:
        rendered = await api(request, "POST", f"/admin/templates/{name}/render",
                             body={"version": current["version"], "variables": values})
    except ApiError as exc:
        if exc.status != 400:
            raise
        error = exc.message
    shown = {k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in values.items()}
    return await _template_page(request, name, current["version"], rendered=rendered,
                                render_error=error, variables=shown,
                                status=400 if error else 200)


async def template_label(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    label = _text(form, "label")
    body: dict[str, Any] = {}
    try:
        body["version"] = int(_text(form, "version"))
        if _text(form, "canary_version"):
            body["canary"] = {"version": int(_text(form, "canary_version")),
                              "percent": float(_text(form, "canary_percent") or "0")}
    except ValueError:
        return await _template_page(request, name, None, status=400,
                                    label_error="Versions and percent must be numbers.")
    try:
        await api(request, "PUT", f"/admin/templates/{name}/labels/{label}", body=body)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _template_page(request, name, None, label_error=exc.message,
                                    status=exc.status)
    return redirect(f"/ui/templates/{name}")


async def template_edit(request: Request) -> Response:
    name = request.path_params["name"]
    current = await api(request, "GET", f"/admin/templates/{name}")
    return render(request, "template_edit.html", name=name, base=current["version"],
                  source=to_yaml(_doc(current)), diff=None, error=None)


async def template_new(request: Request) -> Response:
    return render(request, "template_edit.html", name=None, base=None,
                  source="name: \ndescription: \nmodel: demo\nvariables: {}\nmessages:\n"
                         "- role: user\n  content: |\n    Hello\n", diff=None, error=None)


def _parse_source(source: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ApiError(400, {"error": {"message": f"not valid YAML: {exc}"}}) from None
    except RecursionError:  # PyYAML recurses once per nesting level
        raise ApiError(400, {"error": {"message": "not valid YAML: nested too deeply"}}
                       ) from None
    if not isinstance(doc, dict):
        raise ApiError(400, {"error": {"message": "the template must be a YAML mapping"}})
    return doc


async def template_save(request: Request) -> Response:
    """Step 1 (`action=preview`): the diff against the base version; step 2 (`save`)."""
    name = request.path_params.get("name")
    form = await form_of(request)
    source = form.get("source")
    source = source.replace("\r\n", "\n") if isinstance(source, str) else ""
    action = _text(form, "action")
    base_view = await api(request, "GET", f"/admin/templates/{name}") if name else None
    base = base_view["version"] if base_view else None
    try:
        doc = _parse_source(source)
        if action != "save":
            old = to_yaml(_doc(base_view)) if base_view else ""
            diff = "".join(difflib.unified_diff(
                old.splitlines(keepends=True), to_yaml(doc).splitlines(keepends=True),
                f"{name} v{base}" if name else "(none)", "new version"))
            return render(request, "template_edit.html", name=name, base=base, source=source,
                          diff=diff or "(no changes)", error=None)
        if name:
            doc.setdefault("name", name)
            saved = await api(request, "POST", f"/admin/templates/{name}/versions", body=doc)
        else:
            saved = await api(request, "POST", "/admin/templates", body=doc)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return render(request, "template_edit.html", status=exc.status, name=name, base=base,
                      source=source, diff=None, error=exc.message)
    return redirect(f"/ui/templates/{saved['name']}?version={saved['version']}")


# --- spend -------------------------------------------------------------------------------

def _day(raw: str, default: datetime) -> datetime:
    try:
        return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return default


def _chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of cost; of tokens when nothing in the range cost anything (free models)."""
    by_cost = any(r["cost_usd"] for r in rows)

    def value(r: dict[str, Any]) -> float:
        return r["cost_usd"] if by_cost else r["input_tokens"] + r["output_tokens"]

    top = max((value(r) for r in rows), default=0) or 1
    bars = [{"label": "(none)" if r["group"] is None else str(r["group"]),
             "value": f"{value(r):.4f}" if by_cost else str(value(r)), "y": i * 24,
             "width": round(300 * value(r) / top, 1)} for i, r in enumerate(rows)]
    return {"bars": bars, "height": max(24, 24 * len(bars)),
            "metric": "cost (USD)" if by_cost else "tokens"}


async def spend(request: Request) -> Response:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    since = _day(request.query_params.get("since", ""), today - timedelta(days=29))
    until = _day(request.query_params.get("until", ""), today)
    query = {"since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "until": (until + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    groups = []
    for group_by, title in (("day", "By day"), ("model", "By model"), ("team", "By team"),
                            ("template", "By template")):
        rows = (await api(request, "GET", "/admin/spend",
                          query={**query, "group_by": group_by}))["data"]
        if group_by == "day":
            rows.sort(key=lambda r: str(r["group"]))
        else:
            rows.sort(key=lambda r: -r["cost_usd"])
        groups.append({"key": group_by, "title": title, "rows": rows, "chart": _chart(rows)})
    return render(request, "spend.html", groups=groups, since=since.strftime("%Y-%m-%d"),
                  until=until.strftime("%Y-%m-%d"))


# --- audit -------------------------------------------------------------------------------

def _iso_input(value: str) -> str:
    """`datetime-local` (`2026-11-26T10:00`) → ISO UTC with Z; other forms pass through."""
    if len(value) == 16 and value[10] == "T":
        return value + ":00Z"
    if len(value) == 19 and value[10] == "T":
        return value + "Z"
    return value


def _audit_filters(request: Request) -> list[tuple[str, str]]:
    out = []
    for name in AUDIT_FILTERS:
        value = request.query_params.get(name, "").strip()
        if value:
            out.append((name, _iso_input(value) if name in ("since", "until") else value))
    return out


async def audit(request: Request) -> Response:
    filters = _audit_filters(request)
    query = list(filters)
    cursor = request.query_params.get("cursor")
    if cursor:
        query.append(("cursor", cursor))
    if not any(k == "limit" for k, _ in query):
        query.append(("limit", "50"))
    error, rows, next_cursor = None, [], None
    try:
        page_ = await api(request, "GET", "/audit/events", query=query)
        rows, next_cursor = page_["data"], page_.get("next_cursor")
    except ApiError as exc:
        if exc.status != 400:
            raise
        error = exc.message
    values = {k: request.query_params.get(k, "") for k in AUDIT_FILTERS}
    qs = urlencode(filters)
    return render(request, "audit.html", status=400 if error else 200, rows=rows,
                  error=error, values=values, filter_qs=qs,
                  next_qs=urlencode([*filters, ("cursor", next_cursor)]) if next_cursor else None)


async def audit_event_page(request: Request) -> Response:
    event = await api(request, "GET", f"/audit/events/{request.path_params['event_id']}")
    bodies = {}
    for name in ("request_body", "response_body"):
        value = event.get(name)
        if value is None or isinstance(value, str):
            bodies[name] = value
        else:
            bodies[name] = json.dumps(value, indent=2, ensure_ascii=False)
    return render(request, "audit_event.html", event=event, bodies=bodies)


async def audit_export(request: Request) -> Response:
    """The API's export endpoint itself, called as the signed-in key (its authentication,
    role check and team scope), streamed as it answers."""
    session: Session = request.scope["ui_session"]
    fmt = request.query_params.get("format", "jsonl")
    qs = urlencode([("format", fmt), *_audit_filters(request)]).encode()
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    headers.append(session_key_header(session))
    inner = Request({**request.scope, "query_string": qs, "headers": headers},
                    request.receive)
    return harden(await audit_api.export_events(inner))


async def audit_verify(request: Request) -> Response:
    result = await api(request, "GET", "/audit/verify")
    return render(request, "verify.html", result=result)


# --- policies ----------------------------------------------------------------------------

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
    policy = _text(form, "policy") or "default"
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


async def not_found(request: Request) -> Response:
    request.scope["ui_session"] = sessions.get(request.cookies.get(COOKIE))
    return refuse(request, 404, "No such page.")


# Every signed-in page, with the roles that may use it (checked against the key's current
# role on each request, by `gateway.ui.access`).
ROUTES = [
    ("GET", "/ui", home, READERS),
    ("POST", "/ui/logout", logout, READERS),
    ("GET", "/ui/templates", templates_list, ADMIN),
    ("GET", "/ui/templates/new", template_new, ADMIN),
    ("POST", "/ui/templates/new", template_save, ADMIN),
    ("GET", "/ui/templates/{name}", template_detail, ADMIN),
    ("GET", "/ui/templates/{name}/edit", template_edit, ADMIN),
    ("POST", "/ui/templates/{name}/edit", template_save, ADMIN),
    ("POST", "/ui/templates/{name}/render", template_render, ADMIN),
    ("POST", "/ui/templates/{name}/labels", template_label, ADMIN),
    ("GET", "/ui/keys", keys_list, ADMIN),
    ("POST", "/ui/keys", key_create, ADMIN),
    ("GET", "/ui/keys/{key_id}", key_detail, ADMIN),
    ("POST", "/ui/keys/{key_id}", key_update, ADMIN),
    ("POST", "/ui/keys/{key_id}/revoke", key_revoke, ADMIN),
    ("GET", "/ui/teams", teams_list, ADMIN),
    ("POST", "/ui/teams", team_create, ADMIN),
    ("POST", "/ui/teams/{name}", team_update, ADMIN),
    ("GET", "/ui/spend", spend, READERS),
    ("GET", "/ui/audit", audit, READERS),
    ("GET", "/ui/audit/events/{event_id}", audit_event_page, READERS),
    ("GET", "/ui/audit/export", audit_export, READERS),
    ("GET", "/ui/audit/verify", audit_verify, READERS),
    ("GET", "/ui/policies", policies, ADMIN),
    ("POST", "/ui/policies/dry-run", policy_dry_run, ADMIN),
]

routes = [
    # The only routes without a session: signing in, static files, the not-found page.
    Route("/ui/login", login_form, methods=["GET"]),
    Route("/ui/login", login, methods=["POST"]),
    *page_routes(ROUTES),
    Mount("/ui/static", app=StaticWithHeaders(StaticFiles(directory=HERE / "static")),
          name="ui-static"),
    Route("/ui/{rest:path}", not_found, methods=["GET", "POST"]),
]
