"""Signing in and out, and the home page."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import Response

from gateway.core.audit_event import AuditEvent
from gateway.errors import GatewayError
from gateway.ui.access import COOKIE, LOGIN_COOKIE, UI_ROLES
from gateway.ui.forms import form_of
from gateway.ui.inprocess import ApiError
from gateway.ui.sessions import SESSION_TTL_S, Session, login_limiter, same, sessions
from gateway.ui.web import redirect, refuse, render, secure
from gateway.web.context import services


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
    event = AuditEvent(request.state.request_id, "POST /ui/login")
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
                event.set_principal(known)
            response = render(request, "login.html", status=status, login_csrf=token,
                              error="That key was not accepted.")
            return response
        event.set_principal(principal)
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
        event.submit_to(svc.audit, status, code)


async def logout(request: Request) -> Response:
    sessions.drop(request.cookies.get(COOKIE))
    response = redirect("/ui/login")
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=secure(request))
    return response


async def home(request: Request) -> Response:
    session: Session = request.scope["ui_session"]
    return redirect("/ui/templates" if session.role == "admin" else "/ui/audit")
