"""`/admin/policies`: the effective policy of a key, and reloading `policies_dir`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, record_change
from gateway.api.http import json_response, services
from gateway.config import ConfigError
from gateway.context import Principal
from gateway.errors import GatewayError, InvalidRequest, NotFound, RedactionUnavailable, excerpt
from gateway.pii.actions import Redactor, scan
from gateway.pii.detectors import detect
from gateway.policies.store import policy_set_change
from gateway.protocols.json_body import parse_object
from gateway.storage.keys import principal_from_row, team_from_row
from gateway.web.body import read_body


@admin_endpoint()
async def effective(request: Request, principal: Principal) -> Response:
    key_id = request.query_params.get("key_id")
    if not key_id:
        raise InvalidRequest("missing required parameter: 'key_id'", param="key_id",
                             code="missing_required_parameter")
    svc = services(request)
    row = await svc.keys.get(key_id)
    if row is None:
        raise NotFound(f"no key with id {excerpt(key_id)}", param="key_id")
    team = None
    if row["team"] is not None:
        team_row = await svc.teams.get(row["team"])
        team = team_from_row(team_row) if team_row else None
    target = principal_from_row(row, team)
    policy = svc.policies.effective(target)
    name = policy.sources[0] if policy.sources else "(none)"
    return json_response(policy.as_dict(name))


@admin_endpoint(audited=True, action="policy.reload", target_type="policy")
async def reload(request: Request, principal: Principal) -> Response:
    svc = services(request)
    before = policy_set_change(svc.policies.current)
    try:
        current = svc.policies.reload()
    except ConfigError as exc:
        raise InvalidRequest("policies not reloaded (the old set stays): "
                             + "; ".join(exc.lines), param="policies_dir",
                             code="invalid_policy") from None
    record_change(request, before, policy_set_change(current),
                  target_name=svc.policies.shown_base)
    return json_response({"policies": current.names()})


@admin_endpoint()
async def dry_run(request: Request, principal: Principal) -> Response:
    """What a policy's input PII rules do to a text; `findings` has every detection."""
    svc = services(request)
    body = parse_object(await read_body(request, svc.config.server.max_body_bytes))
    text, name = body.get("text"), body.get("policy", "default")
    if not isinstance(text, str):
        raise InvalidRequest("'text' must be a string", param="text", code="invalid_value")
    if not isinstance(name, str):
        raise InvalidRequest("'policy' must be a policy name", param="policy",
                             code="invalid_value")
    unknown = set(body) - {"text", "policy"}
    if unknown:
        first = sorted(unknown)[0]
        raise InvalidRequest(f"unknown field {excerpt(first)}", param=first,
                             code="invalid_value")
    policy = svc.policies.current.policies.get(name)
    if policy is None:
        raise NotFound(f"no policy named {excerpt(name)}", param="policy")
    rules: dict[str, str] = {str(k): str(v) for k, v in policy.pii.input.items()} \
        if policy.pii else {}
    try:
        found = detect(text)
        redacted = scan(text, {k: v for k, v in rules.items() if v != "block"},
                        Redactor(svc.pii_hash_key)).text
    except GatewayError:
        raise
    except Exception:  # the same fail-closed answer as the request path
        raise RedactionUnavailable("PII detection failed") from None
    findings = [{"kind": f.kind, "start": f.start, "end": f.end,
                 "action": rules.get(f.kind, "allow")} for f in found]
    return json_response({"text": redacted, "findings": findings,
                          "blocked": any(f["action"] == "block" for f in findings)})


routes = [
    Route("/admin/policies/dry-run", dry_run, methods=["POST"]),
    Route("/admin/policies/effective", effective, methods=["GET"]),
    Route("/admin/policies/reload", reload, methods=["POST"]),
]
