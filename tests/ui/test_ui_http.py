"""`/ui` over plain HTTP (httpx against a real gateway): headers, cookies, CSRF, roles,
sign-in rate limiting and its audit events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.gateway_proc import GatewayProcess

CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
"""
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    g = GatewayProcess(tmp_path_factory.mktemp("ui-http"), CONFIG).start()
    yield g
    g.stop()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def sign_in(gw: GatewayProcess, key: str, headers: dict[str, str] | None = None
            ) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30,
                          headers=headers or {})
    form = client.get("/ui/login")
    assert form.status_code == 200
    r = client.post("/ui/login", data={"csrf_token": csrf_of(form.text), "key": key})
    return client, r


def test_security_headers_on_pages_and_static(gw: GatewayProcess) -> None:
    client, r = sign_in(gw, gw.admin_key)
    assert r.status_code == 303 and r.headers["location"] == "/ui"
    for path in ("/ui/login", "/ui/audit", "/ui/keys", "/ui/spend", "/ui/templates",
                 "/ui/static/ui.js", "/ui/does-not-exist"):
        resp = client.get(path)
        assert resp.headers["content-security-policy"] == CSP, path
        assert resp.headers["x-content-type-options"] == "nosniff", path
        assert resp.headers["referrer-policy"] == "no-referrer", path
        if not path.startswith("/ui/static"):
            assert resp.headers["cache-control"] == "no-store", path
    page = client.get("/ui/audit").text
    assert '<html lang="en">' in page and "<main" in page and "<nav" in page
    assert "<script>" not in page and " style=" not in page and "onclick" not in page


def test_session_cookie_flags_and_no_key_anywhere(gw: GatewayProcess) -> None:
    client, r = sign_in(gw, gw.admin_key)
    cookie = r.headers["set-cookie"]
    assert "gw_ui_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/ui" in cookie and "Max-Age=28800" in cookie
    assert "Secure" not in cookie
    assert gw.admin_key not in cookie
    for path in ("/ui/audit", "/ui/keys", "/ui/teams", "/ui/spend", "/ui/policies"):
        assert gw.admin_key not in client.get(path).text
    # behind a TLS proxy: both cookies get Secure (httpx would not send them back over
    # plain http, so the login cookie is passed by hand)
    proxied = httpx.Client(base_url=gw.url, headers={"x-forwarded-proto": "https"})
    form = proxied.get("/ui/login")
    login_cookie = form.headers["set-cookie"]
    assert "Secure" in login_cookie and "HttpOnly" in login_cookie
    value = login_cookie.split(";")[0]
    https = httpx.post(gw.url + "/ui/login", headers={"x-forwarded-proto": "https",
                                                      "cookie": value},
                       data={"csrf_token": csrf_of(form.text), "key": gw.admin_key})
    assert https.status_code == 303
    session_cookie = [c for c in https.headers.get_list("set-cookie") if "gw_ui_session" in c]
    assert "Secure" in session_cookie[0] and "SameSite=strict" in session_cookie[0]


def test_signed_out_pages_redirect_and_sign_out_ends_session(gw: GatewayProcess) -> None:
    anon = httpx.Client(base_url=gw.url, follow_redirects=False)
    assert anon.get("/ui/audit").status_code == 303
    assert anon.get("/ui/audit/export?format=csv").status_code == 303
    client, _ = sign_in(gw, gw.admin_key)
    csrf = csrf_of(client.get("/ui/audit").text)
    assert client.post("/ui/logout", data={"csrf_token": csrf}).status_code == 303
    r = client.get("/ui/audit")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"


def test_post_without_or_with_wrong_csrf_token_is_refused(gw: GatewayProcess) -> None:
    client, _ = sign_in(gw, gw.admin_key)
    before = len(gw.admin("GET", "/admin/keys").json()["data"])
    assert client.post("/ui/keys", data={"name": "no-token"}).status_code == 403
    assert client.post("/ui/keys", data={"name": "bad", "csrf_token": "x" * 43}
                       ).status_code == 403
    assert client.post("/ui/keys", data={"name": "bad", "csrf_token": "é" * 43}
                       ).status_code == 403
    assert len(gw.admin("GET", "/admin/keys").json()["data"]) == before
    anon = httpx.Client(base_url=gw.url, follow_redirects=False)
    assert anon.post("/ui/login", data={"key": gw.admin_key}).status_code == 403
    # with the token the same form works
    csrf = csrf_of(client.get("/ui/keys").text)
    ok = client.post("/ui/keys", data={"name": "with-token", "csrf_token": csrf})
    assert ok.status_code == 200 and 'id="new-secret"' in ok.text
    secret = re.search(r'id="new-secret" readonly value="([^"]+)"', ok.text).group(1)
    assert secret not in client.get("/ui/keys").text  # shown once only


