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

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.ui.access import COOKIE, page_routes
from gateway.ui.pages.audit import (
    audit,
    audit_event_page,
    audit_export,
    audit_retention,
    audit_verify,
)
from gateway.ui.pages.keys import (
    key_create,
    key_detail,
    key_revoke,
    key_update,
    keys_list,
    team_create,
    team_update,
    teams_list,
)
from gateway.ui.pages.policies import (
    policies,
    policy_dry_run,
    policy_edit,
    policy_reload,
    policy_save,
)
from gateway.ui.pages.signin import home, login, login_form, logout
from gateway.ui.pages.spend import spend
from gateway.ui.pages.templates import (
    template_detail,
    template_edit,
    template_label,
    template_new,
    template_render,
    template_rollback,
    template_save,
    templates_list,
)
from gateway.ui.sessions import sessions
from gateway.ui.web import ADMIN, HERE, READERS, StaticWithHeaders, refuse


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
    ("POST", "/ui/templates/{name}/rollback", template_rollback, ADMIN),
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
    ("GET", "/ui/audit/retention", audit_retention, READERS),
    ("GET", "/ui/policies", policies, ADMIN),
    ("POST", "/ui/policies/dry-run", policy_dry_run, ADMIN),
    ("POST", "/ui/policies/reload", policy_reload, ADMIN),
    ("GET", "/ui/policies/new", policy_edit, ADMIN),
    ("POST", "/ui/policies/new", policy_save, ADMIN),
    ("GET", "/ui/policies/{name}/edit", policy_edit, ADMIN),
    ("POST", "/ui/policies/{name}/edit", policy_save, ADMIN),
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

