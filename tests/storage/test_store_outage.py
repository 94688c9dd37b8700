"""PostgreSQL stops under a real gateway: every answer is one of the contract's, never a 500.

DESIGN.md "Failure answers": during a store outage a key the replica has seen is answered
as it was last seen (200 for a good one, 401 for an unknown, revoked one), a key it cannot
check is 503 `auth_unavailable`, admin, audit and spend endpoints are 503
`store_unavailable`, UI pages say so with a 503 page, `/readyz` says not ready. Every
request that leaves an audit event leaves it through the spool: it is in SQL, exactly once,
after the database is back. The stop and start are `scripts/pg-ctl.sh` on the server
`scripts/test-services.sh` started (skipped with the reason elsewhere).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.audit.test_audit_postgres import pg_ctl
from tests.audit.test_audit_support import wait_rows
from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.support.postgres import fresh_database
from tests.ui.test_ui_http import csrf_of

pytestmark = pytest.mark.postgres

HI = [{"role": "user", "content": "hi"}]
TEMPLATE = {"name": "outage-greet", "model": "demo",
            "variables": {"who": {"type": "string", "required": True}},
            "messages": [{"role": "user", "content": "hello {{ who }}"}]}
UNSEEN_KEY = "sk-gw-never-seen-" + "x" * 24


@pytest.fixture
def gw(tmp_path: Path, upstream: FakeUpstream) -> Iterator[GatewayProcess]:
    for url in fresh_database():
        # a short key cache: every entry has expired by the time the requests below are sent
        proc = GatewayProcess(tmp_path, standard_config(upstream.url), database_url=url,
                              env={**GATEWAY_ENV, "GATEWAY_KEY_CACHE_TTL_S": "0.5"}).start()
        try:
            yield proc
        finally:
            proc.stop()


class Outage:
    """`stop()` takes PostgreSQL down; the fixture brings it back whatever happens."""

    def __init__(self) -> None:
        self.down = False

    def stop(self) -> None:
        pg_ctl("stop")
        self.down = True

    def start(self) -> None:
        pg_ctl("start")
        self.down = False


@pytest.fixture
def outage() -> Iterator[Outage]:
    state = Outage()
    yield state
    if state.down:
        state.start()


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def chat(gw: GatewayProcess, key: str, rid: str, **kw: Any) -> tuple[int, str | None]:
    """The status and error code the official client sees."""
    try:
        if kw.pop("stream", False):
            list(sdk(gw, key).chat.completions.create(
                model="demo", messages=HI, stream=True, extra_headers={"x-request-id": rid},
                **kw))
        else:
            sdk(gw, key).chat.completions.create(model=kw.pop("model", "demo"), messages=HI,
                                                 extra_headers={"x-request-id": rid}, **kw)
        return 200, None
    except openai.APIStatusError as exc:
        return exc.status_code, exc.code


def http(gw: GatewayProcess, method: str, path: str, key: str | None = None,
         body: Any = None) -> httpx.Response:
    return httpx.request(method, gw.url + path, json=body, timeout=30,
                         headers={"authorization": f"Bearer {key or gw.admin_key}"})


# What each kind of key gets from /v1 while the database is down: (kind, extra args, status,
# code). `seen` keys were used (and cached) before the outage; every cache entry has expired.
V1_CASES = [
    ("good", {}, 200, None),
    ("good", {"model": "gpt-4o-mini"}, 200, None),
    ("good", {"stream": True}, 200, None),
    ("good", {"extra_body": {"template": {"name": "outage-greet",
                                          "variables": {"who": "db"}}}}, 200, None),
    ("budgeted", {}, 200, None),
    ("seen_unknown", {}, 401, "invalid_api_key"),
    ("revoked", {}, 401, "invalid_api_key"),
    ("unseen", {}, 503, "auth_unavailable"),
    ("unseen", {"stream": True}, 503, "auth_unavailable"),
]

# Admin, audit and spend endpoints (bootstrap admin key: no lookup needed) -> 503.
ADMIN_CASES = [
    ("GET", "/admin/keys", None),
    ("POST", "/admin/keys", {"name": "during-outage"}),
    ("GET", "/admin/keys/{key_id}", None),
    ("PATCH", "/admin/keys/{key_id}", {"rpm": 5}),
    ("DELETE", "/admin/keys/{key_id}", None),
    ("GET", "/admin/teams", None),
    ("POST", "/admin/teams", {"name": "outage-team"}),
    ("GET", "/admin/templates", None),
    ("GET", "/admin/templates/outage-greet", None),
    ("POST", "/admin/templates/outage-greet/versions", TEMPLATE),
    ("GET", "/admin/spend?group_by=key", None),
    ("GET", "/admin/policies/effective?key_id={key_id}", None),
    ("GET", "/audit/events", None),
    ("GET", "/audit/events/evt_0123456789", None),
    ("GET", "/audit/export?format=jsonl", None),
    ("GET", "/audit/verify", None),
]
AUDITED = {"POST", "PATCH", "DELETE", "PUT"}  # admin changes leave an event; reads do not


def test_database_outage_answers_are_the_contracts_and_audited(
        gw: GatewayProcess, outage: Outage) -> None:
    gw.create_team(name="outage-team-0")
    keys = {"good": gw.create_key(name="good", team="outage-team-0"),
            "budgeted": gw.create_key(name="budgeted", budget_usd=5.0),
            "revoked": gw.create_key(name="revoked")}
    assert http(gw, "POST", "/admin/templates", body=TEMPLATE).status_code == 201
    assert http(gw, "DELETE", f"/admin/keys/{keys['revoked']['id']}").status_code == 200
    secrets = {kind: k["key"] for kind, k in keys.items()}
    secrets["seen_unknown"] = "sk-gw-seen-but-unknown-" + "y" * 20
    secrets["unseen"] = UNSEEN_KEY
    for kind in ("good", "budgeted", "revoked", "seen_unknown"):  # each seen once
        chat(gw, secrets[kind], f"warm-{kind}")
    ui = httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30)
    signed = ui.post("/ui/login", data={"csrf_token": csrf_of(ui.get("/ui/login").text),
                                        "key": gw.admin_key})
    assert signed.status_code == 303

    outage.stop()
    time.sleep(1)  # every key cache entry (0.5 s) has expired
    tag = uuid.uuid4().hex[:8]
    got, expected, v1_ids = [], [], []
    for i, (kind, kw, status, code) in enumerate(V1_CASES):
        rid = f"outage-{tag}-{i}"
        v1_ids.append(rid)
        got.append((kind, i, chat(gw, secrets[kind], rid, **kw)))
        expected.append((kind, i, (status, code)))
    assert got == expected

    models = http(gw, "GET", "/v1/models", UNSEEN_KEY)
    assert (models.status_code, models.json()["error"]["code"]) == (503, "auth_unavailable")
    assert http(gw, "GET", "/v1/models", secrets["good"]).status_code == 200

    admin_ids = []
    for method, path, body in ADMIN_CASES:
        rid = f"outage-admin-{tag}-{len(admin_ids)}"
        r = httpx.request(method, gw.url + path.format(key_id=keys["good"]["id"]), json=body,
                          timeout=30, headers={"authorization": f"Bearer {gw.admin_key}",
                                               "x-request-id": rid})
        assert r.status_code == 503, (method, path, r.status_code, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert r.json()["error"]["code"] == "store_unavailable", (method, path, r.text)
        if method in AUDITED:
            admin_ids.append(rid)
    unseen_admin = http(gw, "GET", "/admin/keys", UNSEEN_KEY)
    assert (unseen_admin.status_code, unseen_admin.json()["error"]["code"]) == \
        (503, "auth_unavailable")

    page = ui.get("/ui/keys")
    assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    fresh = httpx.Client(base_url=gw.url, follow_redirects=False, timeout=30)
    login = fresh.post("/ui/login", data={"csrf_token": csrf_of(fresh.get("/ui/login").text),
                                          "key": UNSEEN_KEY})
    assert login.status_code == 503 and "cannot be reached" in login.text

    ready = httpx.get(gw.url + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert ready.json()["checks"]["database"].startswith("unreachable")
    assert httpx.get(gw.url + "/healthz", timeout=10).status_code == 200

    outage.start()
    deadline = time.monotonic() + 30
    while httpx.get(gw.url + "/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the database came back"
        time.sleep(0.2)
    # every /v1 request and every refused admin change was audited through the spool, once
    ids = v1_ids + admin_ids
    params = {f"r{i}": rid for i, rid in enumerate(ids)}
    where = "request_id IN (" + ", ".join(f":{p}" for p in params) + ")"
    rows = wait_rows(gw, where, params, count=len(ids), timeout_s=30)
    assert sorted(r["request_id"] for r in rows) == sorted(ids)
    by_id = {r["request_id"]: r for r in rows}
    assert [by_id[rid]["status_code"] for rid in v1_ids] == [c[2] for c in V1_CASES]
    assert {by_id[rid]["error_code"] for rid in admin_ids} == {"store_unavailable"}
    assert by_id[v1_ids[0]]["key_id"] == keys["good"]["id"]
    # the spend counted while the database was away reaches the rollups
    deadline = time.monotonic() + 15
    while True:
        spend = http(gw, "GET", "/admin/spend?group_by=key").json()["data"]
        requests = {row["group"]: row["requests"] for row in spend}
        if requests.get(keys["good"]["id"], 0) >= 5:
            break
        assert time.monotonic() < deadline, requests
        time.sleep(0.3)
    # and the key store answers again: an unseen key is simply unknown
    assert chat(gw, UNSEEN_KEY, f"after-{tag}") == (401, "invalid_api_key")
