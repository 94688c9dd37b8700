"""`/ui` authorisation is the API's, re-checked on every request: a session never outlives
its key's role, team or revocation, on any UI route (the route table is enumerated, so a
route added later is covered without editing this file)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import openai
import pytest
from starlette.routing import Mount, Route

from gateway.ui import routes as ui_routes
from tests.support.gateway_proc import GatewayProcess
from tests.ui.test_ui_http import CONFIG, csrf_of, sign_in

# The only `/ui` routes a caller without a session may use.
PUBLIC = {("GET", "/ui/login"), ("POST", "/ui/login"), ("GET", "/ui/{rest:path}"),
          ("POST", "/ui/{rest:path}")}


def ui_endpoints() -> list[tuple[str, str]]:
    """Every (method, path) the UI serves behind a session, path parameters filled in."""
    out = []
    for route in ui_routes.routes:
        if isinstance(route, Mount):
            continue  # static files: public by design, no data
        assert isinstance(route, Route), route
        for method in sorted(route.methods or ()):
            if method == "HEAD" or (method, route.path) in PUBLIC:
                continue
            out.append((method, re.sub(r"\{[^}]+\}", "x", route.path)))
    return out


ENDPOINTS = ui_endpoints()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path_factory.mktemp("ui-access"), CONFIG).start()
    yield g
    g.stop()


def signed_in(gw: GatewayProcess, key: str) -> tuple[httpx.Client, str]:
    """A fresh session for `key`, and its CSRF token."""
    client, r = sign_in(gw, key)
    assert r.status_code == 303, r.text
    page = client.get("/ui/audit")
    assert page.status_code == 200
    return client, csrf_of(page.text)


def is_refused(method: str, r: httpx.Response) -> bool:
    """Refused: a 403 page, or (GET) back to the sign-in form; never data, never a 500."""
    if r.status_code == 403:
        return True
    return method == "GET" and r.status_code == 303 and r.headers["location"] == "/ui/login"


def send(client: httpx.Client, method: str, path: str, csrf: str) -> httpx.Response:
    if method == "POST":
        return client.post(path, data={"csrf_token": csrf, "name": "x", "source": "name: x",
                                       "action": "save", "text": "hi", "version": "1"})
    return client.get(path, params={"format": "jsonl"} if path.endswith("/export") else None)


def test_the_route_table_is_what_this_file_checks() -> None:
    assert ("GET", "/ui/audit/export") in ENDPOINTS and ("POST", "/ui/keys") in ENDPOINTS
    assert len(ENDPOINTS) >= 25
    assert all(path.startswith("/ui") for _, path in ENDPOINTS)


@pytest.mark.parametrize("change", ["demoted-to-app", "revoked"])
def test_every_ui_route_refuses_a_session_whose_key_lost_its_rights(
        gw: GatewayProcess, change: str) -> None:
    made = gw.create_key(name=f"ui-{change}", role="admin")
    sessions = [signed_in(gw, made["key"]) for _ in ENDPOINTS]  # one fresh session per route
    client, _ = sessions[0]
    assert client.get("/ui/keys").status_code == 200
    assert client.get("/ui/audit/export", params={"format": "jsonl"}).status_code == 200
    if change == "revoked":
        assert gw.admin("DELETE", f"/admin/keys/{made['id']}").status_code in (200, 204)
    else:
        r = gw.admin("PATCH", f"/admin/keys/{made['id']}", {"role": "app"})
        assert r.status_code == 200, r.text
    answers = {}
    for (method, path), (session, csrf) in zip(ENDPOINTS, sessions, strict=True):
        r = send(session, method, path, csrf)
        answers[f"{method} {path}"] = (r.status_code, r.headers.get("location"))
        assert is_refused(method, r), (method, path, r.status_code, r.text[:300])
        assert "application/x-ndjson" not in r.headers.get("content-type", "")
        # and the session is over: the next page goes back to the sign-in form
        again = session.get("/ui/audit")
        assert again.status_code == 303 and again.headers["location"] == "/ui/login"
    assert all(status != 500 for status, _ in answers.values()), answers
    # each refused form post is one audit event of the key (a page view is a read: none)
    posts = sorted(f"POST {route.path}" for route in ui_routes.routes
                   if isinstance(route, Route) and route.methods == {"POST"}
                   and ("POST", route.path) not in PUBLIC)
    rows = gw.wait_for_audit("key_id = :k AND endpoint LIKE 'POST /ui/%' AND status_code = 403",
                             {"k": made["id"]}, count=len(posts))
    assert sorted(r["endpoint"] for r in rows) == posts


def test_a_refused_form_post_is_audited_once(gw: GatewayProcess) -> None:
    made = gw.create_key(name="ui-compliance-poster", role="compliance")
    client, csrf = signed_in(gw, made["key"])
    assert client.post("/ui/keys", data={"csrf_token": csrf, "name": "x"}).status_code == 403
    assert client.post("/ui/teams", data={"csrf_token": "wrong", "name": "x"}
                       ).status_code == 403
    rows = gw.wait_for_audit("key_id = :k AND endpoint LIKE 'POST /ui/%' "
                             "AND endpoint <> 'POST /ui/login'", {"k": made["id"]}, count=2)
    assert {(r["endpoint"], r["status_code"], r["error_code"]) for r in rows} == {
        ("POST /ui/keys", 403, "endpoint_not_allowed"),
        ("POST /ui/teams", 403, "csrf_failed")}


def test_an_admin_demoted_to_compliance_keeps_reading_but_loses_admin_pages(
        gw: GatewayProcess) -> None:
    made = gw.create_key(name="ui-demoted-to-compliance", role="admin")
    sessions = {e: signed_in(gw, made["key"]) for e in ENDPOINTS}
    r = gw.admin("PATCH", f"/admin/keys/{made['id']}", {"role": "compliance"})
    assert r.status_code == 200, r.text
    client, _ = sessions[("GET", "/ui/keys")]
    assert client.get("/ui/keys").status_code == 403
    page = client.get("/ui/audit")
    assert page.status_code == 200 and 'href="/ui/keys"' not in page.text  # nav follows
    assert "(compliance" in page.text
    assert client.get("/ui/audit/export", params={"format": "jsonl"}).status_code == 200
    for (method, path), (session, csrf) in sessions.items():
        if path.startswith(("/ui/keys", "/ui/teams", "/ui/templates", "/ui/policies")):
            r = send(session, method, path, csrf)
            assert r.status_code == 403, (method, path, r.status_code)


def test_a_ui_export_follows_the_keys_current_team(gw: GatewayProcess) -> None:
    for team in ("ui-team-a", "ui-team-b"):
        gw.create_team(name=team)
        key = gw.create_key(name=f"app-{team}", team=team)["key"]
        sdk = openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0)
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    gw.wait_for_audit("team IN ('ui-team-a', 'ui-team-b')", count=2)
    auditor = gw.create_key(name="ui-team-auditor", role="compliance", team="ui-team-a")
    client, _ = signed_in(gw, auditor["key"])

    def teams_exported() -> set[str]:
        r = client.get("/ui/audit/export", params={"format": "jsonl"})
        assert r.status_code == 200, r.text
        return {json.loads(line)["team"] for line in r.text.splitlines() if line}

    assert teams_exported() == {"ui-team-a"}
    r = gw.admin("PATCH", f"/admin/keys/{auditor['id']}", {"team": "ui-team-b"})
    assert r.status_code == 200, r.text
    assert teams_exported() == {"ui-team-b"}