def test_compliance_role_sees_no_admin_pages_and_is_refused(gw: GatewayProcess) -> None:
    key = gw.create_key(name="ui-compliance", role="compliance")["key"]
    client, r = sign_in(gw, key)
    assert r.status_code == 303
    audit = client.get("/ui/audit")
    assert audit.status_code == 200
    assert 'href="/ui/keys"' not in audit.text and 'href="/ui/templates"' not in audit.text
    assert 'href="/ui/spend"' in audit.text
    for path in ("/ui/keys", "/ui/teams", "/ui/templates", "/ui/policies"):
        assert client.get(path).status_code == 403, path
    csrf = csrf_of(audit.text)
    assert client.post("/ui/keys", data={"name": "x", "csrf_token": csrf}).status_code == 403
    assert client.post("/ui/templates/new", data={"csrf_token": csrf, "source": "name: x",
                                                  "action": "save"}).status_code == 403
    assert client.get("/ui/spend").status_code == 200
    app_key = gw.create_key(name="ui-app", role="app")["key"]
    _, refused = sign_in(gw, app_key)
    assert refused.status_code == 403
    assert not any("gw_ui_session" in c for c in refused.headers.get_list("set-cookie"))


def test_revoked_key_ends_its_session(gw: GatewayProcess) -> None:
    made = gw.create_key(name="ui-admin-2", role="admin")
    client, _ = sign_in(gw, made["key"])
    assert client.get("/ui/keys").status_code == 200
    assert gw.admin("DELETE", f"/admin/keys/{made['id']}").status_code in (200, 204)
    r = client.get("/ui/keys")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"


def test_sign_in_attempts_are_rate_limited_and_audited(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, CONFIG).start()
    try:
        statuses = [sign_in(g, f"wrong-key-{i}")[1].status_code for i in range(5)]
        assert statuses == [401] * 5
        _, blocked = sign_in(g, g.admin_key)  # even the right key, from this IP, for now
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        rows = g.wait_for_audit("endpoint = 'POST /ui/login'", count=6)
        assert sorted(r["status_code"] for r in rows) == [401] * 5 + [429]
        assert all(r["key_id"] is None for r in rows)
        assert not any("wrong-key" in str(v) for r in rows for v in r.values())
    finally:
        g.stop()


def test_successful_sign_in_is_audited_with_the_key_id(tmp_path: Path) -> None:
    g = GatewayProcess(tmp_path, CONFIG).start()
    try:
        made = g.create_key(name="ui-auditor", role="compliance")
        _, ok = sign_in(g, made["key"])
        assert ok.status_code == 303
        rows = g.wait_for_audit("endpoint = 'POST /ui/login'", count=1)
        assert rows[0]["status_code"] == 303 and rows[0]["key_id"] == made["id"]
    finally:
        g.stop()


def test_compliance_key_of_a_team_sees_only_its_team_spend(gw: GatewayProcess) -> None:
    import openai

    for team in ("ui-spend-a", "ui-spend-b"):
        gw.create_team(name=team)
        key = gw.create_key(name=f"app-{team}", team=team)["key"]
        openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "hello"}])
    admin, _ = sign_in(gw, gw.admin_key)
    everything = admin.get("/ui/spend").text
    assert "ui-spend-a" in everything and "ui-spend-b" in everything
    auditor = gw.create_key(name="ui-spend-auditor", role="compliance", team="ui-spend-a")
    client, _ = sign_in(gw, auditor["key"])
    page = client.get("/ui/spend")
    assert page.status_code == 200
    assert "ui-spend-a" in page.text and "ui-spend-b" not in page.text
