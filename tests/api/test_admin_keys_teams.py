"""`/admin/keys`, `/admin/teams` and `gateway keys …`: shapes, roles, hashing, revocation, audit."""

from __future__ import annotations

import hashlib
import json
import time

import httpx
import openai
import pytest

from tests.support.gateway_proc import GatewayProcess

KEY_FIELDS = {"name", "team", "role", "models", "rpm", "tpm", "max_concurrent", "budget_usd",
              "budget_period", "expires_at", "metadata", "id"}


def test_create_key_returns_secret_once_and_stores_hash(gateway: GatewayProcess) -> None:
    gateway.create_team(name="shapes-team", rpm=100)
    body = {"name": "shapes", "team": "shapes-team", "role": "app", "models": ["demo"],
            "rpm": 10, "tpm": 1000, "max_concurrent": 2, "budget_usd": 12.5,
            "budget_period": "day", "expires_at": "2099-01-01T00:00:00Z",
            "metadata": {"owner": "qa"}}
    r = gateway.admin("POST", "/admin/keys", body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert KEY_FIELDS | {"key"} <= set(created)
    for field, value in body.items():
        if field != "expires_at":
            assert created[field] == value, field
    assert created["expires_at"] == "2099-01-01T00:00:00.000Z"
    secret = created["key"]
    listed = gateway.admin("GET", "/admin/keys").json()["data"]
    mine = [k for k in listed if k["id"] == created["id"]]
    assert len(mine) == 1 and "key" not in mine[0]
    assert secret not in json.dumps(listed)
    got = gateway.admin("GET", f"/admin/keys/{created['id']}").json()
    assert "key" not in got and got["name"] == "shapes"
    # Only the hash is stored.
    import sqlite3

    db = gateway.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT key_hash FROM api_keys WHERE id = ?",
                           (created["id"],)).fetchone()
        dump = "\n".join(conn.iterdump())
    assert row[0] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in dump


def test_defaults_and_patch(gateway: GatewayProcess) -> None:
    created = gateway.create_key(name="defaults")
    assert created["role"] == "app" and created["budget_period"] == "month"
    assert created["models"] is None and created["team"] is None
    r = gateway.admin("PATCH", f"/admin/keys/{created['id']}", {"rpm": 5, "models": ["demo"]})
    assert r.status_code == 200 and r.json()["rpm"] == 5 and r.json()["models"] == ["demo"]
    r = gateway.admin("PATCH", f"/admin/keys/{created['id']}", {"rpm": None})
    assert r.json()["rpm"] is None and r.json()["models"] == ["demo"]
    # The patch takes effect at once on the model list.
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=created["key"], max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["demo"]


@pytest.mark.parametrize("body,param", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x", "role": "root"}, "role"),
    ({"name": "x", "rpm": -1}, "rpm"),
    ({"name": "x", "rpm": "10"}, "rpm"),
    ({"name": "x", "budget_usd": -3}, "budget_usd"),
    ({"name": "x", "budget_period": "week"}, "budget_period"),
    ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
    ({"name": "x", "bogus": 1}, "bogus"),
    ({"name": "x", "team": "no-such-team"}, "team"),
    ({"name": "x", "models": ["no-such-model"]}, "models"),
])
def test_create_key_rejects_nonsense(gateway: GatewayProcess, body: dict, param: str) -> None:
    r = gateway.admin("POST", "/admin/keys", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_roles_are_checked(gateway: GatewayProcess) -> None:
    app = gateway.create_key(name="plain-app")["key"]
    comp = gateway.create_key(name="comp", role="compliance")["key"]
    admin = gateway.create_key(name="second-admin", role="admin")["key"]
    assert gateway.admin("GET", "/admin/keys", key=app).status_code == 403
    assert gateway.admin("GET", "/admin/keys", key=comp).status_code == 403
    assert gateway.admin("POST", "/admin/keys", {"name": "x"}, key=app).status_code == 403
    assert gateway.admin("GET", "/admin/keys", key="nope").status_code == 401
    assert httpx.get(gateway.url + "/admin/keys").status_code == 401
    r = gateway.admin("POST", "/admin/keys", {"name": "made-by-admin-key"}, key=admin)
    assert r.status_code == 201
    # Admin keys may also call /v1.
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=admin, max_retries=0)
    assert sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "a"}])


