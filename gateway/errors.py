"""Every error a client can see, each with its HTTP status and OpenAI `type`/`code`.

GatewayError
├── InvalidRequest (400)            ── PiiBlocked (400 pii_blocked)
├── Unauthorized (401 invalid_api_key)
├── Forbidden (403)
├── ModelNotFound (404 model_not_found) · NotFound (404)
├── PayloadTooLarge (413)
├── RateLimited (429 rate_limit_exceeded) · QuotaExceeded (429 insufficient_quota)
├── UpstreamError (502) · NoHealthyDeployment (503) · UpstreamTimeout (504)
├── AuditUnavailable (503) · RedactionUnavailable (503)
├── AuthUnavailable (503) · StoreUnavailable (503)   (the database is down: see storage.outage)
└── InternalError (500)
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# What an error may echo of a client's input: a short excerpt, without control or format
# characters (a newline, an ANSI escape or a right-to-left override could forge log lines or
# change how a terminal shows the rest).
ECHO_CHARS = 64
MESSAGE_CHARS = 512
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                     r"\u2060-\u206f\ufeff\ufff9-\ufffb]")


def clip(value: Any, limit: int = ECHO_CHARS) -> str:
    """`value` as text, at most `limit` characters (then `…`), unsafe characters as `?`."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text if text.isprintable() else _UNSAFE.sub("?", text)


def excerpt(value: Any) -> str:
    """A client's value quoted for an error message: `'gpt-4o'`, `'aaaa…'` when long."""
    return f"'{clip(value)}'"


class GatewayError(Exception):
    status_code = 500
    type = "api_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def to_openai_body(self) -> dict[str, Any]:
        # Messages quote client input through `excerpt`; these bounds hold for any that do not.
        param = None if self.param is None else clip(self.param)
        return {
            "error": {"message": clip(self.message, MESSAGE_CHARS), "type": self.type,
                      "param": param, "code": self.code}
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_openai_body())


class InvalidRequest(GatewayError):
    status_code, type, code = 400, "invalid_request_error", "invalid_request"


def invalid_value(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    """400 for a bad field: the one helper (`param` names the field, as OpenAI does)."""
    return InvalidRequest(message, param=param, code=code)


class PiiBlocked(InvalidRequest):
    code = "pii_blocked"


class Unauthorized(GatewayError):
    status_code, type, code = 401, "authentication_error", "invalid_api_key"

    def __init__(self, message: str, *, principal: Any = None) -> None:
        super().__init__(message)
        self.principal = principal  # the known but unusable key (revoked, expired), if any


class Forbidden(GatewayError):
    status_code, type, code = 403, "permission_error", "permission_denied"


class NotFound(GatewayError):
    status_code, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(GatewayError):
    status_code, type, code = 405, "invalid_request_error", "method_not_allowed"


class Conflict(GatewayError):
    status_code, type, code = 409, "invalid_request_error", "conflict"


class PayloadTooLarge(GatewayError):
    status_code, type, code = 413, "invalid_request_error", "request_too_large"


class RateLimited(GatewayError):
    status_code, type, code = 429, "rate_limit_error", "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    status_code, type, code = 429, "insufficient_quota", "insufficient_quota"


class InternalError(GatewayError):
    status_code, type, code = 500, "api_error", "internal_error"


class UpstreamError(GatewayError):
    status_code, type, code = 502, "api_error", "upstream_error"


class NoHealthyDeployment(GatewayError):
    status_code, type, code = 503, "api_error", "no_healthy_deployment"


class AuditUnavailable(GatewayError):
    status_code, type, code = 503, "api_error", "audit_unavailable"


class RedactionUnavailable(GatewayError):
    status_code, type, code = 503, "api_error", "redaction_unavailable"


class AuthUnavailable(GatewayError):
    """The key is not one this replica knows, and the key store cannot be asked now."""

    status_code, type, code = 503, "api_error", "auth_unavailable"


class StoreUnavailable(GatewayError):
    """The database behind this endpoint (admin, audit, spend) cannot be reached now."""

    status_code, type, code = 503, "api_error", "store_unavailable"


class UpstreamTimeout(GatewayError):
    status_code, type, code = 504, "api_error", "upstream_timeout"
