"""CORS for browser apps (`cors:` in `gateway.yaml`): pure ASGI, around everything that answers.

Installed only when `cors:` is configured; without it no response has a CORS header and an
`OPTIONS` request is answered 405 like any method a path does not take.

- A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here:
  204 with the allowed methods, headers and max age when the origin, the method and every
  requested header are allowed; otherwise 403 `cors_not_allowed` (OpenAI-shaped, naming what
  was refused) and no CORS header, so the browser stops there. `on_preflight` is told of
  each (the app audits those on `/v1` paths, like any other `/v1` request).
- Any other request from an allowed origin goes on, and its answer, errors included, gets
  `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` (`EXPOSED`: the request
  id, the rate-limit headers, `Retry-After`, the cache headers), so scripts can read them.
- Credentials are never allowed (no `Access-Control-Allow-Credentials`): keys travel in the
  `Authorization` header a script sets, never in cookies. `*` is answered as `*`, never by
  reflecting the caller's origin; other answers carry `Vary: Origin`.
- `allow_headers: ['*']` answers a preflight with the headers it asked for, since a literal
  `*` does not cover `Authorization` in browsers.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import CORS_METHODS, CorsConfig
from gateway.errors import Forbidden, excerpt

EXPOSED = (b"x-request-id, x-ratelimit-limit-requests, x-ratelimit-remaining-requests, "
           b"x-ratelimit-reset-requests, x-ratelimit-limit-tokens, "
           b"x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, retry-after, "
           b"x-gateway-cache, age")
_PREFLIGHT_VARY = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")  # a (lowercased) header name

# (scope, status, error code or None) for each preflight answered
PreflightHook = Callable[[Scope, int, str | None], None]


class CorsRefused(Forbidden):
    code = "cors_not_allowed"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, cors: CorsConfig,
                 on_preflight: PreflightHook | None = None) -> None:
        self.app = app
        self.any_origin = cors.allow_origins == ["*"]
        self.origins = frozenset(cors.allow_origins)
        self.methods = frozenset(CORS_METHODS if cors.allow_methods == ["*"]
                                 else cors.allow_methods)
        self.any_header = cors.allow_headers == ["*"]
        self.headers = frozenset(cors.allow_headers)
        self.on_preflight = on_preflight
        self._allow_methods = ", ".join(cors.allow_methods).encode()
        self._allow_headers = ", ".join(cors.allow_headers).encode()
        self._max_age = str(cors.max_age_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = method = asked = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value
            elif name == b"access-control-request-method":
                method = value
            elif name == b"access-control-request-headers":
                asked = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self.any_origin or origin.decode("latin-1") in self.origins
        if scope["method"] == "OPTIONS" and method is not None:
            await self._preflight(scope, send, origin, allowed, method, asked)
            return
        if not allowed:
            await self.app(scope, receive, self._vary_only(send))
            return
        extra = [(b"access-control-allow-origin", b"*" if self.any_origin else origin),
                 (b"access-control-expose-headers", EXPOSED)]

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *extra]
                message["headers"] = headers if self.any_origin else _vary(headers, b"Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _vary_only(self, send: Send) -> Send:
        """The answer to a refused origin still varies by origin (for caches)."""
        if self.any_origin:
            return send

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = _vary(list(message.get("headers", [])), b"Origin")
            await send(message)

        return send_with_vary

    async def _preflight(self, scope: Scope, send: Send, origin: bytes, allowed: bool,
                         method: bytes, asked: bytes | None) -> None:
        wanted = [h.strip().lower() for h in (asked or b"").decode("latin-1").split(",")
                  if h.strip()]
        refused = None
        if not allowed:
            refused = f"the origin {excerpt(origin.decode('latin-1'))} is not allowed"
        elif method.decode("latin-1") not in self.methods:
            refused = f"the method {excerpt(method.decode('latin-1'))} is not allowed"
        else:
            extra = [h for h in wanted if not _TOKEN.fullmatch(h) or
                     (not self.any_header and h not in self.headers)]
            if extra:
                refused = f"the header {excerpt(extra[0])} is not allowed"
        if refused is not None:
            error = CorsRefused(f"CORS preflight refused: {refused}")
            body = error.to_json()
            await send({"type": "http.response.start", "status": error.status_code,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"vary", _PREFLIGHT_VARY)]})
            await send({"type": "http.response.body", "body": body})
            self._tell(scope, error.status_code, error.code)
            return
        headers = [
            (b"access-control-allow-origin", b"*" if self.any_origin else origin),
            (b"access-control-allow-methods", self._allow_methods),
            (b"access-control-allow-headers",
             ", ".join(wanted).encode("latin-1") if self.any_header else self._allow_headers),
            (b"access-control-max-age", self._max_age),
            (b"vary", _PREFLIGHT_VARY),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        self._tell(scope, 204, None)

    def _tell(self, scope: Scope, status: int, code: str | None) -> None:
        if self.on_preflight is not None:
            self.on_preflight(scope, status, code)


def _vary(headers: list[tuple[bytes, bytes]], value: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` with `value` added to its `Vary` header (one header, comma-separated)."""
    for i, (name, current) in enumerate(headers):
        if name.lower() == b"vary":
            if value.lower() not in current.lower():
                headers[i] = (name, current + b", " + value)
            return headers
    headers.append((b"vary", value))
    return headers
