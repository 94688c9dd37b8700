"""Policies: the files (edited safely: checked and dry-run before saving), the effective
policy of a key with every source, reload, and a dry run of the PII rules on a text."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from gateway.ui.forms import form_of, text_field
from gateway.ui.inprocess import ApiError, api
from gateway.ui.web import redirect, render

NEW_POLICY = ("name: {name}\napplies_to: {{teams: [], keys: []}}\n"
              "pii:\n  input: {{email: redact}}\n")


async def _page(request: Request, *, status: int = 200, dry: Any = None,
                dry_error: str | None = None, text: str = "", policy: str = "default",
                done: str | None = None, reload_error: str | None = None) -> Response:
    key_id = request.query_params.get("key_id", "").strip()
    effective, error = None, None
    if key_id:
        try:
            effective = await api(request, "GET", "/admin/policies/effective",
                                  query={"key_id": key_id})
        except ApiError as exc:
            if exc.status == 403:
                raise
            error = exc.message
    files = await api(request, "GET", "/admin/policies/files")
    keys = (await api(request, "GET", "/admin/keys"))["data"]
    saved = request.query_params.get("saved")
    if done is None and saved in {f["name"] for f in files["data"]}:
        done = f"Policy {saved} saved and reloaded: new requests follow it now."
    return render(request, "policies.html", status=status, key_id=key_id, error=error,
                  effective=effective, files=files, keys=keys, dry=dry, dry_error=dry_error,
                  text=text, policy=policy, done=done, reload_error=reload_error)


async def policies(request: Request) -> Response:
    return await _page(request)


async def policy_dry_run(request: Request) -> Response:
    form = await form_of(request)
    text = form.get("text") if isinstance(form.get("text"), str) else ""
    policy = text_field(form, "policy") or "default"
    dry, error = None, None
    try:
        dry = await api(request, "POST", "/admin/policies/dry-run",
                        body={"text": text, "policy": policy})
    except ApiError as exc:
        if exc.status == 403:
            raise
        error = exc.message
    return await _page(request, status=400 if error else 200, dry=dry, dry_error=error,
                       text=text or "", policy=policy)


async def policy_reload(request: Request) -> Response:
    try:
        reloaded = await api(request, "POST", "/admin/policies/reload")
    except ApiError as exc:
        if exc.status == 403:
            raise
        return await _page(request, status=exc.status, reload_error=exc.message)
    return await _page(request, done="Reloaded from disk: " + (", ".join(
        reloaded["policies"]) or "no policies") + ".")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def policy_edit(request: Request) -> Response:
    """The editor: the file as it is (or a new policy's skeleton)."""
    name = request.path_params.get("name") or text_field(
        request.query_params, "name")
    if not name:
        return render(request, "policy_edit.html", name=None, source="", base="",
                      result=None, checked="", sample="", error=None)
    try:
        found = await api(request, "GET", f"/admin/policies/files/{quote(name, safe='')}")
        source, base = found["source"], found["sha256"]
    except ApiError as exc:
        if exc.status != 404:
            raise
        source, base = NEW_POLICY.format(name=name), ""
    return render(request, "policy_edit.html", name=name, source=source, base=base,
                  result=None, checked="", sample="", error=None)


async def policy_save(request: Request) -> Response:
    """Step 1 (`check`): the edit checked, its diff, who it applies to and the PII dry run;
    step 2 (`save`), only for the very text that was checked."""
    form = await form_of(request)
    name = request.path_params.get("name") or text_field(form, "name")
    source = form.get("source")
    source = source.replace("\r\n", "\n") if isinstance(source, str) else ""
    sample = form.get("sample") if isinstance(form.get("sample"), str) else ""
    base = text_field(form, "base_sha256")
    action = text_field(form, "action")
    if not name:
        return render(request, "policy_edit.html", status=400, name=None, source=source,
                      base="", result=None, checked="", sample=sample,
                      error="Give the new policy a name.")
    path = f"/admin/policies/files/{quote(name, safe='')}"
    if action == "save" and text_field(form, "checked") == _sha(source):
        try:
            await api(request, "PUT", path, body={"source": source, "base_sha256": base or None})
        except ApiError as exc:
            if exc.status == 403:
                raise
            return render(request, "policy_edit.html", status=exc.status, name=name,
                          source=source, base=base, result=None, checked="", sample=sample,
                          error=exc.message)
        return redirect(f"/ui/policies?saved={quote(name, safe='')}")
    try:
        result = await api(request, "POST", f"{path}/check",
                           body={"source": source, **({"text": sample} if sample else {})})
    except ApiError as exc:
        if exc.status == 403:
            raise
        return render(request, "policy_edit.html", status=exc.status, name=name,
                      source=source, base=base, result=None, checked="", sample=sample,
                      error=exc.message)
    return render(request, "policy_edit.html", status=200 if result["ok"] else 400,
                  name=name, source=source, base=base, result=result, sample=sample,
                  checked=_sha(source) if result["ok"] else "", error=None)
