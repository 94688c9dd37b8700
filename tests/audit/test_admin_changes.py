"""Admin changes are accountable: every change through the admin API, the UI or the CLI is one
audit event in the hash chain, with actor, action, target and the values before and after
(secrets only as fingerprints), found by the `action`, `actor_key_id`, `target_type` and
`target_id` filters of the API and of `gateway audit query`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.support.gateway_proc import GatewayProcess
from tests.ui.test_ui_http import csrf_of, sign_in

CONFIG = """
models:
  - name: demo
    deployments: [{model: demo/demo-1}]
  - name: demo-embed
    deployments: [{model: demo/demo-embed-1}]
"""
TEMPLATE = ("name: {name}\nmodel: demo\nvariables: {{who: {{type: string}}}}\n"
            "messages:\n- role: user\n  content: 'Hello {{{{ who }}}} ({text})'\n")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("admin-changes")
    (work / "policies").mkdir()
    (work / "policies" / "default.yaml").write_text(
        "name: default\npii: {input: {email: redact}}\n")
    g = GatewayProcess(work, CONFIG).start()
    yield g
    g.stop()


def events(gw: GatewayProcess, **filters: Any) -> list[dict[str, Any]]:
    r = httpx.get(gw.url + "/audit/events", params=filters, timeout=30,
                  headers={"authorization": f"Bearer {gw.admin_key}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def one_change(gw: GatewayProcess, **filters: Any) -> dict[str, Any]:
    """The single event matching `filters` (waiting for the writer's batch)."""
    where = " AND ".join(f"{k} = :{k}" for k in filters)
    gw.wait_for_audit(where, filters, count=1)
    (event,) = events(gw, **filters)
    return event


def no_secret_in(event: dict[str, Any], *secrets: str) -> None:
    text = json.dumps(event)
    for secret in secrets:
        assert secret not in text
        assert secret[:10] not in text  # not even the secret's first characters


# --- the admin API -------------------------------------------------------------------------

def test_key_create_update_revoke_each_leave_one_change_with_before_and_after(
        gw: GatewayProcess) -> None:
    name = f"app-{uuid.uuid4().hex[:6]}"
    created = gw.create_key(name=name, models=["demo"], rpm=60, budget_usd=5)
    key_id, secret = created["id"], created["key"]

    create = one_change(gw, action="key.create", target_id=key_id)
    assert (create["endpoint"], create["actor_key_id"], create["key_id"]) == (
        "POST /admin/keys", "bootstrap", "bootstrap")
    assert (create["target_type"], create["target_name"]) == ("key", name)
    assert create["before"] is None
    assert create["after"]["rpm"] == 60 and create["after"]["models"] == ["demo"]
    assert create["after"]["key_fingerprint"].startswith("sha256:")
    assert "key_prefix" not in create["after"] and "key" not in create["after"]
    no_secret_in(create, secret)

    r = gw.admin("PATCH", f"/admin/keys/{key_id}", {"rpm": 120, "budget_usd": None})
    assert r.status_code == 200, r.text
    update = one_change(gw, action="key.update", target_id=key_id)
    assert update["endpoint"] == "PATCH /admin/keys/{key_id}"
    assert (update["before"]["rpm"], update["after"]["rpm"]) == (60, 120)
    assert (update["before"]["budget_usd"], update["after"]["budget_usd"]) == (5, None)
    assert update["before"]["key_fingerprint"] == update["after"]["key_fingerprint"] \
        == create["after"]["key_fingerprint"]
    no_secret_in(update, secret)

    assert gw.admin("DELETE", f"/admin/keys/{key_id}").status_code == 200
    revoke = one_change(gw, action="key.revoke", target_id=key_id)
    assert revoke["before"]["revoked"] is False and revoke["after"]["revoked"] is True
    assert revoke["after"]["rpm"] == 120  # "what were its limits before?"
    no_secret_in(revoke, secret)


def test_team_template_label_and_policy_changes_name_their_target(gw: GatewayProcess) -> None:
    team = f"team-{uuid.uuid4().hex[:6]}"
    gw.create_team(name=team, rpm=10)
    assert gw.admin("PATCH", f"/admin/teams/{team}", {"rpm": 20}).status_code == 200
    created = one_change(gw, action="team.create", target_id=team)
    assert created["target_type"] == "team" and created["after"]["rpm"] == 10
    updated = one_change(gw, action="team.update", target_id=team)
    assert (updated["before"]["rpm"], updated["after"]["rpm"]) == (10, 20)

    name = f"tpl-{uuid.uuid4().hex[:6]}"
    for text in ("one", "two"):
        path = "/admin/templates" if text == "one" else f"/admin/templates/{name}/versions"
        body = yaml.safe_load(TEMPLATE.format(name=name, text=text))
        assert gw.admin("POST", path, body).status_code == 201
    assert gw.admin("PUT", f"/admin/templates/{name}/labels/production",
                    {"version": 1}).status_code == 200
    assert gw.admin("PUT", f"/admin/templates/{name}/labels/production",
                    {"version": 2, "canary": {"version": 1, "percent": 10}}).status_code == 200
    assert gw.admin("DELETE", f"/admin/templates/{name}/labels/production").status_code == 204

    gw.wait_for_audit("target_id = :n", {"n": name}, count=5)
    changes = list(reversed(events(gw, target_type="template", target_id=name)))
    assert [c["action"] for c in changes] == [
        "template.create", "template.version.create", "template.label.set",
        "template.label.set", "template.label.delete"]
    assert all(c["target_name"] == name for c in changes)
    assert changes[0]["after"]["version"] == 1 and changes[1]["before"]["version"] == 1
    assert changes[1]["after"]["version"] == 2
    assert changes[1]["after"]["content_hash"] != changes[1]["before"]["content_hash"]
    first_move, second_move, removal = changes[2:]
    assert first_move["before"] is None
    assert first_move["after"] == {"label": "production", "version": 1, "canary": None}
    # who moved production to v2, from where
    assert second_move["before"] == first_move["after"]
    assert second_move["after"] == {"label": "production", "version": 2,
                                    "canary": {"version": 1, "percent": 10.0}}
    assert removal["before"] == second_move["after"] and removal["after"] is None

    assert gw.admin("POST", "/admin/policies/reload").status_code == 200
    reload = one_change(gw, action="policy.reload")
    assert reload["target_type"] == "policy"
    assert reload["after"]["policies"]["default"]["pii"]["input"] == {"email": "redact"}


def test_a_refused_change_keeps_its_action_and_target_without_values(
        gw: GatewayProcess) -> None:
    key = gw.create_key(name="refused")
    r = gw.admin("PATCH", f"/admin/keys/{key['id']}", {"rpm": -1})
    assert r.status_code == 400
    gw.wait_for_audit("target_id = :t AND status_code = 400", {"t": key["id"]})
    (refused,) = [e for e in events(gw, target_id=key["id"]) if e["status_code"] == 400]
    assert refused["action"] == "key.update" and refused["target_type"] == "key"
    assert refused["before"] is None and refused["after"] is None


def test_an_admin_key_is_the_actor_and_the_filters_combine(gw: GatewayProcess) -> None:
    admin = gw.create_key(name=f"admin-{uuid.uuid4().hex[:6]}", role="admin")
    target = gw.create_key(name="target")
    r = gw.admin("DELETE", f"/admin/keys/{target['id']}", key=admin["key"])
    assert r.status_code == 200
    event = one_change(gw, action="key.revoke", actor_key_id=admin["id"])
    assert event["target_id"] == target["id"] and event["key_name"] == admin["name"]
    assert events(gw, action="key.revoke", actor_key_id=admin["id"],
                  target_id=target["id"]) == [event]
    assert events(gw, action="key.update", actor_key_id=admin["id"]) == []
    bad = httpx.get(gw.url + "/audit/events", params={"actor": "x"},
                                  headers={"authorization": f"Bearer {gw.admin_key}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "actor"


def test_a_change_made_in_the_ui_is_the_signed_in_keys(gw: GatewayProcess) -> None:
    admin = gw.create_key(name=f"ui-admin-{uuid.uuid4().hex[:6]}", role="admin")
    target = gw.create_key(name="ui-target", rpm=5)
    client, _ = sign_in(gw, admin["key"])
    page = client.get(f"/ui/keys/{target['id']}")
    r = client.post(f"/ui/keys/{target['id']}", data={
        "csrf_token": csrf_of(page.text), "rpm": "7", "tpm": "", "max_concurrent": "",
        "budget_usd": "", "budget_period": "month", "models": ""})
    assert r.status_code == 200, r.text
    event = one_change(gw, action="key.update", target_id=target["id"])
    assert event["actor_key_id"] == admin["id"] and event["endpoint"] == \
        "PATCH /admin/keys/{key_id}"
    assert (event["before"]["rpm"], event["after"]["rpm"]) == (5, 7)


def test_the_chain_covers_the_change_values(gw: GatewayProcess) -> None:
    key = gw.create_key(name="tamper-me", rpm=3)
    event = one_change(gw, action="key.create", target_id=key["id"])
    assert gw.admin("GET", "/audit/verify").json()["ok"] is True
    original = gw.audit_rows("id = :i", {"i": event["id"]})[0]["after"]
    forged = original.replace('"rpm":3', '"rpm":3000') if isinstance(original, str) \
        else json.dumps({**original, "rpm": 3000})
    _sql(gw, "UPDATE audit_events SET after = :a WHERE id = :i", a=forged, i=event["id"])
    try:
        verdict = gw.admin("GET", "/audit/verify").json()
        assert verdict["ok"] is False and verdict["first_bad_id"] == event["id"]
        assert verdict["reason"] == "the event's content does not match its hash"
    finally:
        _sql(gw, "UPDATE audit_events SET after = :a WHERE id = :i",
             a=original if isinstance(original, str) else json.dumps(original), i=event["id"])
    assert gw.admin("GET", "/audit/verify").json()["ok"] is True


def _sql(gw: GatewayProcess, statement: str, **params: Any) -> None:
    from sqlalchemy import text

    from gateway.storage.engine import create_engine
    from tests.support.gateway_proc import run_in_thread

    async def run() -> None:
        engine = create_engine(gw.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(statement), params)
        finally:
            await engine.dispose()

    run_in_thread(run)


# --- the CLI -------------------------------------------------------------------------------

def cli_json(gw: GatewayProcess, *args: str) -> Any:
    return json.loads(gw.cli(*args).stdout)


def test_cli_changes_are_events_of_the_cli_with_before_and_after(gw: GatewayProcess) -> None:
    team = f"cli-team-{uuid.uuid4().hex[:6]}"
    gw.cli("teams", "create", "--name", team, "--rpm", "30")
    gw.cli("teams", "update", team, "--rpm", "40", "--clear", "budget_usd")
    created = cli_json(gw, "keys", "create", "--name", "cli-app", "--team", team, "--models",
                       "demo", "--rpm", "9")
    key_id, secret = created["id"], created["key"]
    update = gw.cli("keys", "update", key_id, "--tpm", "1000", "--clear", "rpm")
    assert "Updated key" in update.stderr and "rpm, tpm" in update.stderr
    first = gw.cli("keys", "revoke", key_id)
    again = gw.cli("keys", "revoke", key_id)
    assert first.stdout.startswith(f"revoked {key_id} (cli-app)")
    assert "already revoked at" in again.stdout and "nothing changed" in again.stdout

    page = cli_json(gw, "audit", "query", "--actor-key-id", "cli", "--target-id", key_id)
    changes = list(reversed(page["data"]))
    assert [c["action"] for c in changes] == ["key.create", "key.update", "key.revoke"]
    for change in changes:
        assert (change["key_id"], change["target_type"], change["target_name"]) == (
            "cli", "key", "cli-app")
        assert change["key_name"].startswith("cli ") and change["endpoint"].startswith(
            "gateway keys ")
        no_secret_in(change, secret)
    assert changes[0]["before"] is None and changes[0]["after"]["models"] == ["demo"]
    assert (changes[1]["before"]["rpm"], changes[1]["after"]["rpm"]) == (9, None)
    assert changes[1]["after"]["tpm"] == 1000
    assert changes[2]["after"]["revoked"] is True  # and the second revoke wrote nothing

    team_changes = cli_json(gw, "audit", "query", "--target-type", "team", "--target-id",
                            team)["data"]
    assert [c["action"] for c in team_changes] == ["team.update", "team.create"]
    assert (team_changes[0]["before"]["rpm"], team_changes[0]["after"]["rpm"]) == (30, 40)

    verify = gw.cli("audit", "verify")
    assert json.loads(verify.stdout)["ok"] is True
    assert "chain cli-" in verify.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("keys", "create", "--name", "x", "--models", "gpt-9"), "unknown model 'gpt-9'"),
    (("keys", "create", "--name", "x", "--team", "no-such-team"), "unknown team"),
    (("keys", "update", "key_missing", "--rpm", "5"), "no key with id 'key_missing'"),
    (("keys", "revoke", "key_missing"), "no key with id 'key_missing'"),
    (("teams", "update", "no-such-team", "--rpm", "5"), "no team named 'no-such-team'"),
    (("teams", "create", "--name", "t-bad", "--models", "gpt-9"), "unknown model 'gpt-9'"),
], ids=["unknown-model", "unknown-team", "update-missing", "revoke-missing",
        "team-missing", "team-unknown-model"])