def test_admin_changes_are_audited_reads_are_not(gateway: GatewayProcess) -> None:
    r = httpx.post(gateway.url + "/admin/keys", json={"name": "audited-create"},
                   headers={"authorization": f"Bearer {gateway.admin_key}",
                            "x-request-id": "admin-create-1"})
    assert r.status_code == 201
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": "admin-create-1"})
    assert event["key_id"] == "bootstrap" and event["endpoint"] == "POST /admin/keys"
    assert event["status_code"] == 201
    httpx.get(gateway.url + "/admin/keys", headers={"authorization": f"Bearer {gateway.admin_key}",
                                                    "x-request-id": "admin-read-1"})
    time.sleep(0.3)
    assert gateway.audit_rows("request_id = 'admin-read-1'") == []
    # A refused change is audited too.
    httpx.post(gateway.url + "/admin/keys", json={"name": "x"},
               headers={"authorization": "Bearer wrong", "x-request-id": "admin-denied-1"})
    (denied,) = gateway.wait_for_audit("request_id = :r", {"r": "admin-denied-1"})
    assert denied["status_code"] == 401 and denied["key_id"] is None


def test_teams_crud(gateway: GatewayProcess) -> None:
    r = gateway.admin("POST", "/admin/teams", {"name": "crud-team", "rpm": 50, "budget_usd": 100,
                                               "models": ["demo"], "policy": "default"})
    assert r.status_code == 201
    team = r.json()
    assert {"name", "models", "rpm", "tpm", "max_concurrent", "budget_usd", "budget_period",
            "policy"} <= set(team)
    assert team["budget_period"] == "month"
    assert gateway.admin("POST", "/admin/teams", {"name": "crud-team"}).status_code == 409
    assert gateway.admin("GET", "/admin/teams/crud-team").json()["rpm"] == 50
    assert gateway.admin("GET", "/admin/teams/none-such").status_code == 404
    r = gateway.admin("PATCH", "/admin/teams/crud-team", {"tpm": 999})
    assert r.json()["tpm"] == 999 and r.json()["rpm"] == 50
    names = [t["name"] for t in gateway.admin("GET", "/admin/teams").json()["data"]]
    assert "crud-team" in names
    assert gateway.admin("POST", "/admin/teams", {"name": "bad/name"}).status_code == 400


def test_cli_keys_create_list_revoke(gateway: GatewayProcess) -> None:
    out = gateway.cli("keys", "create", "--name", "from-cli", "--models", "demo", "--rpm", "7")
    created = json.loads(out.stdout)
    assert created["key"].startswith("sk-gw-") and created["rpm"] == 7
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=created["key"], max_retries=0)
    assert sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "a"}])
    listed = json.loads(gateway.cli("keys", "list").stdout)["data"]
    assert any(k["id"] == created["id"] for k in listed)
    assert created["key"] not in json.dumps(listed)
    gateway.cli("keys", "revoke", created["id"])
    deadline = time.monotonic() + 5  # another process: seen within the key cache TTL
    while time.monotonic() < deadline:
        try:
            sdk.models.list()
        except openai.AuthenticationError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("a key revoked from the CLI was still accepted after 5 s")
    assert gateway.cli("keys", "revoke", "key_missing", check=False).returncode == 1
    assert gateway.cli("keys", "create", check=False).returncode == 2
    assert gateway.cli("keys", "create", "--name", "x", "--team", "nope",
                       check=False).returncode == 1
