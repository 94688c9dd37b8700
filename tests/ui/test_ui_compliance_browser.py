"""The compliance and admin tasks of issue 19, done in Chromium as a person does them, with an
axe-core check of every page visited (zero serious or critical violations) and screenshots
in `test-output/screenshots/`:

- find a key's events by its name, open one, go back with the filters kept;
- verify a tampered chain and read the reason, the chain and the unchecked events;
- read the retention page after a purge (the purge is an event);
- move a label (promote, canary, roll back) and see it in the history;
- edit a policy through the dry run, then read the key's effective policy with its sources;
- a refused form keeps what was typed; a revoked key looks revoked; budgets warn near the cap;
- spend over time with the range picker.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.audit.test_admin_changes import _sql
from tests.support.axe import axe_source, serious_violations
from tests.support.gateway_proc import GatewayProcess
from tests.ui.test_ui_browser import ARGS, CHROMIUM, SHOTS, Session, _ensure_chromium

CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
  - name: demo-embed
    deployments: [{model: demo/demo-embed-1}]
  - name: priced
    deployments: [{model: demo/demo-1}]
    pricing: {input_per_million: 100000, output_per_million: 100000}
audit: {retention_days: 30}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("ui-compliance")
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


@pytest.fixture(scope="module")
def axe() -> str:
    return axe_source()


class Checked(Session):
    """A signed-in session that runs axe on every page it screenshots, and records console
    errors (an invalid `pattern` regex is one)."""

    def __init__(self, browser: Any, gw: GatewayProcess, key: str, axe: str) -> None:
        self.axe = axe
        self.violations: dict[str, list[str]] = {}
        self.console_errors: list[str] = []
        super().__init__(browser, gw, key)
        self.page.on("console", lambda m: self.console_errors.append(m.text)
                     if m.type == "error" else None)

    def check(self, name: str) -> None:
        """Screenshot and accessibility check of the current page."""
        self.shot(name)
        found = serious_violations(self.page, self.axe)
        if found:
            self.violations[name] = found


def chat(gw: GatewayProcess, key: str, model: str = "demo", text: str = "hi") -> None:
    openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0).chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}])


def test_compliance_officer_finds_a_keys_events_by_name_and_verifies_the_chain(
        browser: Any, gw: GatewayProcess, axe: str) -> None:
    tag = uuid.uuid4().hex[:6]
    name = f"billing-app-{tag}"
    key = gw.create_key(name=name)
    other = gw.create_key(name=f"other-{tag}")
    for i in range(3):
        chat(gw, key["key"], text=f"invoice {i}")
    chat(gw, other["key"])
    rows = gw.wait_for_audit("key_id = :k", {"k": key["id"]}, count=3)
    auditor = gw.create_key(name=f"auditor-{tag}", role="compliance")
    s = Checked(browser, gw, auditor["key"], axe)
    page = s.page
    try:
        # the key by its name, from the picker: its events and a total
        page.goto("/ui/audit")
        s.check("c-audit-explorer")
        page.get_by_label("Key", exact=True).select_option(label=name)
        page.get_by_role("button", name="Search").click()
        assert page.locator("#total").inner_text().startswith("3 events match these filters")
        table = page.locator("#events tbody").inner_text()
        assert table.count(name) == 3 and f"other-{tag}" not in table
        assert "UTC" in page.locator("#events thead").inner_text()
        assert page.locator("#events .status-ok").count() == 3
        s.check("c-audit-by-key-name")

        # open one, go back: the filters are kept
        page.locator("#events tbody tr").first.get_by_role("link").click()
        assert page.locator("#ev-key_name").inner_text() == name
        assert page.locator("#ev-fallback_used").inner_text() == "no"  # not `False`
        s.check("c-audit-event")
        page.get_by_role("link", name="← Back to the audit explorer").first.click()
        assert page.get_by_label("Key", exact=True).input_value() == key["id"]
        assert page.locator("#events tbody").inner_text().count(name) == 3

        # verify an intact chain, then a tampered one: the reason, the event, the chain
        page.get_by_role("button", name="Verify chain").click()
        assert "Chain intact" in page.locator("#verify-result").inner_text()
        assert "No HMAC key is configured" in page.locator("#hmac-warning").inner_text()
        s.check("c-verify-intact")
        bad = rows[1]
        _sql(gw, "UPDATE audit_events SET model_served = 'forged' WHERE id = :i", i=bad["id"])
        try:
            page.reload()
            result = page.locator("#verify-result").inner_text()
            assert f"Chain BROKEN at event {bad['id']} in chain {bad['replica']}" in result
            assert page.locator("#verify-reason").inner_text() == \
                "the event's content does not match its hash"
            assert "could not be checked" in page.locator("#beyond").inner_text()
            s.check("c-verify-broken")
            page.locator("#bad-event").click()
            assert page.locator("#ev-model_served").inner_text() == "forged"
        finally:
            _sql(gw, "UPDATE audit_events SET model_served = :m WHERE id = :i",
                 m=bad["model_served"], i=bad["id"])
        page.goto("/ui/audit/verify")
        assert "Chain intact" in page.locator("#verify-result").inner_text()

        # an error status is coloured; a status picked by name
        page.goto("/ui/audit")
        page.get_by_label("Status").select_option(label="401 Unauthorized")
        page.get_by_role("button", name="Search").click()
        assert page.locator("#events .status-client").count() == \
            page.locator("#events tbody tr").count() - (
                1 if "No events match" in page.locator("#events tbody").inner_text() else 0)
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()


def test_retention_page_after_a_purge(browser: Any, gw: GatewayProcess, axe: str) -> None:
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        gw.cli("audit", "purge", "--before", "2000-01-01T00:00:00Z")  # removes nothing
        page.goto("/ui/audit")
        page.get_by_role("link", name="Retention").click()
        assert page.locator("#ret-period").inner_text().startswith("30 days")
        assert "UTC" in page.locator("#ret-oldest").inner_text()
        last = page.locator("#ret-last").inner_text()
        assert "0 events removed" in last and "cli" in last
        s.check("c-retention")
        page.locator("#ret-last a").click()
        assert page.locator("#ev-action").inner_text().startswith("Audit log purged")
        s.check("c-purge-event")
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()


def test_admin_moves_a_label_and_reads_it_in_the_history(browser: Any, gw: GatewayProcess,
                                                         axe: str) -> None:
    name = f"greet-{uuid.uuid4().hex[:6]}"
    spec = {"name": name, "model": "demo", "variables": {
        "who": {"type": "string", "description": "Who is greeted", "default": "World"},
        "items": {"type": "array", "description": "What to list"}},
        "messages": [{"role": "user", "content": "Hello {{ who }}: {{ items|join(', ') }}"}]}
    assert gw.admin("POST", "/admin/templates", spec).status_code == 201
    spec["description"] = "second"
    assert gw.admin("POST", f"/admin/templates/{name}/versions", spec).status_code == 201
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        page.goto(f"/ui/templates/{name}")
        assert page.locator("#origin").inner_text() == "by bootstrap admin key"
        # the label field's pattern is a valid regex in Chromium: it checks in the browser
        page.get_by_label("Label", exact=True).fill("bad label!")
        assert page.eval_on_selector("#label", "e => e.validity.patternMismatch") is True
        page.get_by_label("Label", exact=True).fill("production")
        assert page.eval_on_selector("#label", "e => e.validity.valid") is True
        assert not [e for e in s.console_errors if "pattern" in e.lower()], s.console_errors

        # variable descriptions and defaults; an array without JSON
        assert "Who is greeted" in page.locator("#hint_who").inner_text()
        assert page.get_by_label("who").get_attribute("placeholder") == "World"
        page.get_by_label("who").fill("Ada")
        page.get_by_label("items").fill("apples\npears")
        page.get_by_role("button", name="Preview", exact=True).click()
        assert "Hello Ada: apples, pears" in page.locator("#rendered").inner_text()

        # promote v1, then v2 with v1 as a canary, in one click each
        page.get_by_role("button", name="Make v1 production").click()
        assert "Label production now points at v1" in page.locator("#done").inner_text()
        page.get_by_label("Label", exact=True).fill("production")
        page.get_by_label("Version", exact=True).fill("2")
        page.get_by_label("Canary version (optional)").fill("1")
        page.get_by_label("Canary %").fill("10")
        page.get_by_role("button", name="Set label").click()
        versions = page.locator("#ver-h ~ div table tbody")
        assert "production · 90%" in versions.locator("tr").filter(has_text="v2").first \
            .inner_text()
        v1 = versions.locator("tr").filter(has_text="production canary · 10%").inner_text()
        assert v1.startswith("v1")
        assert "v2 serves 90%, v1 10%" in page.locator("#labels").inner_text()
        s.check("c-template-canary")

        # the history says who moved the label when; roll back in one click
        history = page.locator("#history tbody tr")
        assert "Label production → v2 (canary v1 at 10%)" in history.nth(0).inner_text()
        assert "bootstrap admin key" in history.nth(0).inner_text()
        assert "UTC" in history.nth(0).inner_text()
        page.get_by_role("button", name="Roll back production to v1").click()
        assert "Label production now points at v1" in page.locator("#done").inner_text()
        assert "Label production → v1" in page.locator("#history tbody tr").nth(0).inner_text()

        # compare any two versions
        page.get_by_label("From version").select_option("1")
        page.get_by_label("To version").select_option("2")
        page.get_by_role("button", name="Compare").click()
        compare = page.locator("#compare").inner_text()
        assert "+description: second" in compare
        s.check("c-template-history")

        # every move is an admin change in the audit log
        page.get_by_role("link", name="Changes in the audit log").click()
        changes = page.locator("#events tbody").inner_text()
        assert changes.count("Label moved") == 3 and "Version created" in changes
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()


def test_admin_edits_a_policy_through_the_dry_run(browser: Any, gw: GatewayProcess,
                                                 axe: str) -> None:
    tag = uuid.uuid4().hex[:6]
    gw.create_team(name=f"pol-{tag}", rpm=30, budget_usd=50)
    key = gw.create_key(name=f"pol-key-{tag}", team=f"pol-{tag}", models=["demo"], rpm=20,
                        budget_usd=3, budget_period="day")
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        page.goto("/ui/policies")
        s.check("c-policies")
        page.get_by_role("link", name="default").click()
        source = page.get_by_label("Policy (YAML")
        assert "email: redact" in source.input_value()
        s.check("c-policy-edit")

        # an invalid edit: the dry run says why, nothing is saved
        source.fill("name: default\npii: {input: {email: nuke}}\n")
        page.get_by_role("button", name="Dry run").click()
        assert "pii.input.email: unknown action" in page.locator("#problems").inner_text()
        assert page.get_by_role("button", name="Save and reload").count() == 0

        # a valid one: diff, who it applies to, the PII rules on a sample; then saved
        page.get_by_label("Policy (YAML").fill(
            "name: default\npii: {input: {email: mask}}\nlimits: {max_output_tokens: 500}\n")
        page.get_by_label("Sample text").fill("write to bob@example.com")
        page.get_by_role("button", name="Dry run").click()
        assert "+pii: {input: {email: mask}}" in page.locator("#diff").inner_text()
        assert "this is default" in page.locator("#applies").inner_text()
        assert "bob@example.com" not in page.locator("#dry-text").inner_text()
        s.check("c-policy-dry-run")
        assert "email: redact" in (gw.workdir / "policies" / "default.yaml").read_text()
        page.get_by_role("button", name="Save and reload").click()
        assert "Policy default saved and reloaded" in page.locator("#done").inner_text()
        assert "email: mask" in (gw.workdir / "policies" / "default.yaml").read_text()

        # the effective policy: the key's own models, limits and budget, with sources
        page.get_by_label("Key", exact=True).select_option(label=f"pol-key-{tag} · team pol-{tag}")
        page.get_by_role("button", name="Show").click()
        effective = page.locator("#effective").inner_text()
        assert "allow: demo" in effective and f"key pol-key-{tag}" in effective
        assert "Requests per minute 20" in effective and f"team pol-{tag}" in effective
        assert "$3.00 per day" in effective and "$50.00 per month" in effective
        assert "Max output tokens 500" in effective and "policy default" in effective
        s.check("c-policy-effective")
        assert gw.wait_for_audit("action = 'policy.save' AND status_code = 200")
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()
    del key


def test_forms_keep_what_was_typed_and_revoked_keys_look_revoked(
        browser: Any, gw: GatewayProcess, axe: str) -> None:
    tag = uuid.uuid4().hex[:6]
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        page.goto("/ui/keys")
        page.get_by_label("Name", exact=True).fill(f"typed-{tag}")
        page.get_by_label("Models (comma-separated").fill("gpt-9")
        page.get_by_label("Requests per minute").fill("77")
        page.get_by_label("Budget period").select_option("day")
        page.get_by_role("button", name="Create key").click()
        assert "Not created: unknown model 'gpt-9'" in page.locator("#form-error").inner_text()
        assert page.get_by_label("Name", exact=True).input_value() == f"typed-{tag}"
        assert page.get_by_label("Requests per minute").input_value() == "77"
        assert page.get_by_label("Budget period").input_value() == "day"
        s.check("c-keys-refused")

        # a key whose daily budget refuses requests reads red at once, refusals counted
        # (the limiter reserves a request's largest cost: it refuses before the cap is spent)
        page.get_by_label("Models (comma-separated").fill("priced")
        page.get_by_label("Budget (USD)").fill("0.001")
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("#new-secret").input_value()
        key_id = next(k["id"] for k in gw.admin("GET", "/admin/keys").json()["data"]
                      if k["name"] == f"typed-{tag}")
        for _ in range(2):
            with pytest.raises(openai.RateLimitError):
                chat(gw, secret, model="priced")
        gw.wait_for_audit("key_id = :k", {"k": key_id}, count=2)
        page.goto(f"/ui/keys/{key_id}")
        budget = page.locator("#key-budget").inner_text()
        assert "$0.00 today of $0.001" in budget and "2 refused" in budget, budget
        assert "refusing requests" in budget
        assert page.locator("#key-budget .status-server").count() == 1
        assert page.locator("#key-budget meter").get_attribute("high") is not None
        s.check("c-key-budget")

        # revoke: a message, then the key reads as revoked everywhere
        page.get_by_role("button", name="Revoke key").click()
        assert f"Key typed-{tag} revoked" in page.locator("#done").inner_text()
        row = page.locator("#keys tr.revoked").filter(has_text=f"typed-{tag}")
        assert "Revoked" in row.inner_text()
        s.check("c-keys-revoked")
        page.goto(f"/ui/keys/{key_id}")
        assert "was revoked" in page.locator("#revoked-note").inner_text()
        assert page.get_by_role("button", name="Save limits").count() == 0

        # a team form keeps what was typed too
        page.goto("/ui/teams")
        page.get_by_label("Name", exact=True).fill("bad name!")
        page.locator("#nt-rpm").fill("5")
        page.get_by_role("button", name="Create team").click()
        assert "Not created" in page.locator("#form-error").inner_text()
        assert page.get_by_label("Name", exact=True).input_value() == "bad name!"
        assert page.locator("#nt-rpm").input_value() == "5"
        page.get_by_label("Name", exact=True).fill(f"team-{tag}")
        page.get_by_role("button", name="Create team").click()
        assert f"Team team-{tag} created." in page.locator("#done").inner_text()
        s.check("c-teams")
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()


def test_spend_over_time_with_a_range_picker(browser: Any, gw: GatewayProcess,
                                             axe: str) -> None:
    key = gw.create_key(name=f"spender-{uuid.uuid4().hex[:6]}")
    chat(gw, key["key"], model="priced")
    gw.wait_for_audit("key_id = :k", {"k": key["id"]})
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        page.goto("/ui/spend")
        assert page.locator("#spend-series polyline").count() >= 1
        page.get_by_label("Last 24 hours").check()
        page.get_by_label("Lines per").select_option("key")
        page.get_by_role("button", name="Show").click()
        assert "per key" in page.locator("#ts-h").inner_text()
        assert "per hour" in page.locator("#ts-h").inner_text()
        assert key["name"] in page.locator("#spend-series .legend").inner_text()
        s.check("c-spend-24h")
        page.get_by_label("Last 90 days").check()
        page.get_by_role("button", name="Show").click()
        assert "per day" in page.locator("#ts-h").inner_text()
        s.check("c-spend-90d")
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()


def test_every_page_has_no_serious_accessibility_violation(browser: Any, gw: GatewayProcess,
                                                           axe: str) -> None:
    """Every `/ui` page, as the admin (and the sign-in form): axe finds nothing serious."""
    name = f"a11y-{uuid.uuid4().hex[:6]}"
    gw.admin("POST", "/admin/templates", {"name": name, "messages": [
        {"role": "user", "content": "hi"}]})
    key = gw.create_key(name=f"a11y-key-{name}")
    gw.create_team(name=f"t-{name}")
    chat(gw, key["key"])
    event = gw.wait_for_audit("key_id = :k", {"k": key["id"]})[0]
    s = Checked(browser, gw, gw.admin_key, axe)
    page = s.page
    try:
        for slug, path in [
                ("templates", "/ui/templates"), ("template", f"/ui/templates/{name}"),
                ("template-edit", f"/ui/templates/{name}/edit"),
                ("template-new", "/ui/templates/new"), ("keys", "/ui/keys"),
                ("key", f"/ui/keys/{key['id']}"), ("teams", "/ui/teams"),
                ("spend", "/ui/spend"), ("audit", "/ui/audit"),
                ("audit-event", f"/ui/audit/events/{event['id']}"),
                ("verify", "/ui/audit/verify"), ("retention", "/ui/audit/retention"),
                ("policies", "/ui/policies"), ("policy-new", "/ui/policies/new"),
                ("not-found", "/ui/nothing-here")]:
            page.goto(path)
            s.check(f"a11y-{slug}")
        page.get_by_role("button", name="Sign out").click()
        s.check("a11y-login")
        assert s.violations == {}, json.dumps(s.violations, indent=1)
    finally:
        s.close()
