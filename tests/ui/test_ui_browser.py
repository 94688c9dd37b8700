"""`/ui` in a real browser: Playwright driving Debian's Chromium against a real gateway.

Admin: sign in, create a template and a new version (diff shown before saving), preview a
render, promote the version with a label, call it with the official `openai` client, find the
call in the audit explorer with its template version, export it, verify the chain.
Compliance (one team): cannot see another team's events. XSS payloads in a template and in a
request body show as text. Screenshots of each page go to `test-output/screenshots/`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.gateway_proc import GatewayProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
"""
XSS_TEMPLATE = "<script>alert('tpl-xss')</script><img src=x onerror=alert('tpl-img')>"
XSS_BODY = "<img src=x onerror=alert('body-xss')><script>alert('body-script')</script>"


def _ensure_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False,
                       capture_output=True, timeout=600)
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("ui-browser")
    (work / "policies").mkdir()
    (work / "policies" / "default.yaml").write_text(
        "name: default\npii: {input: {email: redact}}\n")
    g = GatewayProcess(work, CONFIG).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _ensure_chromium()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class Session:
    """A browser context signed in to the UI; records every JS dialog and console error."""

    def __init__(self, browser: Any, gw: GatewayProcess, key: str, *,
                 width: int = 1280) -> None:
        self.context = browser.new_context(base_url=gw.url, accept_downloads=True,
                                           viewport={"width": width, "height": 900})
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.csp_violations: list[str] = []

        def on_dialog(dialog: Any) -> None:
            if dialog.type == "confirm" and dialog.message.startswith("Revoke this key"):
                dialog.accept()  # the UI's own confirmation step
                return
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.on("console", lambda m: self.csp_violations.append(m.text)
                     if "Content Security Policy" in m.text else None)
        self.page.goto("/ui/login")
        self.page.get_by_label("Admin or compliance key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()
        assert "/ui/login" not in self.page.url, self.page.content()[:2000]

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


def template_yaml(name: str, greeting: str) -> str:
    return (f"name: {name}\ndescription: Greets someone {XSS_TEMPLATE}\nmodel: demo\n"
            "variables:\n  who: {type: string, required: true, max_length: 200}\n"
            f"messages:\n- role: system\n  content: \"{greeting} {XSS_TEMPLATE}\"\n"
            "- role: user\n  content: 'Say hello to {{ who }}'\n")


def test_admin_template_to_audit_export_and_verify(browser: Any, gw: GatewayProcess) -> None:
    name = "greet-" + uuid.uuid4().hex[:6]
    s = Session(browser, gw, gw.admin_key)
    page = s.page
    try:
        # a new template (v1) through the editor, with the diff step before saving
        page.goto("/ui/templates/new")
        page.get_by_label("Template (YAML").fill(template_yaml(name, "Be kind."))
        page.get_by_role("button", name="Preview changes").click()
        assert "Be kind." in page.locator("#diff").inner_text()
        page.get_by_role("button", name="Save as new version").click()
        page.wait_for_url(f"**/ui/templates/{name}?version=1")

        # edit -> v2: the diff against v1 is shown before saving
        page.get_by_role("link", name="Edit (new version)").click()
        page.get_by_label("Template (YAML").fill(template_yaml(name, "Be very kind."))
        page.get_by_role("button", name="Preview changes").click()
        diff = page.locator("#diff").inner_text()
        assert "-" in diff and "Be very kind." in diff and "Be kind." in diff
        s.shot("template-diff")
        page.get_by_role("button", name="Save as new version").click()
        page.wait_for_url(f"**/ui/templates/{name}?version=2")

        # the XSS payload in the source shows as text
        assert XSS_TEMPLATE in page.locator("#template-source").inner_text()

        # preview a render with the form built from the declared variables
        page.get_by_label("who").fill("Ada <b>bold</b>")
        page.get_by_role("button", name="Preview", exact=True).click()
        rendered = page.locator("#rendered").inner_text()
        assert "Say hello to Ada <b>bold</b>" in rendered and XSS_TEMPLATE in rendered
        s.shot("template-detail")

        # promote v2 to production
        page.get_by_label("Label", exact=True).fill("production")
        page.get_by_label("Version", exact=True).fill("2")
        page.get_by_role("button", name="Set label").click()
        page.wait_for_url(f"**/ui/templates/{name}?moved=*")
        assert "production → v2" in page.locator("#lab-h + ul").inner_text()
        page.goto("/ui/templates")
        row = page.get_by_role("row").filter(has_text=name)
        assert "v2" in row.inner_text() and "production → v2" in row.inner_text()
        s.shot("templates")

        # a key from the keys page: the secret shown once, with a copy button
        page.goto("/ui/keys")
        page.get_by_label("Name", exact=True).fill("ui-app-" + name)
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("#new-secret").input_value()
        assert secret and page.get_by_role("button", name="Copy").is_visible()
        page.get_by_role("button", name="Copy").click()
        page.locator(".copied").filter(has_text="Copied.").wait_for()
        page.reload()
        assert secret not in page.content()

        # call the labelled template with the official client; an XSS payload in the body
        client = openai.OpenAI(api_key=secret, base_url=gw.base_url, max_retries=0)
        client.chat.completions.create(
            model=None, messages=[{"role": "user", "content": XSS_BODY}],  # type: ignore[arg-type]
            extra_body={"template": {"name": name, "label": "production",
                                     "variables": {"who": "Bo"}}})
        gw.wait_for_audit("template_name = :n", {"n": name}, count=1)

        # find it in the audit explorer, with its template version
        page.goto("/ui/audit")
        page.get_by_label("Template", exact=True).select_option(name)
        page.get_by_role("button", name="Search").click()
        rows = page.locator("#events tbody tr")
        assert rows.count() == 1
        assert f"{name} v2" in rows.first.inner_text()
        s.shot("audit")
        rows.first.get_by_role("link").click()
        assert page.locator("#ev-template_version").inner_text() == "2"
        assert page.locator("#ev-template_name").inner_text() == name
        assert XSS_BODY in page.locator("#request-body").inner_text()
        event_id = page.url.rsplit("/", 1)[1].split("?")[0]
        s.shot("audit-event")

        # export the current filter (the session cookie is enough)
        page.go_back()
        for fmt in ("jsonl", "csv"):
            with page.expect_download() as info:
                page.locator(f"#export-{fmt}").click()
            data = Path(info.value.path()).read_text()
            assert event_id in data and name in data
            if fmt == "jsonl":
                lines = [json.loads(x) for x in data.splitlines() if x.strip()]
                assert [x["id"] for x in lines] == [event_id]
                assert lines[0]["template_version"] == 2

        # verify the chain
        page.get_by_role("button", name="Verify chain").click()
        assert "Chain intact" in page.locator("#verify-result").inner_text()

        # per-version request count, tokens and cost on the template page
        page.goto(f"/ui/templates/{name}")
        v2 = page.locator("#ver-h ~ div table tbody tr").filter(has_text="v2").inner_text()
        assert "\t1\t" in v2, v2

        # a canary split on another label
        page.get_by_label("Label", exact=True).fill("staging")
        page.get_by_label("Version", exact=True).fill("2")
        page.get_by_label("Canary version (optional)").fill("1")
        page.get_by_label("Canary %").fill("10")
        page.get_by_role("button", name="Set label").click()
        page.wait_for_url(f"**/ui/templates/{name}?moved=*")
        assert "staging → v2 (canary v1 at 10" in page.locator("#lab-h + ul").inner_text()

        # policies: the effective policy of the key and a PII dry run
        key_id = next(k["id"] for k in gw.admin("GET", "/admin/keys").json()["data"]
                      if k["name"] == "ui-app-" + name)
        page.goto("/ui/policies")
        page.get_by_label("Key", exact=True).select_option(key_id)  # a picker by name
        page.get_by_role("button", name="Show").click()
        assert "default" in page.locator("#effective").inner_text()
        page.get_by_label("Text").fill("write to bob@example.com please")
        page.get_by_role("button", name="Dry run").click()
        dry = page.locator("#dry-text").inner_text()
        assert "bob@example.com" not in dry and "please" in dry
        s.shot("policies")

        # limits on the key, then revoke it (the UI asks for confirmation)
        page.goto(f"/ui/keys/{key_id}")
        page.get_by_label("Requests per minute").fill("120")
        page.get_by_label("Budget (USD)").fill("5")
        page.get_by_role("button", name="Save limits").click()
        assert page.get_by_text("Saved.").is_visible()
        got = gw.admin("GET", f"/admin/keys/{key_id}").json()
        assert got["rpm"] == 120 and got["budget_usd"] == 5
        page.get_by_role("button", name="Revoke key").click()
        page.wait_for_url("**/ui/keys?revoked=*")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="demo", messages=[{"role": "user",
                                                                    "content": "hi"}])

        # the other pages, for screenshots and a smoke check
        page.goto("/ui/spend")
        page.locator("#spend-template svg").wait_for()
        assert name in page.locator("#spend-template table").inner_text()
        s.shot("spend")
        page.goto("/ui/keys")
        s.shot("keys")
        page.goto("/ui/teams")
        s.shot("teams")

        assert s.dialogs == [], s.dialogs
        assert s.csp_violations == [], s.csp_violations
    finally:
        s.close()


