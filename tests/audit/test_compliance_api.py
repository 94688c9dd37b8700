"""Verify and retention tell the whole truth; the explorer's total and pickers; the effective
policy with every source; policy files edited safely; template history; spend over time;
and the CLI's confirmations and progress."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.audit.test_admin_changes import _sql
from tests.support.gateway_proc import GATEWAY_BIN, GatewayProcess

CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
  - name: demo-embed
    deployments: [{model: demo/demo-embed-1}]
audit: {retention_days: 30}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("compliance-api")
    (work / "policies").mkdir()
    (work / "policies" / "default.yaml").write_text(
        "name: default\npii: {input: {email: redact}}\n")
    (work / "policies" / "strict.yaml").write_text(
        "name: strict\nmodels: {allow: [demo, demo-embed]}\nlimits: {rpm: 50, tpm: 9000}\n")
    g = GatewayProcess(work, CONFIG).start()
    yield g
    g.stop()


def get(gw: GatewayProcess, path: str, key: str | None = None, **params: Any
        ) -> httpx.Response:
    return httpx.get(gw.url + path, params=params, timeout=30,
                     headers={"authorization": f"Bearer {key or gw.admin_key}"})


def chat(gw: GatewayProcess, key: str, text: str = "hi") -> None:
    openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": text}])


# --- verify ----------------------------------------------------------------------------------

def test_verify_names_the_reason_the_chain_and_what_lies_beyond_the_break(
        gw: GatewayProcess) -> None:
    key = gw.create_key(name=f"verify-{uuid.uuid4().hex[:6]}")
    for i in range(4):
        chat(gw, key["key"], f"message {i}")
    rows = gw.wait_for_audit("key_id = :k", {"k": key["id"]}, count=4)
    target = rows[0]
    chain_rows = gw.audit_rows("replica = :r", {"r": target["replica"]})
    later = sum(1 for r in chain_rows if r["seq"] > target["seq"])
    _sql(gw, "UPDATE audit_events SET total_tokens = total_tokens + 1 WHERE id = :i",
         i=target["id"])
    try:
        verdict = get(gw, "/audit/verify").json()
        assert (verdict["ok"], verdict["first_bad_id"]) == (False, target["id"])
        assert verdict["reason"] == "the event's content does not match its hash"
        assert verdict["chain"] == target["replica"]
        assert verdict["events_beyond_break"] >= later >= 3
        assert verdict["hmac"] is False
        (broken,) = [c for c in verdict["chains"] if c["first_bad_id"]]
        assert broken["chain"] == target["replica"]

        cli = gw.cli("audit", "verify", check=False)
        assert cli.returncode == 1
        assert f"BROKEN at event {target['id']}: the event's content does not match its " \
               "hash" in cli.stderr
        assert "later event(s) of this chain not checked" in cli.stderr
        assert "no GATEWAY_AUDIT_HMAC_KEY is set" in cli.stderr
    finally:
        _sql(gw, "UPDATE audit_events SET total_tokens = total_tokens - 1 WHERE id = :i",
             i=target["id"])
    assert get(gw, "/audit/verify").json()["ok"] is True


# --- the explorer's total and pickers ----------------------------------------------------------

def test_count_matches_the_filters_and_facets_name_what_a_key_may_see(
        gw: GatewayProcess) -> None:
    tag = uuid.uuid4().hex[:6]
    team_a, team_b = f"ca-{tag}", f"cb-{tag}"
    gw.create_team(name=team_a)
    gw.create_team(name=team_b)
    a = gw.create_key(name=f"count-a-{tag}", team=team_a)
    b = gw.create_key(name=f"count-b-{tag}", team=team_b)
    for _ in range(3):
        chat(gw, a["key"])
    chat(gw, b["key"])
    gw.wait_for_audit("key_id = :k", {"k": a["id"]}, count=3)
    assert get(gw, "/audit/count", key_id=a["id"]).json() == {"count": 3, "capped": False}
    assert get(gw, "/audit/count", key_id=a["id"], status_code=429).json()["count"] == 0
    assert get(gw, "/audit/count", limit=5).status_code == 400
    assert get(gw, "/audit/count", nope="x").status_code == 400

    auditor = gw.create_key(name=f"auditor-{tag}", role="compliance", team=team_a)
    facets = get(gw, "/audit/facets", key=auditor["key"]).json()
    assert facets["teams"] == [team_a]
    assert {k["name"] for k in facets["keys"]} == {a["name"], auditor["name"]}
    assert {"demo", "demo-embed"} <= set(facets["models"])
    assert "key.revoke" in facets["actions"] and "email" in facets["pii_kinds"]
    assert get(gw, "/audit/count", key=auditor["key"], key_id=b["id"]).json()["count"] == 0
    assert get(gw, "/audit/retention", key=auditor["key"]).status_code == 403
    admin_facets = get(gw, "/audit/facets").json()
    assert {team_a, team_b} <= set(admin_facets["teams"])


# --- retention -------------------------------------------------------------------------------

def test_retention_says_the_period_the_oldest_event_and_the_last_purge(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    g = GatewayProcess(tmp_path_factory.mktemp("retention"), CONFIG).start()
    try:
        key = g.create_key(name="old")
        for _ in range(3):
            chat(g, key["key"])
        g.wait_for_audit("key_id = :k", {"k": key["id"]}, count=3)
        # every event so far (the key's creation and its three requests) is years old
        _sql(g, "UPDATE audit_events SET received_at = '2020-01-01 00:00:00'")
        report = get(g, "/audit/retention").json()
        assert report["retention_days"] == 30 and report["last_purge"] is None
        assert report["oldest_received_at"] == "2020-01-01T00:00:00.000Z"
        total = report["events"]
        assert total >= 4 and report["next_purge"]["events"] == total

        summary = json.loads(g.cli("audit", "purge").stdout)
        assert summary["deleted"] == total
        report = get(g, "/audit/retention").json()
        purge = report["last_purge"]
        assert purge["action"] == "audit.purge" and purge["actor_key_id"] == "cli"
        assert purge["before"]["events"] == total
        assert (purge["after"]["deleted"], purge["after"]["events"]) == (total, 0)
        assert report["events"] == 1 and report["next_purge"]["events"] == 0  # the purge
        assert get(g, "/audit/verify").json()["ok"] is True
    finally:
        g.stop()


# --- the effective policy --------------------------------------------------------------------

def test_effective_policy_shows_the_keys_own_models_limits_and_budget_with_sources(
        gw: GatewayProcess) -> None:
    tag = uuid.uuid4().hex[:6]
    team = f"eff-{tag}"
    gw.create_team(name=team, rpm=30, budget_usd=100, budget_period="month", policy="strict")
    key = gw.create_key(name=f"eff-key-{tag}", team=team, models=["demo"], rpm=40, tpm=1000,
                        budget_usd=2, budget_period="day")
    got = get(gw, "/admin/policies/effective", key_id=key["id"]).json()
    assert got["models"] == {"allow": ["demo"], "deny": []}
    assert got["limits"]["rpm"] == 30 and got["limits"]["tpm"] == 1000  # the tightest
    assert got["budget"] == {"usd": 2, "period": "day"}
    assert [(b["usd"], b["period"], b["source"]) for b in got["budgets"]] == [
        (2, "day", f"key eff-key-{tag}"), (100, "month", f"team {team}")]
    sources = got["section_sources"]
    assert sources["models"] == [f"key eff-key-{tag}", "policy strict"]
    assert set(sources["limits"]) == {f"key eff-key-{tag}", f"team {team}", "policy strict"}
    assert sources["pii"] == ["policy default"]
    assert got["sources"] == ["strict", "default"]  # the contract's policy names


# --- policy files ------------------------------------------------------------------------------

def test_a_policy_edit_is_checked_and_dry_run_then_saved_and_audited(
        gw: GatewayProcess) -> None:
    listed = get(gw, "/admin/policies/files").json()
    assert {"default", "strict"} <= {f["name"] for f in listed["data"]}
    current = get(gw, "/admin/policies/files/strict").json()
    edited = current["source"].replace("rpm: 50", "rpm: 25") + "pii: {input: {email: block}}\n"

    bad = gw.admin("POST", "/admin/policies/files/strict/check",
                   {"source": "name: strict\nlimits: {rpm: -1}\n"}).json()
    assert bad["ok"] is False and "strict.yaml: limits.rpm" in bad["problems"][0]
    check = gw.admin("POST", "/admin/policies/files/strict/check",
                     {"source": edited, "text": "mail bob@example.com"}).json()
    assert check["ok"] is True and "-limits: {rpm: 50" in check["diff"]
    assert "+pii: {input: {email: block}}" in check["diff"]
    assert check["dry_run"]["blocked"] is True
    assert check["dry_run"]["findings"][0]["kind"] == "email"
    assert "rpm: 50" in (gw.workdir / "policies" / "strict.yaml").read_text()  # not saved

    stale = gw.admin("PUT", "/admin/policies/files/strict",
                     {"source": edited, "base_sha256": "0" * 64})
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "policy_conflict"
    saved = gw.admin("PUT", "/admin/policies/files/strict",
                     {"source": edited, "base_sha256": current["sha256"]})
    assert saved.status_code == 200, saved.text
    assert "rpm: 25" in (gw.workdir / "policies" / "strict.yaml").read_text()
    event = gw.wait_for_audit("action = 'policy.save' AND status_code = 200")[0]
    got = get(gw, f"/audit/events/{event['id']}").json()
    assert (got["target_type"], got["target_id"]) == ("policy", "strict")
    assert got["before"]["limits"]["rpm"] == 50 and got["after"]["limits"]["rpm"] == 25
    assert got["after"]["pii"]["input"] == {"email": "block"}

    invalid = gw.admin("PUT", "/admin/policies/files/strict",
                       {"source": "name: other\n", "base_sha256": saved.json()["sha256"]})
    assert invalid.status_code == 400 and invalid.json()["error"]["code"] == "invalid_policy"
    sneaky = gw.admin("PUT", "/admin/policies/files/..%2Fescape",
                      {"source": "name: ../escape\n", "base_sha256": None})
    assert sneaky.status_code in (400, 404)
    assert not (gw.workdir / "escape.yaml").exists()


# --- template history --------------------------------------------------------------------------

def test_template_history_says_who_moved_which_label_when(gw: GatewayProcess) -> None:
    name = f"hist-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "messages": [{"role": "user", "content": "v"}]}
    assert gw.admin("POST", "/admin/templates", body).status_code == 201
    assert gw.admin("POST", f"/admin/templates/{name}/versions", body).status_code == 201
    admin = gw.create_key(name="labeller", role="admin")
    gw.admin("PUT", f"/admin/templates/{name}/labels/production", {"version": 1})
    gw.admin("PUT", f"/admin/templates/{name}/labels/production",
             {"version": 2, "canary": {"version": 1, "percent": 5}}, key=admin["key"])
    history = get(gw, f"/admin/templates/{name}/history").json()["data"]
    assert [(h["kind"], h["label"], h["version"], h["actor"]) for h in history] == [
        ("label", "production", 2, admin["id"]), ("label", "production", 1, "bootstrap"),
        ("version", None, 2, "bootstrap"), ("version", None, 1, "bootstrap")]
    assert history[0]["canary"] == {"version": 1, "percent": 5.0}
    assert get(gw, "/admin/templates/nope/history").status_code == 404


# --- spend over time ---------------------------------------------------------------------------

def test_spend_by_hour_and_by_template(gw: GatewayProcess) -> None:
    key = gw.create_key(name="hourly")
    chat(gw, key["key"])
    gw.wait_for_audit("key_id = :k", {"k": key["id"]})
    hours = get(gw, "/admin/spend", group_by="hour", key_id=key["id"]).json()["data"]
    assert len(hours) == 1 and hours[0]["group"].endswith(":00Z") and hours[0]["requests"] == 1
    assert get(gw, "/admin/spend", group_by="day", template="none-such").json()["data"] == []


# --- the CLI -----------------------------------------------------------------------------------

def test_export_to_a_file_says_what_it_wrote(gw: GatewayProcess) -> None:
    key = gw.create_key(name="exported")
    chat(gw, key["key"])
    gw.wait_for_audit("key_id = :k", {"k": key["id"]})
    out = gw.workdir / "one.jsonl"
    done = gw.cli("audit", "export", "--key-id", key["id"], "-o", str(out))
    assert done.stderr.strip() == f"wrote 1 event to {out} (jsonl)"
    assert json.loads(out.read_text())["key_id"] == key["id"]
    piped = gw.cli("audit", "export", "--key-id", key["id"])
    assert piped.stderr == "" and json.loads(piped.stdout)["key_id"] == key["id"]


def test_long_commands_show_progress_on_a_terminal_only(gw: GatewayProcess) -> None:
    """On a terminal (a pty here) verify and export write a progress line to stderr that
    ends with a newline; in a pipe they write none (checked above)."""
    for args in (("audit", "verify"), ("audit", "export", "-o", str(gw.workdir / "p.jsonl"))):
        controller, terminal = pty.openpty()
        try:
            proc = subprocess.Popen([str(GATEWAY_BIN), *args], env=gw.env, cwd=gw.workdir,
                                    stdout=subprocess.PIPE, stderr=terminal)
            proc.wait(timeout=120)
            os.close(terminal)
            seen = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        finally:
            os.close(controller)
        text = seen.decode(errors="replace")
        verb = "checked" if args[1] == "verify" else "exported"
        assert f"\r{verb} " in text and " events…" in text, (args, text)


# --- budget colours ----------------------------------------------------------------------------

@pytest.mark.parametrize(("spent", "budget", "refused", "level"), [
    (0.0, None, 0, "ok"),            # no budget: nothing to warn about
    (0.5, 1.0, 0, "ok"),
    (0.8, 1.0, 0, "warn"),           # amber from 80%
    (0.9896, 1.0, 0, "critical"),    # red from 95% (the 0.9896 / 1.0 was green)
    (0.1, 1.0, 3, "critical"),       # refusing requests: red whatever was spent
    (0.0, 0.0, 0, "critical"),       # a zero budget refuses everything
], ids=["no-budget", "half", "amber", "near-cap", "refusing", "zero"])
def test_budget_levels(spent: float, budget: float | None, refused: int, level: str) -> None:
    from gateway.ui.budgets import budget_level

    assert budget_level(spent, budget, refused) == level
