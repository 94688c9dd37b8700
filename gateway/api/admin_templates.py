"""`/admin/templates`: list, get, create, add a version, set or remove a label, diff, render.

Every version is immutable (author key id, time); writes are admin-only and audited; reads
need an admin key and are not audited. Template bodies are the `prompts/<name>.yaml` shape.

- `GET /admin/templates` → `{"data": [{"name", "description", "latest_version", "labels":
  {LABEL: VERSION}}]}`
- `POST /admin/templates` (a template) → 201 version 1; 409 `template_exists` if the name is
  taken
- `GET /admin/templates/{name}[?version=V|label=L]` → the version (latest by default)
- `POST /admin/templates/{name}/versions` (a template; `name` optional) → 201 next version
- `GET /admin/templates/{name}/versions` → `{"data": [version without messages, …]}`
- `PUT /admin/templates/{name}/labels/{label}` `{"version": V}` or `{"version": V, "canary":
  {"version": V2, "percent": P}}` (0 < P < 100) → the label; moving it back is a rollback
- `GET /admin/templates/{name}/labels` → `{"data": [label, …]}`;
  `DELETE /admin/templates/{name}/labels/{label}` → 204
- `GET /admin/templates/{name}/diff?from=V1&to=V2` → `{"name", "from", "to", "diff"}` (a
  unified diff of the two versions in the file format)
- `GET /admin/templates/{name}/history` → `{"data": [change, …]}` newest first: versions
  created and labels moved, by whom and when
- `POST /admin/templates/{name}/render` `{"version"|"label", "variables", "user"}` →
  `{"name", "version", "model", "params", "messages"}`; no provider call
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.admin_auth import admin_endpoint, parse_model, record_change
from gateway.api.http import json_response, services
from gateway.context import Principal
from gateway.errors import Conflict, InvalidRequest, excerpt
from gateway.protocols.json_body import parse_object
from gateway.storage.templates import TemplateExists, TemplateMissing
from gateway.templates.errors import TemplateError
from gateway.templates.registry import TemplateRegistry
from gateway.templates.spec import LABEL, canonical, content_hash, parse_spec
from gateway.templates.versions import TemplateVersion, change_view, check_spec, diff_versions
from gateway.timeutil import iso
from gateway.web.body import read_body


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Canary(_Body):
    version: Annotated[int, Field(ge=1)]
    percent: Annotated[float, Field(gt=0, lt=100)]


class LabelBody(_Body):
    version: Annotated[int, Field(ge=1)]
    canary: Canary | None = None


class RenderBody(_Body):
    version: Annotated[int, Field(ge=1)] | None = None
    label: str | None = None
    variables: dict[str, Any] | None = None
    user: Annotated[str, Field(max_length=256)] | None = None

    @field_validator("label")
    @classmethod
    def _label_shape(cls, value: str | None) -> str | None:
        if value is not None and not LABEL.match(value):
            raise ValueError("not a label name")
        return value


async def _registry(request: Request) -> TemplateRegistry:
    """The registry, brought up to date first (changes made on other replicas or by
    `gateway templates sync`): admin calls are rare, the request path never waits for this."""
    reg = services(request).templates
    await reg.refresh()
    return reg


_MISSING = ("template_not_found", "template_version_not_found", "template_label_not_found")


def _read(fn: Any, *args: Any) -> Any:
    """A registry read for a path: what does not exist is a 404."""
    try:
        return fn(*args)
    except TemplateError as exc:
        if exc.code in _MISSING:
            raise exc.as_not_found() from None
        raise


def _labels_at(reg: TemplateRegistry, name: str, version: int) -> list[str]:
    return [lab.label for lab in reg.labels_of(name).values()
            if version in (lab.version, lab.canary_version)]


def _view(reg: TemplateRegistry, found: TemplateVersion) -> dict[str, Any]:
    return found.view(_labels_at(reg, found.name, found.version))


def _label_change(reg: TemplateRegistry, name: str, label: str) -> dict[str, Any] | None:
    found = reg.labels_of(name).get(label)
    return None if found is None else found.change_view()


def _int_query(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidRequest(f"{excerpt(key)} must be a positive integer", param=key,
                             code="invalid_value")
    return value


async def _spec_body(request: Request, name: str | None = None) -> tuple[Any, dict[str, Any]]:
    body = parse_object(await read_body(request, services(request).config.server.max_body_bytes))
    if name is not None:
        given = body.setdefault("name", name)
        if given != name:
            raise InvalidRequest(f"the body names {excerpt(given)}, the path {excerpt(name)}",
                                 param="name", code="invalid_value")
    spec = parse_spec(body)
    doc = canonical(spec)
    if spec.model is not None and spec.model not in services(request).router.slots:
        raise InvalidRequest(f"unknown model {excerpt(spec.model)}", param="model",
                             code="invalid_value")
    check_spec(services(request).templates.env, spec, doc)
    return spec, doc


@admin_endpoint()
async def list_templates(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    data = []
    for name in reg.names():
        latest = reg.latest(name)
        data.append({"name": name, "description": latest.doc.get("description"),
                     "latest_version": latest.version,
                     "labels": {lab.label: lab.version for lab in reg.labels_of(name).values()}})
    return json_response({"data": data})


@admin_endpoint(audited=True, action="template.create", target_type="template")
async def create_template(request: Request, principal: Principal) -> Response:
    spec, doc = await _spec_body(request)
    reg = await _registry(request)
    try:
        row = await reg.store.add_version(doc, content_hash(doc), author=principal.key_id,
                                          first=True)
    except TemplateExists:
        raise Conflict(f"a template named {excerpt(spec.name)} exists already: add a version with "
                       f"POST /admin/templates/{spec.name}/versions", param="name",
                       code="template_exists") from None
    await reg.reload()
    created = reg.get(spec.name, row["version"])
    record_change(request, None, change_view(created), target_id=spec.name,
                  target_name=spec.name)
    return json_response(_view(reg, created), status_code=201)


@admin_endpoint()
async def get_template(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    version = _int_query(request, "version")
    label = request.query_params.get("label")
    if version is not None and label is not None:
        raise InvalidRequest("give 'version' or 'label', not both", param="label",
                             code="invalid_value")
    if version is not None:
        found = _read(reg.get, name, version)
    elif label is not None:
        labelled = _read(reg.label, name, label)
        found = _read(reg.get, name, labelled.version)
    else:
        found = _read(reg.latest, name)
    return json_response(_view(reg, found))


@admin_endpoint(audited=True, action="template.version.create", target_type="template",
                target_param="name")
async def add_version(request: Request, principal: Principal) -> Response:
    name = request.path_params["name"]
    reg = await _registry(request)
    _read(reg.versions_of, name)
    previous = reg.latest(name)
    spec, doc = await _spec_body(request, name)
    try:
        row = await reg.store.add_version(doc, content_hash(doc), author=principal.key_id,
                                          first=False)
    except TemplateMissing:
        raise TemplateError(f"unknown template {excerpt(name)}", code="template_not_found",
                            param="name").as_not_found() from None
    await reg.reload()
    created = reg.get(spec.name, row["version"])
    record_change(request, change_view(previous), change_view(created),
                  target_name=name)
    return json_response(_view(reg, created), status_code=201)


@admin_endpoint()
async def list_versions(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    versions = _read(reg.versions_of, name)
    data = []
    for version in sorted(versions, reverse=True):
        view = _view(reg, versions[version])
        del view["messages"], view["variables"]
        data.append(view)
    return json_response({"data": data})


@admin_endpoint(audited=True, action="template.label.set", target_type="template",
                target_param="name")
async def set_label(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    label = request.path_params["label"]
    if not LABEL.match(label):
        raise InvalidRequest("a label is 1-64 letters, digits, '.', '_' or '-'", param="label",
                             code="invalid_value")
    versions = _read(reg.versions_of, name)
    body = await parse_model(request, LabelBody)
    for where, version in (("version", body.version),
                           ("canary.version", body.canary.version if body.canary else None)):
        if version is not None and version not in versions:
            raise TemplateError(f"template {excerpt(name)} has no version {version}",
                                code="template_version_not_found", param=where)
    canary_version = canary_percent = None
    if body.canary is not None:
        if body.canary.version == body.version:
            raise InvalidRequest("the canary version must differ from the label's version",
                                 param="canary.version", code="invalid_value")
        canary_version, canary_percent = body.canary.version, body.canary.percent
    before = _label_change(reg, name, label)
    await reg.store.set_label(name, label, body.version, canary_version, canary_percent,
                              principal.key_id)
    await reg.reload()
    record_change(request, before, _label_change(reg, name, label), target_name=name)
    return json_response(reg.label(name, label).view())


@admin_endpoint()
async def list_labels(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    _read(reg.versions_of, name)
    labels = reg.labels_of(name)
    return json_response({"data": [labels[k].view() for k in sorted(labels)]})


@admin_endpoint(audited=True, action="template.label.delete", target_type="template",
                target_param="name")
async def delete_label(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    label = request.path_params["label"]
    _read(reg.label, name, label)
    before = _label_change(reg, name, label)
    await reg.store.delete_label(name, label, principal.key_id)
    await reg.reload()
    record_change(request, before, None, target_name=name)
    return Response(status_code=204)


@admin_endpoint()
async def history(request: Request, principal: Principal) -> Response:
    """`{"data": [{"kind": "version"|"label"|"unlabel", "version", "label", "canary",
    "source", "path", "actor", "at"}]}`, newest first: who created which version and moved
    which label when (`actor` is a key id, `cli`, or null for a prompt file)."""
    reg = await _registry(request)
    name = request.path_params["name"]
    _read(reg.versions_of, name)
    data = []
    for row in await reg.store.history(name):
        detail = row["detail"] if isinstance(row["detail"], dict) else {}
        canary = None
        if detail.get("canary_version") is not None:
            canary = {"version": detail["canary_version"], "percent": detail["canary_percent"]}
        data.append({"kind": row["kind"], "version": row["version"], "label": row["label"],
                     "canary": canary, "source": detail.get("source"),
                     "path": detail.get("path"), "actor": row["actor"], "at": iso(row["at"])})
    return json_response({"data": data})


@admin_endpoint()
async def diff(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    a, b = _int_query(request, "from"), _int_query(request, "to")
    if a is None or b is None:
        missing = "from" if a is None else "to"
        raise InvalidRequest(f"missing required parameter: {excerpt(missing)}", param=missing,
                             code="missing_required_parameter")
    old = _read(reg.get, name, a)
    new = _read(reg.get, name, b)
    return json_response({"name": name, "from": a, "to": b, "diff": diff_versions(old, new)})


@admin_endpoint()
async def render_preview(request: Request, principal: Principal) -> Response:
    reg = await _registry(request)
    name = request.path_params["name"]
    _read(reg.versions_of, name)
    body = await parse_model(request, RenderBody)
    if body.version is not None and body.label is not None:
        raise InvalidRequest("give 'version' or 'label', not both", param="label",
                             code="invalid_value")
    found = reg.resolve(name, version=body.version, label=body.label, user=body.user)
    messages = await reg.render(found, body.variables)
    return json_response({"name": name, "version": found.version, "model": found.model,
                          "params": dict(found.params), "messages": messages})


routes = [
    Route("/admin/templates", list_templates, methods=["GET"]),
    Route("/admin/templates", create_template, methods=["POST"]),
    Route("/admin/templates/{name}", get_template, methods=["GET"]),
    Route("/admin/templates/{name}/versions", add_version, methods=["POST"]),
    Route("/admin/templates/{name}/versions", list_versions, methods=["GET"]),
    Route("/admin/templates/{name}/labels", list_labels, methods=["GET"]),
    Route("/admin/templates/{name}/labels/{label}", set_label, methods=["PUT"]),
    Route("/admin/templates/{name}/labels/{label}", delete_label, methods=["DELETE"]),
    Route("/admin/templates/{name}/diff", diff, methods=["GET"]),
    Route("/admin/templates/{name}/history", history, methods=["GET"]),
    Route("/admin/templates/{name}/render", render_preview, methods=["POST"]),
]
