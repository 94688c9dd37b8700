"""`/admin/policies`: the effective policy of a key (with every source), a PII dry run,
reloading `policies_dir`, and editing its files safely.

- `GET /admin/policies/effective?key_id=ID` → the policy file shape with the key's and
  team's own settings merged in, plus `sources` (policy names), `budgets` and
  `section_sources` (`gateway/policies/explain.py`)
- `POST /admin/policies/dry-run` `{"text", "policy"}` → `{"text", "findings", "blocked"}`
- `POST /admin/policies/reload` → `{"policies"}` (a bad file: 400 naming it; the old set stays)
- `GET /admin/policies/files` → `{"policies_dir", "data": [{"name", "file", "sha256"}]}`
- `GET /admin/policies/files/{name}` → `{"name", "file", "source", "sha256"}`
- `POST /admin/policies/files/{name}/check` `{"source", "text"?}` → `{"ok", "problems",
  "diff", "applies_to", "dry_run"}`: the edit checked as a reload checks it, the change as a
  diff, who it applies to, and (with `text`) its PII rules run on that text; nothing saved
- `PUT /admin/policies/files/{name}` `{"source", "base_sha256"}` → writes the file (atomic),
  reloads, answers `{"name", "file", "sha256", "policies"}`; audited as `policy.save`; 409 if
  the file changed since `base_sha256` or the folder cannot be written
"""

from __future__ import annotations

import asyncio
import difflib
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, record_change
from gateway.api.http import json_response, services
from gateway.config import ConfigError
from gateway.context import Principal
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    NotFound,
    RedactionUnavailable,
    excerpt,
)
from gateway.pii.actions import Redactor, scan
from gateway.pii.detectors import detect
from gateway.policies.explain import explain
from gateway.policies.files import (
    PolicyEditError,
    check_edit,
    policy_change,
    policy_files,
    save_edit,
)
from gateway.policies.model import Policy
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
    return json_response(explain(target, policy, name))


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


def pii_dry_run(policy: Policy, text: str, hash_key: bytes) -> dict[str, Any]:
    """What a policy's input PII rules do to a text; `findings` has every detection."""
    rules: dict[str, str] = {str(k): str(v) for k, v in policy.pii.input.items()} \
        if policy.pii else {}
    try:
        found = detect(text)
        redacted = scan(text, {k: v for k, v in rules.items() if v != "block"},
                        Redactor(hash_key)).text
    except GatewayError:
        raise
    except Exception:  # the same fail-closed answer as the request path
        raise RedactionUnavailable("PII detection failed") from None
    findings = [{"kind": f.kind, "start": f.start, "end": f.end,
                 "action": rules.get(f.kind, "allow")} for f in found]
    return {"text": redacted, "findings": findings,
            "blocked": any(f["action"] == "block" for f in findings)}


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
    return json_response(pii_dry_run(policy, text, svc.pii_hash_key))


@admin_endpoint()
async def list_files(request: Request, principal: Principal) -> Response:
    registry = services(request).policies
    files = await asyncio.to_thread(policy_files, registry)
    return json_response({"policies_dir": registry.shown_base, "data": [
        {"name": f.name, "file": f"{registry.shown_base}/{f.path.name}", "sha256": f.sha256}
        for f in files.values()]})


@admin_endpoint()
async def get_file(request: Request, principal: Principal) -> Response:
    registry = services(request).policies
    name = request.path_params["name"]
    found = (await asyncio.to_thread(policy_files, registry)).get(name)
    if found is None:
        raise NotFound(f"no policy named {excerpt(name)} in {registry.shown_base}",
                       param="name")
    return json_response({"name": name, "file": f"{registry.shown_base}/{found.path.name}",
                          "source": found.text, "sha256": found.sha256})


def _text_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{excerpt(name)} must be a string", param=name,
                             code="invalid_value")
    return value


async def _edit_body(request: Request, allowed: set[str]) -> dict[str, Any]:
    svc = services(request)
    body = parse_object(await read_body(request, svc.config.server.max_body_bytes))
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown field {excerpt(unknown[0])}", param=unknown[0],
                             code="invalid_value")
    return body


@admin_endpoint()
async def check_file(request: Request, principal: Principal) -> Response:
    """The dry run of an edit: checked, diffed, who it applies to, its PII rules on a text."""
    svc = services(request)
    name = request.path_params["name"]
    body = await _edit_body(request, {"source", "text"})
    source = _text_field(body, "source") or ""
    text = _text_field(body, "text", required=False)
    registry = svc.policies
    current = (await asyncio.to_thread(policy_files, registry)).get(name)
    old = current.text if current is not None else ""
    diff = "".join(difflib.unified_diff(
        old.splitlines(keepends=True), (source if source.endswith("\n") else source + "\n")
        .splitlines(keepends=True), f"{name} (saved)" if current else "(new)",
        f"{name} (edited)"))
    try:
        policy, _ = await asyncio.to_thread(check_edit, registry, name, source)
    except PolicyEditError as exc:
        return json_response({"ok": False, "problems": exc.lines, "diff": diff,
                              "applies_to": None, "dry_run": None})
    teams = [t["name"] for t in await svc.teams.list() if t["policy"] == name]
    applies = {"keys": list(policy.applies_to.keys), "teams": list(policy.applies_to.teams),
               "teams_naming_it": teams, "default": name == "default"}
    dry = pii_dry_run(policy, text, svc.pii_hash_key) if text else None
    return json_response({"ok": True, "problems": [], "diff": diff or "(no changes)",
                          "applies_to": applies, "dry_run": dry})


@admin_endpoint(audited=True, action="policy.save", target_type="policy",
                target_param="name")
async def save_file(request: Request, principal: Principal) -> Response:
    svc = services(request)
    name = request.path_params["name"]
    body = await _edit_body(request, {"source", "base_sha256"})
    source = _text_field(body, "source") or ""
    base = _text_field(body, "base_sha256", required=False)
    registry = svc.policies
    try:
        before, after, current = await asyncio.to_thread(save_edit, registry, name, source,
                                                         base)
    except PolicyEditError as exc:
        message = "; ".join(exc.lines)
        if exc.kind == "invalid":
            raise InvalidRequest(f"policy not saved: {message}", param="source",
                                 code="invalid_policy") from None
        raise Conflict(f"policy not saved: {message}", param="source",
                       code="policy_conflict" if exc.kind == "conflict"
                       else "policies_read_only") from None
    record_change(request, policy_change(before), policy_change(after), target_name=name)
    saved = (await asyncio.to_thread(policy_files, registry))[name]
    return json_response({"name": name, "file": f"{registry.shown_base}/{saved.path.name}",
                          "sha256": saved.sha256, "policies": current.names()})


routes = [
    Route("/admin/policies/dry-run", dry_run, methods=["POST"]),
    Route("/admin/policies/effective", effective, methods=["GET"]),
    Route("/admin/policies/reload", reload, methods=["POST"]),
    Route("/admin/policies/files", list_files, methods=["GET"]),
    Route("/admin/policies/files/{name}", get_file, methods=["GET"]),
    Route("/admin/policies/files/{name}", save_file, methods=["PUT"]),
    Route("/admin/policies/files/{name}/check", check_file, methods=["POST"]),
]
