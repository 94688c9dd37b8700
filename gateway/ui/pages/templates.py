"""Prompt templates: list, view a version, compare any two, edit, preview a render, move
labels (promote, roll back, canary) with their history."""

from __future__ import annotations

import difflib
import json
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import YamlProblem, load_yaml
from gateway.templates.spec import to_yaml
from gateway.ui.forms import META, form_of, text_field
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import redirect, render


def _doc(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in META}


async def _version_stats(request: Request, name: str) -> dict[int, dict[str, Any]]:
    """Requests, tokens and cost per version, from the audit events of this template."""
    rows = (await api(request, "GET", "/audit/events",
                      query={"template_name": name, "limit": "1000"}))["data"]
    stats: dict[int, dict[str, Any]] = {}
    for row in rows:
        version = row.get("template_version")
        if version is None:
            continue
        s = stats.setdefault(version, {"requests": 0, "tokens": 0, "cost_usd": 0.0})
        s["requests"] += 1
        s["tokens"] += row.get("total_tokens") or 0
        s["cost_usd"] += row.get("cost_usd") or 0.0
    return stats


async def templates_list(request: Request) -> Response:
    data = (await api(request, "GET", "/admin/templates"))["data"]
    return render(request, "templates.html", templates=data)


def actor_name(actor: str | None, names: dict[str, str]) -> str:
    """Who made a template change, for a person."""
    if actor is None:
        return "a prompt file"
    if actor == "bootstrap":
        return "bootstrap admin key"
    if actor == "cli":
        return "the gateway CLI"
    return names.get(actor, actor)


