"""The UI's responses: pages rendered with Jinja2 (autoescaped), redirects and error pages,
every one with the same hardening headers (strict CSP, no sniffing, no framing, no store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.ui.display import FILTERS

HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
           "referrer-policy": "no-referrer", "x-frame-options": "DENY"}
ADMIN = frozenset({"admin"})
READERS = frozenset({"admin", "compliance"})
NAV = [("templates", "Templates", ADMIN), ("keys", "Keys", ADMIN), ("teams", "Teams", ADMIN),
       ("spend", "Spend", READERS), ("audit", "Audit", READERS),
       ("policies", "Policies", ADMIN)]

env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                         autoescape=True, undefined=jinja2.StrictUndefined)
env.filters.update(FILTERS)


def secure(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" or request.url.scheme == "https"


def harden(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("cache-control", "no-store")
    return response


def render(request: Request, page_template: str, /, status: int = 200, **ctx: Any) -> Response:
    """A page; the navigation shows what the signed-in key's current role may open."""
    session = ctx.pop("session", None) or request.scope.get("ui_session")
    nav = [(slug, title) for slug, title, roles in NAV if session and session.role in roles]
    html = env.get_template(page_template).render(session=session, nav=nav, csrf=session.csrf
                                                  if session else "", **ctx)
    return harden(Response(html, status_code=status, media_type="text/html; charset=utf-8"))


def redirect(url: str) -> Response:
    return harden(RedirectResponse(url, status_code=303))


def refuse(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


class StaticWithHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control"]
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
                headers.append((b"cache-control", b"public, max-age=3600"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_hardened)