def test_compliance_key_of_one_team_cannot_see_another_team(browser: Any,
                                                           gw: GatewayProcess) -> None:
    tag = uuid.uuid4().hex[:6]
    team_a, team_b = f"alpha-{tag}", f"beta-{tag}"
    gw.create_team(name=team_a)
    gw.create_team(name=team_b)
    key_a = gw.create_key(name=f"app-a-{tag}", team=team_a)["key"]
    key_b = gw.create_key(name=f"app-b-{tag}", team=team_b)["key"]
    for key, marker in ((key_a, "A"), (key_b, "B")):
        openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0).chat.completions.create(
            model="demo", messages=[{"role": "user", "content": f"{marker}-{tag} {XSS_BODY}"}])
    b_rows = gw.wait_for_audit("team = :t", {"t": team_b}, count=1)
    gw.wait_for_audit("team = :t", {"t": team_a}, count=1)
    auditor = gw.create_key(name=f"auditor-{tag}", role="compliance", team=team_a)["key"]

    s = Session(browser, gw, auditor, width=390)  # a phone-width screen
    page = s.page
    try:
        assert page.url.endswith("/ui/audit")
        nav = page.get_by_role("navigation", name="Main").inner_text()
        assert "Audit" in nav and "Spend" in nav and "Keys" not in nav and "Templates" not in nav
        table = page.locator("#events tbody").inner_text()
        assert team_a in table and team_b not in table
        s.shot("audit-compliance-phone")

        # the team picker offers team A only; team B typed into the address bar instead
        assert page.get_by_label("Team", exact=True).locator("option").all_inner_texts() == [
            "any team", team_a]
        page.goto(f"/ui/audit?team={team_b}")
        # refused or empty, never team B's events
        assert b_rows[0]["id"] not in page.content() and f"app-b-{tag}" not in page.content()

        resp = page.goto(f"/ui/audit/events/{b_rows[0]['id']}")
        assert resp is not None and resp.status == 404
        resp = page.goto("/ui/keys")
        assert resp is not None and resp.status == 403

        with page.expect_download() as info:
            page.goto("/ui/audit")
            page.locator("#export-jsonl").click()
        exported = Path(info.value.path()).read_text()
        assert team_a in exported and team_b not in exported

        page.goto("/ui/audit")
        page.get_by_label("Team", exact=True).select_option(team_a)
        page.get_by_label("Model requested").select_option("demo")
        page.get_by_role("button", name="Search").click()
        page.locator("#events tbody tr").first.get_by_role("link").click()
        assert XSS_BODY in page.locator("#request-body").inner_text()
        assert s.dialogs == [], s.dialogs
    finally:
        s.close()