def version_tags(labels: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Each version's label tags, a canary said as one: during a canary the label's version
    serves `100 - P`% and the canary version `P`% (never two plain "production" tags)."""
    tags: dict[int, list[dict[str, Any]]] = {}
    for lab in labels:
        canary = lab.get("canary")
        if canary:
            share = 100 - float(canary["percent"])
            tags.setdefault(lab["version"], []).append(
                {"text": f"{lab['label']} · {share:g}%", "canary": False})
            tags.setdefault(canary["version"], []).append(
                {"text": f"{lab['label']} canary · {float(canary['percent']):g}%",
                 "canary": True})
        else:
            tags.setdefault(lab["version"], []).append({"text": lab["label"], "canary": False})
    return tags


def rollback_targets(labels: list[dict[str, Any]], history: list[dict[str, Any]]
                     ) -> dict[str, int]:
    """Per label, the version it pointed at before its current one (from the history)."""
    out: dict[str, int] = {}
    for lab in labels:
        previous = next((h["version"] for h in history if h["kind"] == "label"
                         and h["label"] == lab["label"] and h["version"] != lab["version"]),
                        None)
        if previous is not None:
            out[lab["label"]] = previous
    return out


async def _template_page(request: Request, name: str, version: int | None, *,
                         rendered: Any = None, render_error: str | None = None,
                         label_error: str | None = None, variables: Any = None,
                         status: int = 200, done: str | None = None) -> Response:
    query = {"version": str(version)} if version else None
    current = await api(request, "GET", f"/admin/templates/{name}", query=query)
    versions = (await api(request, "GET", f"/admin/templates/{name}/versions"))["data"]
    labels = (await api(request, "GET", f"/admin/templates/{name}/labels"))["data"]
    history = (await api(request, "GET", f"/admin/templates/{name}/history"))["data"]
    names = {k["id"]: k["name"] for k in (await api(request, "GET", "/admin/keys"))["data"]}
    stats = await _version_stats(request, name)
    created = {h["version"]: h for h in history if h["kind"] == "version"}
    numbers = [v["version"] for v in versions]
    compare_from = _positive(request.query_params.get("from", ""))
    compare_to = _positive(request.query_params.get("to", ""))
    diff = None
    if compare_from and compare_to:
        try:
            diff = (await api(request, "GET", f"/admin/templates/{name}/diff",
                              query={"from": str(compare_from), "to": str(compare_to)}
                              ))["diff"] or "(the two versions are the same)"
        except ApiError as exc:
            if exc.status == 403:
                raise
            diff = f"(cannot compare: {exc.message})"
    return render(request, "template.html", status=status, name=name, current=current,
                  source=to_yaml(_doc(current)), versions=versions, labels=labels,
                  stats=stats, rendered=rendered, render_error=render_error,
                  label_error=label_error, values=variables or {}, history=history,
                  tags=version_tags(labels), rollback=rollback_targets(labels, history),
                  created=created, actor=lambda a: actor_name(a, names), done=done,
                  production=next((lab for lab in labels if lab["label"] == "production"),
                                  None),
                  compare_from=compare_from or (numbers[-1] if numbers else None),
                  compare_to=compare_to or (numbers[0] if numbers else None), diff=diff,
                  origin=_origin(current, created.get(current["version"]), names))


def _origin(current: dict[str, Any], made: dict[str, Any] | None, names: dict[str, str]
            ) -> str:
    """Where a version came from: `prompt file prompts/x.yaml`, or `by <key name>`."""
    if current.get("source") == "file":
        path = (made or {}).get("path")
        return f"from the prompt file {path}" if path else "from a prompt file"
    return "by " + actor_name(current.get("author_key_id"), names)


def _positive(raw: str) -> int | None:
    """A version number from a form or query, or None (int() refuses over 4300 digits)."""
    return int(raw) if raw.isdigit() and len(raw) <= 18 and int(raw) > 0 else None


def _version_param(request: Request) -> int | None:
    return _positive(request.query_params.get("version", ""))


async def template_detail(request: Request) -> Response:
    name = request.path_params["name"]
    moved = request.query_params.get("moved")
    labels = (await api(request, "GET", f"/admin/templates/{name}/labels"))["data"]
    now = next((lab for lab in labels if lab["label"] == moved), None)
    done = None
    if now is not None:
        done = f"Label {now['label']} now points at v{now['version']}"
        if now.get("canary"):
            done += (f", with v{now['canary']['version']} as a canary at "
                     f"{float(now['canary']['percent']):g}%")
        done += ". Running gateways serve it within a few seconds."
    return await _template_page(request, name, _version_param(request), done=done)


def _variables(form: Any, declared: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, spec in (declared or {}).items():
        kind = (spec or {}).get("type", "string")
        field = f"var_{var}"
        if kind == "boolean":
            if text_field(form, f"{field}__present"):
                values[var] = form.get(field) == "on"
            continue
        raw = form.get(field)
        if not isinstance(raw, str) or raw == "":
            continue
        try:
            if kind == "integer":
                values[var] = int(raw)
            elif kind == "number":
                values[var] = float(raw)
            elif kind == "array" and not raw.lstrip().startswith("["):
                values[var] = [line.strip() for line in raw.splitlines() if line.strip()]
            elif kind in ("array", "object"):
                values[var] = json.loads(raw)
            else:
                values[var] = raw
        except (ValueError, RecursionError):  # json.loads recurses once per nesting level
            values[var] = raw  # the API names the ill-typed variable
    return values


async def template_render(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    version = _positive(text_field(form, "version"))
    current = await api(request, "GET", f"/admin/templates/{name}",
                        query={"version": str(version)} if version else None)
    values = _variables(form, current.get("variables") or {})
    rendered, error = None, None
    try:
        rendered = await api(request, "POST", f"/admin/templates/{name}/render",
                             body={"version": current["version"], "variables": values})
    except ApiError as exc:
        if exc.status != 400:
            raise
        error = exc.message
    declared = current.get("variables") or {}
    shown = {k: ("\n".join(str(x) for x in v) if isinstance(v, list)
                 and (declared.get(k) or {}).get("type") == "array"
                 and all(isinstance(x, str) and "\n" not in x for x in v)
                 else json.dumps(v) if isinstance(v, list | dict) else v)
             for k, v in values.items()}
    return await _template_page(request, name, current["version"], rendered=rendered,
                                render_error=error, variables=shown,
                                status=400 if error else 200)


async def template_label(request: Request) -> Response:
    name = request.path_params["name"]
    form = await form_of(request)
    label = text_field(form, "label")
    body: dict[str, Any] = {}
    try:
        body["version"] = int(text_field(form, "version"))
        if text_field(form, "canary_version"):
            body["canary"] = {"version": int(text_field(form, "canary_version")),
                              "percent": float(text_field(form, "canary_percent") or "0")}
    except ValueError:
        return await _template_page(request, name, None, status=400,
                                    label_error="Versions and percent must be numbers.")
    return await _move_label(request, name, label, body)


async def _move_label(request: Request, name: str, label: str, body: dict[str, Any]
                      ) -> Response:
    try:
        await api(request, "PUT", f"/admin/templates/{name}/labels/{quote(label, safe='')}",
                  body=body)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _template_page(request, name, None, label_error=exc.message,
                                    status=exc.status)
    return redirect(f"/ui/templates/{name}?moved={quote(label, safe='')}")


async def template_rollback(request: Request) -> Response:
    """Move a label back to the version it pointed at before (one click)."""
    name = request.path_params["name"]
    form = await form_of(request)
    label = text_field(form, "label")
    labels = (await api(request, "GET", f"/admin/templates/{name}/labels"))["data"]
    history = (await api(request, "GET", f"/admin/templates/{name}/history"))["data"]
    target = rollback_targets(labels, history).get(label)
    if target is None:
        return await _template_page(request, name, None, status=400,
                                    label_error=f"Label {label} has no earlier version to "
                                                "roll back to.")
    return await _move_label(request, name, label, {"version": target})


async def template_edit(request: Request) -> Response:
    name = request.path_params["name"]
    current = await api(request, "GET", f"/admin/templates/{name}")
    return render(request, "template_edit.html", name=name, base=current["version"],
                  source=to_yaml(_doc(current)), diff=None, error=None)


async def template_new(request: Request) -> Response:
    return render(request, "template_edit.html", name=None, base=None,
                  source="name: \ndescription: \nmodel: demo\nvariables: {}\nmessages:\n"
                         "- role: user\n  content: |\n    Hello\n", diff=None, error=None)


def _parse_source(source: str) -> dict[str, Any]:
    try:
        doc = load_yaml(source)
    except YamlProblem as exc:
        raise ApiError(400, {"error": {"message": f"{exc.reason} ({exc.where})"}}) from None
    if not isinstance(doc, dict):
        raise ApiError(400, {"error": {"message": "the template must be a YAML mapping"}})
    return doc


async def template_save(request: Request) -> Response:
    """Step 1 (`action=preview`): the diff against the base version; step 2 (`save`)."""
    name = request.path_params.get("name")
    form = await form_of(request)
    source = form.get("source")
    source = source.replace("\r\n", "\n") if isinstance(source, str) else ""
    action = text_field(form, "action")
    base_view = await api(request, "GET", f"/admin/templates/{name}") if name else None
    base = base_view["version"] if base_view else None
    try:
        doc = _parse_source(source)
        if action != "save":
            old = to_yaml(_doc(base_view)) if base_view else ""
            diff = "".join(difflib.unified_diff(
                old.splitlines(keepends=True), to_yaml(doc).splitlines(keepends=True),
                f"{name} v{base}" if name else "(none)", "new version"))
            return render(request, "template_edit.html", name=name, base=base, source=source,
                          diff=diff or "(no changes)", error=None)
        if name:
            doc.setdefault("name", name)
            saved = await api(request, "POST", f"/admin/templates/{name}/versions", body=doc)
        else:
            saved = await api(request, "POST", "/admin/templates", body=doc)
    except ApiError as exc:
        if exc.status == 403:
            raise
        return render(request, "template_edit.html", status=exc.status, name=name, base=base,
                      source=source, diff=None, error=exc.message)
    return redirect(f"/ui/templates/{saved['name']}?version={saved['version']}")
