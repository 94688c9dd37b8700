"""`/audit/export` as an answer: filtered events streamed as JSON lines or CSV.

Shared by the audit API and the UI, which both call it for a principal they authenticated
and role-checked on this very request (the key's current role, team and revocation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.responses import Response

from gateway.audit.query import export_lines, parse_params, signer_from_settings
from gateway.context import Principal
from gateway.errors import InvalidRequest
from gateway.timeutil import utcnow
from gateway.web.export_response import export_response

READERS = frozenset({"admin", "compliance"})
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


def team_scope(principal: Principal) -> str | None:
    """A compliance key bound to a team sees that team only."""
    return principal.team if principal.role == "compliance" else None


async def export_answer(svc: Any, principal: Principal,
                        items: Sequence[tuple[str, str]]) -> Response:
    formats = [v for k, v in items if k == "format"]
    if len(formats) > 1:
        raise InvalidRequest("'format' given more than once", param="format",
                             code="invalid_value")
    fmt = formats[0] if formats else "jsonl"
    if fmt not in EXPORT_TYPES:
        raise InvalidRequest("format must be csv or jsonl", param="format", code="invalid_value")
    query = parse_params([(k, v) for k, v in items if k != "format"],
                         signer=signer_from_settings(svc.settings),
                         scope_team=team_scope(principal), max_limit=None, default_limit=None)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-disposition": f'attachment; filename="audit-{stamp}.{fmt}"',
               "cache-control": "no-store"}
    return await export_response(export_lines(svc.engine, query, fmt), fmt,
                                 media_type=EXPORT_TYPES[fmt], headers=headers)
