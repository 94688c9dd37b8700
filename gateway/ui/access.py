"""Who may use a UI page: the one door every signed-in `/ui` route goes through.

A session is only a pointer to a key. On every request the door asks the API's own
authenticator about that key again (its short cache is emptied by every admin change to a
key or team), so a key that was revoked, expired or given a role without UI access ends its
session at once, and a page sees the key's current role and team, never the ones it had at
sign-in. Then: CSRF on POST, and the route's roles (403 otherwise). Pages get their data by
calling the JSON API in-process as that key (`api`), so the API's role checks and team
scoping apply a second time, unchanged. A form post refused at the door is audited (a page
view is a read, and reads are not).

Routes are built from a table (`page_routes`) that names the roles of each; the only routes
outside it are the sign-in form, static files and the not-found page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import Principal
from gateway.core.audit_event import AuditEvent
from gateway.errors import GatewayError, Unauthorized
from gateway.ui.forms import form_of
from gateway.ui.inprocess import ApiError
from gateway.ui.sessions import Session, same, sessions
from gateway.ui.web import redirect, refuse, secure
from gateway.web.context import services

log = logging.getLogger("gateway.ui")

COOKIE = "gw_ui_session"
LOGIN_COOKIE = "gw_ui_login"
UI_ROLES = frozenset({"admin", "compliance"})


Page = Callable[[Request], Awaitable[Response]]


# --- the door ----------------------------------------------------------------------------

def _signed_out(request: Request) -> Response:
    if request.method == "POST":
        response = refuse(request, 403, "Not signed in.")
    else:
        response = redirect("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=secure(request))
    return response


Refusal = tuple[Response, str, Principal | None]  # the answer, its error code, the key


async def _current_key(request: Request, session: Session) -> Principal | Refusal:
    """The session's key as the authenticator sees it now, or why it cannot be used."""
    try:
        principal = await services(request).auth.authenticate(f"Bearer {session.key}")
    except Unauthorized as exc:  # revoked, expired or deleted since sign-in
        sessions.drop(session.sid)
        return _signed_out(request), "invalid_api_key", exc.principal
    except GatewayError as exc:
        return refuse(request, exc.status_code, exc.message), exc.code or "error", None
    except Exception:  # the key store cannot be reached: the key cannot be checked
        log.exception("UI session check failed")
        return (refuse(request, 503, "The key store cannot be reached; try again shortly."),
                "key_store_unavailable", None)
    if principal.role not in UI_ROLES:  # e.g. PATCHed to `app`: no UI at all any more
        sessions.drop(session.sid)
        return _signed_out(request), "endpoint_not_allowed", principal
    return principal


async def _refusal(request: Request, roles: frozenset[str]) -> Refusal | None:
    """Why this request may not reach its page (None: it may)."""
    session = sessions.get(request.cookies.get(COOKIE))
    if session is None:
        return _signed_out(request), "invalid_api_key", None
    principal = await _current_key(request, session)
    if not isinstance(principal, Principal):
        return principal
    session.role, session.team = principal.role, principal.team  # what pages show
    request.scope["ui_session"] = session
    request.scope["ui_principal"] = principal
    if request.method == "POST":
        try:
            form = await form_of(request)
        except ApiError as exc:
            return refuse(request, exc.status, exc.message), "request_too_large", principal
        if not same(form.get("csrf_token"), session.csrf):
            return (refuse(request, 403, "Missing or invalid CSRF token."), "csrf_failed",
                    principal)
    if principal.role not in roles:
        return (refuse(request, 403, "Your role may not use this page."),
                "endpoint_not_allowed", principal)
    return None


def _audit_refused_change(request: Request, status: int, code: str,
                          principal: Principal | None) -> None:
    """A form post refused here changed nothing, yet it is a request: one audit event, as
    the API writes for a refused change (an accepted one is audited by the API it calls)."""
    route = request.scope.get("route")
    event = AuditEvent(request.state.request_id,
                       f"POST {getattr(route, 'path', request.url.path)}")
    if principal is not None:
        event.set_principal(principal)
    event.submit_to(services(request).audit, status, code)


async def _through_the_door(request: Request, handler: Page, roles: frozenset[str]
                            ) -> Response:
    refused = await _refusal(request, roles)
    if refused is not None:
        response, code, principal = refused
        if request.method == "POST":
            _audit_refused_change(request, response.status_code, code, principal)
        return response
    try:
        return await handler(request)
    except ApiError as exc:
        if exc.status == 401:
            return redirect("/ui/login")
        return refuse(request, exc.status, exc.message)


def signed_in(handler: Page, roles: frozenset[str]) -> Page:
    """`handler` behind the door, for keys whose current role is in `roles`."""

    async def endpoint(request: Request) -> Response:
        return await _through_the_door(request, handler, roles)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    endpoint.ui_roles = roles  # type: ignore[attr-defined]
    return endpoint


def page_routes(table: Iterable[tuple[str, str, Page, frozenset[str]]]) -> list[Route]:
    """`(method, path, handler, roles)` rows -> routes, every one behind the door."""
    return [Route(path, signed_in(handler, roles), methods=[method])
            for method, path, handler, roles in table]