def test_cli_refuses_what_the_api_refuses_and_records_nothing(
        gw: GatewayProcess, args: tuple[str, ...], message: str) -> None:
    before = len(gw.audit_rows("key_id = 'cli'"))
    result = gw.cli(*args, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert len(gw.audit_rows("key_id = 'cli'")) == before
    assert not any(k["name"] == "x" for k in gw.admin("GET", "/admin/keys").json()["data"])


def test_cli_template_sync_label_and_rollback_are_recorded(gw: GatewayProcess) -> None:
    name = f"cli-tpl-{uuid.uuid4().hex[:6]}"
    prompts = gw.workdir / f"prompts-{name}"
    prompts.mkdir()
    for text in ("first", "second"):
        (prompts / f"{name}.yaml").write_text(TEMPLATE.format(name=name, text=text))
        assert "new version" in gw.cli("templates", "sync", "--dir", str(prompts)).stdout
    assert "-> v1" in gw.cli("templates", "label", name, "production", "1").stdout
    assert "v1 -> v2" in gw.cli("templates", "label", name, "production", "2").stdout
    rolled = gw.cli("templates", "rollback", name)
    assert rolled.stdout.strip() == f"{name} label production: v2 -> v1"

    changes = list(reversed(cli_json(gw, "audit", "query", "--target-id", name)["data"]))
    assert [c["action"] for c in changes] == [
        "template.create", "template.version.create", "template.label.set",
        "template.label.set", "template.label.set"]
    assert changes[0]["after"]["source"] == "file" and changes[0]["after"]["path"].endswith(
        f"{name}.yaml")
    assert [c["endpoint"] for c in changes[2:]] == [
        "gateway templates label", "gateway templates label", "gateway templates rollback"]
    assert changes[4]["before"]["version"] == 2 and changes[4]["after"]["version"] == 1
    assert gw.admin("GET", f"/admin/templates/{name}?label=production").json()["version"] == 1
    history = gw.cli("templates", "history", name).stdout.splitlines()
    assert "label production -> v1" in history[0] and "cli" in history[0]
    assert "version 1 created from" in history[-1]


@pytest.fixture
def pg_url() -> Iterator[str]:
    from tests.support.postgres import fresh_database

    yield from fresh_database()


@pytest.mark.postgres
def test_changes_on_postgres_keep_their_values_and_verify(
        tmp_path_factory: pytest.TempPathFactory, pg_url: str) -> None:
    g = GatewayProcess(tmp_path_factory.mktemp("admin-changes-pg"), CONFIG,
                       database_url=pg_url).start()
    try:
        key = g.create_key(name="pg-key", rpm=1)
        assert g.admin("PATCH", f"/admin/keys/{key['id']}", {"rpm": 2}).status_code == 200
        g.cli("keys", "update", key["id"], "--rpm", "3")
        g.wait_for_audit("target_id = :t", {"t": key["id"]}, count=3)
        changes = list(reversed(events(g, target_id=key["id"])))
        assert [(c["action"], c["actor_key_id"]) for c in changes] == [
            ("key.create", "bootstrap"), ("key.update", "bootstrap"), ("key.update", "cli")]
        assert [c["after"]["rpm"] for c in changes] == [1, 2, 3]
        verdict = g.admin("GET", "/audit/verify").json()
        assert verdict["ok"] is True and verdict["events_checked"] >= 3
    finally:
        g.stop()


# --- the chain's encoding --------------------------------------------------------------------

def test_rows_without_change_columns_encode_as_before_they_existed() -> None:
    """Chains written before the admin-change columns verify unchanged: those columns are in
    the hashed encoding only when set (a trailing object), so an old row's bytes are the same;
    and a spooled row from before them still ships (its missing columns are empty)."""
    import orjson

    from gateway.audit.chain import HASHED_COLUMNS, LATE_COLUMNS, canonical, row_from_event
    from gateway.audit.shipper import split_records

    old = row_from_event({"id": "0" * 24, "request_id": "r", "endpoint": "/v1/chat/completions",
                          "status_code": 200})
    assert set(LATE_COLUMNS) <= set(old) and not set(LATE_COLUMNS) & set(HASHED_COLUMNS)
    plain = orjson.loads(canonical(old, None, None))
    assert len(plain) == len(HASHED_COLUMNS) + 2  # the columns, then the two body digests
    change = {**old, "action": "key.update", "after": {"rpm": 2}}
    encoded = orjson.loads(canonical(change, None, None))
    assert encoded[:-1] == plain and encoded[-1] == {"action": "key.update", "after": {"rpm": 2}}

    spooled_by_an_older_version = {k: v for k, v in old.items() if k not in LATE_COLUMNS}
    (shipped,), _, _ = split_records([{"e": spooled_by_an_older_version}])
    assert all(shipped[name] is None for name in LATE_COLUMNS)
