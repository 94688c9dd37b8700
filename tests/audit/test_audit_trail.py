"""The audit trail end to end on SQLite: exactly-once, shape, bodies, queries, export, access,
tamper evidence (API and CLI), retention, an unwritable spool, SIGKILL and restart, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.timeutil import iso, utcnow
from tests.audit.test_audit_support import (
    EVENT_FIELDS,
    TAMPERS,
    chain_rows,
    metrics,
    sample,
    sql,
    verify_api,
    verify_cli,
    wait_rows,
)
from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess, run_in_thread

HMAC_KEY = "audit-hmac-test-key-0123456789"
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
MSG = [{"role": "user", "content": "audit me"}]
POLICIES = {
    "bodies-none.yaml": "name: bodies-none\napplies_to: {keys: [k-none]}\n"
                        "audit: {bodies: none}\n",
    "bodies-full.yaml": "name: bodies-full\napplies_to: {keys: [k-full]}\n"
                        "audit: {bodies: full}\n",
}


def _config(upstream: FakeUpstream, faulty: FakeUpstream, extra: str = "") -> str:
    return standard_config(upstream.url, faulty.url) + "policies_dir: policies\n" + extra


@pytest.fixture(scope="module")
def agw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
        fault_upstream_server: FakeUpstream) -> Iterator[GatewayProcess]:
    work = tmp_path_factory.mktemp("audit")
    (work / "policies").mkdir()
    for name, text in POLICIES.items():
        (work / "policies" / name).write_text(text)
    gw = GatewayProcess(work, _config(upstream, fault_upstream_server,
                                      "audit: {bodies: redacted, spool_dir: spool}\n"),
                        env={**GATEWAY_ENV, "GATEWAY_AUDIT_HMAC_KEY": HMAC_KEY}).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def people(agw: GatewayProcess) -> dict[str, dict[str, Any]]:
    agw.create_team(name="alpha")
    agw.create_team(name="beta")
    return {
        "alpha": agw.create_key(name="app-alpha", team="alpha"),
        "beta": agw.create_key(name="app-beta", team="beta"),
        "comp-alpha": agw.create_key(name="comp-alpha", team="alpha", role="compliance"),
        "comp-all": agw.create_key(name="comp-all", role="compliance"),
        "none": agw.create_key(name="k-none"),
        "full": agw.create_key(name="k-full"),
    }


def _sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def _events(gw: GatewayProcess, query: str, key: str | None = None) -> dict[str, Any]:
    r = gw.admin("GET", "/audit/events" + query, key=key)
    assert r.status_code == 200, r.text
    return r.json()


def _by_request(gw: GatewayProcess, request_id: str, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        data = _events(gw, f"?request_id={request_id}", key)["data"]
        if data:
            assert len(data) == 1
            return data[0]
        time.sleep(0.1)
    raise AssertionError(f"no event for {request_id}")


# --- exactly once --------------------------------------------------------------------------
async def test_exactly_one_event_per_request_under_mixed_load(
        agw: GatewayProcess, people: dict[str, Any], fault_upstream: FakeUpstream) -> None:
    fault_upstream.set_fault("chunk-delay:100")  # `faulty` streams slowly: clients leave early
    key = people["alpha"]["key"]
    tag = f"load-{time.time_ns()}"
    n = 150
    answered = 0

    async def one(client: httpx.AsyncClient, i: int) -> None:
        nonlocal answered
        h = {"authorization": f"Bearer {key}", "x-request-id": f"{tag}-{i}"}
        kind = i % 10
        url = "/v1/chat/completions"
        body: dict[str, Any] = {"model": "demo", "messages": MSG}
        if kind == 1:
            body = {"model": "gpt-4o-mini", "messages": MSG, "stream": True}
        elif kind == 2:  # cancelled by the client after the first chunk
            body = {"model": "faulty", "stream": True,
                    "messages": [{"role": "user", "content": " ".join(["w"] * 30)}]}
            async with client.stream("POST", url, json=body, headers=h) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        break
            return
        elif kind == 3:
            body = {"model": "no-such-model", "messages": MSG}
        elif kind == 4:
            h["authorization"] = "Bearer sk-wrong"
        elif kind == 5:
            body = {"model": "broken", "messages": MSG}  # nothing listens: 502 after retries
        elif kind == 6:
            url = "/v1/embeddings"
            body = {"model": "demo-embed", "input": "x"}
        elif kind == 7:
            r = await client.post(url, content=b"{not json", headers=h)
            answered += 1
            return
        elif kind == 8:
            url = "/v1/no-such-path"
        r = await client.post(url, json=body, headers=h)
        answered += 1
        if kind == 1:
            assert r.text.rstrip().endswith("data: [DONE]")

    async with httpx.AsyncClient(base_url=agw.url, timeout=60,
                                 limits=httpx.Limits(max_connections=40)) as client:
        await asyncio.gather(*(one(client, i) for i in range(n)))
    rows = await asyncio.to_thread(wait_rows, agw, "request_id LIKE :t", {"t": f"{tag}-%"},
                                   count=n)
    assert sorted(r["request_id"] for r in rows) == sorted(f"{tag}-{i}" for i in range(n))
    by_id = {r["request_id"]: r for r in rows}
    assert by_id[f"{tag}-2"]["cancelled"] and by_id[f"{tag}-2"]["stream"]
    assert by_id[f"{tag}-3"]["status_code"] == 404
    assert by_id[f"{tag}-4"]["status_code"] == 401 and by_id[f"{tag}-4"]["key_id"] is None
    assert by_id[f"{tag}-5"]["status_code"] == 502
    assert by_id[f"{tag}-7"]["status_code"] == 400
    assert by_id[f"{tag}-8"]["status_code"] == 404
    # and every one of them is chained: the whole log verifies
    assert verify_api(agw)["ok"] is True


# --- shape and bodies ----------------------------------------------------------------------
def test_event_has_exactly_the_design_fields(agw: GatewayProcess,
                                             people: dict[str, Any]) -> None:
    rid = f"shape-{time.time_ns()}"
    reply = _sdk(agw, people["alpha"]["key"]).chat.completions.create(
        model="gpt-4o-mini", messages=MSG, user="end-user-7", extra_headers={"x-request-id": rid})
    event = _by_request(agw, rid)
    assert list(event) == EVENT_FIELDS
    for name in ("received_at", "first_byte_at", "completed_at"):
        assert ISO_Z.match(event[name]), event[name]
    row = agw.audit_rows("request_id = :r", {"r": rid})[0]
    assert event["cost_usd"] == pytest.approx(row["cost_nanos"] / 1e9) and row["cost_nanos"] > 0
    assert event["key_id"] == people["alpha"]["id"] and event["team"] == "alpha"
    assert event["user"] == "end-user-7" and event["model_served"] == "gpt-4o-mini"
    assert event["input_tokens"] == reply.usage.prompt_tokens
    assert event["total_tokens"] == reply.usage.total_tokens
    assert event["pii"] is None and event["stream"] is False
    assert event["request_body"]["messages"] == MSG  # default policy: redacted (as sent)
    assert event["response_body"]["choices"][0]["message"]["content"] == \
        reply.choices[0].message.content
    assert re.fullmatch(r"[0-9a-f]{64}", event["hash"]) and event["prev_hash"]
    one = agw.admin("GET", f"/audit/events/{event['id']}")
    assert one.status_code == 200 and one.json() == event


def test_bodies_follow_the_policy(agw: GatewayProcess, people: dict[str, Any]) -> None:
    tag = time.time_ns()
    for who in ("none", "full"):
        _sdk(agw, people[who]["key"]).chat.completions.create(
            model="demo", messages=MSG, extra_headers={"x-request-id": f"b-{who}-{tag}"})
    chunks = [c.choices[0].delta.content or "" for c in _sdk(agw, people["full"]["key"])
              .chat.completions.create(model="demo", messages=MSG, stream=True,
                                       extra_headers={"x-request-id": f"b-stream-{tag}"})
              if c.choices]
    none = _by_request(agw, f"b-none-{tag}")
    assert none["request_body"] is None and none["response_body"] is None
    assert sql(agw.database_url, "SELECT count(*) AS n FROM audit_bodies WHERE event_id = :i",
               {"i": none["id"]})[0]["n"] == 0
    full = _by_request(agw, f"b-full-{tag}")
    assert full["request_body"] == {"model": "demo", "messages": MSG}
    assert full["response_body"]["object"] == "chat.completion"
    stream = _by_request(agw, f"b-stream-{tag}")
    assert stream["stream"] is True and stream["response_body"] == "".join(chunks)
    # bodies live in their own table, not in the event metadata
    assert "request_body" not in agw.audit_rows("request_id = :r", {"r": f"b-full-{tag}"})[0]


# --- queries -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(agw: GatewayProcess, people: dict[str, Any]) -> dict[str, Any]:
    """A known set of events: 6 alpha, 4 beta, in a known time window."""
    tag = f"q{time.time_ns()}"
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + "Z"
    alpha, beta = _sdk(agw, people["alpha"]["key"]), _sdk(agw, people["beta"]["key"])
    ids = []
    for i in range(6):
        rid = f"{tag}-a{i}"
        alpha.chat.completions.create(model="demo" if i % 2 else "gpt-4o-mini", messages=MSG,
                                      user=f"{tag}-u{i % 3}", stream=False,
                                      extra_headers={"x-request-id": rid})
        ids.append(rid)
    for i in range(4):
        rid = f"{tag}-b{i}"
        with contextlib.suppress(openai.NotFoundError):
            beta.chat.completions.create(model="demo" if i < 3 else "missing-model",
                                         messages=MSG, extra_headers={"x-request-id": rid})
        ids.append(rid)
    stream_rid = f"{tag}-s"
    for _ in alpha.chat.completions.create(model="demo", messages=MSG, stream=True,
                                           user=f"{tag}-u0",
                                           extra_headers={"x-request-id": stream_rid}):
        pass
    ids.append(stream_rid)
    wait_rows(agw, "request_id LIKE :t", {"t": f"{tag}-%"}, count=len(ids))
    until = iso(utcnow() + timedelta(milliseconds=300))
    time.sleep(0.4)
    return {"tag": tag, "ids": ids, "since": since, "until": until}


def _all_pages(gw: GatewayProcess, query: str, key: str | None = None, limit: int = 3
               ) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    page = _events(gw, f"{query}&limit={limit}", key)
    out.extend(page["data"])
    while page["next_cursor"]:
        page = _events(gw, f"{query}&limit={limit}&cursor={page['next_cursor']}", key)
        out.extend(page["data"])
        assert len(out) < 10_000
    return out


def test_filters_and_cursor_pagination_newest_first(agw: GatewayProcess,
                                                    seeded: dict[str, Any],
                                                    people: dict[str, Any]) -> None:
    tag, window = seeded["tag"], f"since={seeded['since']}&until={seeded['until']}"
    mine = [e for e in _all_pages(agw, f"?{window}") if e["request_id"].startswith(tag)]
    assert sorted(e["request_id"] for e in mine) == sorted(seeded["ids"])
    everything = _all_pages(agw, f"?{window}", limit=1000)
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    stamps = [e["received_at"] for e in everything]
    assert stamps == sorted(stamps, reverse=True)

    def rids(query: str) -> set[str]:
        return {e["request_id"] for e in _all_pages(agw, f"?{window}&{query}")
                if e["request_id"].startswith(tag)}

    a = {r for r in seeded["ids"] if "-a" in r} | {f"{tag}-s"}
    assert rids("team=alpha") == a
    assert rids(f"key_id={people['beta']['id']}") == {f"{tag}-b{i}" for i in range(4)}
    assert rids(f"user={tag}-u0") == {f"{tag}-a0", f"{tag}-a3", f"{tag}-s"}
    assert rids("model_requested=gpt-4o-mini") == {f"{tag}-a0", f"{tag}-a2", f"{tag}-a4"}
    assert rids("model_served=demo&team=alpha") == {f"{tag}-a1", f"{tag}-a3", f"{tag}-a5",
                                                     f"{tag}-s"}
    assert rids("deployment=demo/demo-1&team=beta") == {f"{tag}-b0", f"{tag}-b1", f"{tag}-b2"}
    assert rids("status_code=404&team=beta") == {f"{tag}-b3"}
    assert rids("error_code=model_not_found&team=beta") == {f"{tag}-b3"}
    assert rids(f"request_id={tag}-a4") == {f"{tag}-a4"}
    assert rids("stream=true&team=alpha") == {f"{tag}-s"}
    assert rids("stream=false&team=alpha") == a - {f"{tag}-s"}
    assert rids("template_name=nothing-like-this") == set()
    assert rids("pii_kind=email") == set()
    # a time window after everything: nothing
    assert _events(agw, f"?since={seeded['until']}")["data"] == []
    # default page size is 100 and a full page has a cursor
    page = _events(agw, "?limit=2")
    assert len(page["data"]) == 2 and page["next_cursor"]
    assert len(_events(agw, "")["data"]) <= 100


@pytest.mark.parametrize("query,param", [
    ("?bogus=1", "bogus"),
    ("?status_code=abc", "status_code"),
    ("?status_code=99", "status_code"),
    ("?stream=maybe", "stream"),
    ("?since=yesterday", "since"),
    ("?since=2026-01-01T00:00:00", "since"),
    ("?since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z", "since"),
    ("?limit=1001", "limit"),
    ("?limit=0", "limit"),
    ("?limit=ten", "limit"),
    ("?pii_kind=shoe_size", "pii_kind"),
    ("?team=a&team=b", "team"),
    ("?cursor=not-a-cursor", "cursor"),
])
def test_bad_queries_are_openai_shaped_400s(agw: GatewayProcess, query: str,
                                            param: str) -> None:
    r = agw.admin("GET", "/audit/events" + query)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param
    r = agw.admin("GET", "/audit/export" + query)
    if "limit" not in query:  # export has no page size cap
        assert r.status_code == 400, r.text


def test_tampered_or_foreign_cursor_is_refused(agw: GatewayProcess,
                                               seeded: dict[str, Any]) -> None:
    page = _events(agw, "?team=alpha&limit=1")
    cursor = page["next_cursor"]
    assert cursor
    assert agw.admin("GET", f"/audit/events?team=alpha&limit=1&cursor={cursor}").status_code \
        == 200
    body, sig = cursor.split(".")

    def flip(text: str) -> str:
        return text[:-1] + ("A" if text[-1] != "A" else "B")

    for bad in (f"{flip(body)}.{sig}", f"{body}.{flip(sig)}", cursor + "x"):
        r = agw.admin("GET", f"/audit/events?team=alpha&limit=1&cursor={bad}")
        assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"
    # the same cursor with other filters is not a continuation of that query
    r = agw.admin("GET", f"/audit/events?team=beta&limit=1&cursor={cursor}")
    assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"


def test_who_may_read_the_audit_log(agw: GatewayProcess, seeded: dict[str, Any],
                                    people: dict[str, Any]) -> None:
    paths = ["/audit/events", "/audit/events/abc", "/audit/export", "/audit/verify"]
    for path in paths:
        assert httpx.get(agw.url + path).status_code == 401
        r = agw.admin("GET", path, key=people["alpha"]["key"])
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    window = f"since={seeded['since']}&until={seeded['until']}"
    comp_alpha = people["comp-alpha"]["key"]
    seen = _all_pages(agw, f"?{window}", key=comp_alpha, limit=50)
    assert seen and {e["team"] for e in seen} == {"alpha"}
    assert agw.admin("GET", f"/audit/events?team=beta&{window}", key=comp_alpha).status_code \
        == 403
    beta_event = _by_request(agw, f"{seeded['tag']}-b0")
    assert agw.admin("GET", f"/audit/events/{beta_event['id']}", key=comp_alpha).status_code \
        == 404
    alpha_event = _by_request(agw, f"{seeded['tag']}-a0")
    assert agw.admin("GET", f"/audit/events/{alpha_event['id']}", key=comp_alpha).status_code \
        == 200
    lines = agw.admin("GET", f"/audit/export?{window}", key=comp_alpha).text.splitlines()
    assert lines and {json.loads(x)["team"] for x in lines} == {"alpha"}
    everyone = _all_pages(agw, f"?{window}", key=people["comp-all"]["key"], limit=50)
    assert {"alpha", "beta"} <= {e["team"] for e in everyone}
    assert agw.admin("GET", "/audit/verify", key=people["comp-all"]["key"]).status_code == 200
    assert agw.admin("GET", "/audit/events/0000000000000000ffffffff").status_code == 404
    # reads are not audited
    assert agw.audit_rows("endpoint LIKE :p", {"p": "%audit%"}) == []


def test_export_streams_csv_and_jsonl(agw: GatewayProcess, seeded: dict[str, Any]) -> None:
    query = f"since={seeded['since']}&until={seeded['until']}&team=alpha"
    expected = [e["id"] for e in _all_pages(agw, f"?{query}", limit=1000)]
    with httpx.stream("GET", f"{agw.url}/audit/export?format=jsonl&{query}", timeout=30,
                      headers={"authorization": f"Bearer {agw.admin_key}"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        assert "attachment" in r.headers["content-disposition"]
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert [e["id"] for e in events] == expected
    assert all(list(e) == EVENT_FIELDS for e in events)
    r = agw.admin("GET", f"/audit/export?format=csv&{query}")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == expected
    assert list(rows[0]) == EVENT_FIELDS
    assert all(row["team"] == "alpha" for row in rows)
    assert {row["stream"] for row in rows} == {"true", "false"}
    assert agw.admin("GET", f"/audit/export?format=xml&{query}").status_code == 400
    # the CLI exports the same thing
    out = agw.cli("audit", "export", "--format", "csv", "--team", "alpha",
                  "--since", seeded["since"], "--until", seeded["until"])
    assert [row["id"] for row in csv.DictReader(io.StringIO(out.stdout))] == expected


def test_cli_query(agw: GatewayProcess, seeded: dict[str, Any]) -> None:
    out = agw.cli("audit", "query", "--request-id", f"{seeded['tag']}-a1")
    page = json.loads(out.stdout)
    assert [e["request_id"] for e in page["data"]] == [f"{seeded['tag']}-a1"]
    assert list(page["data"][0]) == EVENT_FIELDS
    first = json.loads(agw.cli("audit", "query", "--team", "alpha", "--limit", "1").stdout)
    second = json.loads(agw.cli("audit", "query", "--team", "alpha", "--limit", "1",
                                "--cursor", first["next_cursor"]).stdout)
    assert second["data"][0]["id"] < first["data"][0]["id"]
    bad = agw.cli("audit", "query", "--status-code", "abc", check=False)
    assert bad.returncode == 2 and "status_code" in bad.stderr


# --- tamper evidence -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(TAMPERS))
def test_verify_finds_tampering_at_the_right_event(agw: GatewayProcess, seeded: dict[str, Any],
                                                   kind: str) -> None:
    assert verify_api(agw)["ok"] is True
    rows = chain_rows(agw.database_url, agw.audit_rows(
        "request_id = :r", {"r": f"{seeded['tag']}-a0"})[0]["replica"])
    assert len(rows) >= 10
    bad_id, undo = TAMPERS[kind](agw.database_url, rows[:-2])
    try:
        result = verify_api(agw)
        assert result["ok"] is False and result["first_bad_id"] == bad_id, (kind, result)
        assert result["events_checked"] > 0
        code, cli = verify_cli(agw)
        assert code == 1 and cli["first_bad_id"] == bad_id and cli["ok"] is False
    finally:
        undo()
    assert verify_api(agw)["ok"] is True
    assert verify_cli(agw)[0] == 0


def _typed_row(url: str, event_id: str) -> tuple[dict[str, Any], str | None, str | None]:
    """An event as the database types it (what verify sees), and its bodies."""
    from sqlalchemy import select

    from gateway.storage.engine import create_engine
    from gateway.storage.tables import audit_bodies, audit_events

    async def read() -> tuple[dict[str, Any], str | None, str | None]:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(select(audit_events).where(
                    audit_events.c.id == event_id))).mappings().one()
                body = (await conn.execute(select(audit_bodies).where(
                    audit_bodies.c.event_id == event_id))).mappings().first()
        finally:
            await engine.dispose()
        return dict(row), body and body["request_body"], body and body["response_body"]

    return run_in_thread(read)


def test_hmac_key_makes_rehashing_useless(agw: GatewayProcess, seeded: dict[str, Any]) -> None:
    from gateway.audit.chain import Hasher, canonical

    event_id = agw.audit_rows("request_id = :r", {"r": f"{seeded['tag']}-a2"})[0]["id"]
    row, request_body, response_body = _typed_row(agw.database_url, event_id)
    forged = dict(row, cost_nanos=1)

    def forge(hasher: Hasher) -> None:
        digest = hasher.hash(canonical(forged, request_body, response_body))
        sql(agw.database_url, "UPDATE audit_events SET cost_nanos = 1, hash = :h "
            "WHERE id = :i", {"h": digest, "i": event_id})

    def undo() -> None:
        sql(agw.database_url, "UPDATE audit_events SET cost_nanos = :c, hash = :h "
            "WHERE id = :i", {"c": row["cost_nanos"], "h": row["hash"], "i": event_id})

    forge(Hasher(None))  # what anyone with SQL access could compute
    try:
        result = verify_api(agw)
        assert result["ok"] is False and result["first_bad_id"] == event_id
        assert verify_cli(agw)[1]["first_bad_id"] == event_id
    finally:
        undo()
    # control: only with the key itself does a forgery of this event pass (the next event
    # would still break, as its prev_hash no longer matches)
    forge(Hasher(HMAC_KEY.encode()))
    try:
        result = verify_api(agw)
        assert result["first_bad_id"] != event_id
    finally:
        undo()
    assert verify_api(agw)["ok"] is True
    code, result = verify_cli(agw, {"GATEWAY_AUDIT_HMAC_KEY": "some-other-key"})
    assert code == 1 and result["first_bad_id"] is not None


# --- retention -----------------------------------------------------------------------------
def test_purge_in_batches_keeps_the_chain_verifiable(tmp_path: Path,
                                                     upstream: FakeUpstream) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url),
                        env={**GATEWAY_ENV, "GATEWAY_AUDIT_HMAC_KEY": HMAC_KEY}).start()
    try:
        sdk = _sdk(gw, gw.admin_key)
        for i in range(9):
            sdk.chat.completions.create(model="demo", messages=MSG,
                                        extra_headers={"x-request-id": f"old-{i}"})
        wait_rows(gw, "request_id LIKE 'old-%'", count=9)
        time.sleep(0.05)
        cutoff = iso(utcnow())
        time.sleep(0.05)
        for i in range(4):
            sdk.chat.completions.create(model="demo", messages=MSG,
                                        extra_headers={"x-request-id": f"new-{i}"})
        wait_rows(gw, "request_id LIKE 'new-%'", count=4)
        dry = json.loads(gw.cli("audit", "purge", "--before", cutoff, "--dry-run").stdout)
        assert dry["expired"] == 9
        summary = json.loads(gw.cli("audit", "purge", "--before", cutoff,
                                    "--batch-size", "2").stdout)
        assert summary["deleted"] == 9
        assert gw.audit_rows("request_id LIKE 'old-%'") == []
        assert len(gw.audit_rows("request_id LIKE 'new-%'")) == 4
        assert verify_api(gw)["ok"] is True and verify_cli(gw)[0] == 0
        checkpoints = sql(gw.database_url, "SELECT * FROM audit_checkpoints")
        assert len(checkpoints) == 1 and checkpoints[0]["events_purged"] == 9
        # the purge is itself in the audit log
        purges = gw.admin("GET", "/audit/events?limit=1000").json()["data"]
        (purge_event,) = [e for e in purges if e["endpoint"] == "gateway audit purge"]
        assert purge_event["response_body"]["deleted"] == 9
        # a forged checkpoint (to hide more deletions) is caught with the HMAC key
        sql(gw.database_url, "UPDATE audit_checkpoints SET events_purged = 1")
        assert verify_api(gw)["ok"] is False
    finally:
        gw.stop()


# --- the spool -----------------------------------------------------------------------------
def test_unwritable_spool_refuses_before_the_upstream(tmp_path: Path,
                                                      upstream: FakeUpstream) -> None:
    (tmp_path / "blocker").write_text("a file where the spool folder should be")
    gw = GatewayProcess(tmp_path, standard_config(upstream.url) +
                        "audit: {spool_dir: blocker/spool}\n", env=GATEWAY_ENV).start()
    try:
        marker = f"must-not-reach-upstream-{time.time_ns()}"
        sdk = _sdk(gw, gw.admin_key)
        for _ in range(3):
            with pytest.raises(openai.APIStatusError) as info:
                sdk.chat.completions.create(model="gpt-4o-mini",
                                            messages=[{"role": "user", "content": marker}])
            assert info.value.status_code == 503
            assert info.value.body["code"] == "audit_unavailable"
        assert not [q for q in upstream.requests if marker in json.dumps(q)]
        r = gw.admin("POST", "/admin/keys", {"name": "during-outage"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit_unavailable"
        assert gw.admin("GET", "/admin/keys").status_code == 200  # reads still work
        assert sample(metrics(gw), "gateway_audit_unavailable_total") >= 4
        assert gw.audit_rows() == []
        # the folder becomes usable: the gateway notices by itself
        (tmp_path / "blocker").unlink()
        deadline = time.monotonic() + 15
        while True:
            try:
                sdk.chat.completions.create(model="demo", messages=MSG,
                                            extra_headers={"x-request-id": "after-fix"})
                break
            except openai.APIStatusError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert len(wait_rows(gw, "request_id = 'after-fix'", count=1)) == 1
    finally:
        gw.stop()


def test_sigkill_mid_load_then_restart_loses_and_repeats_nothing(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url), env=GATEWAY_ENV).start()
    answered: set[str] = set()
    sent: set[str] = set()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            i = 0
            while not stop.is_set():
                rid = f"kill-{worker}-{i}"
                i += 1
                sent.add(rid)
                try:
                    r = client.post("/v1/chat/completions", headers={
                        "authorization": f"Bearer {gw.admin_key}", "x-request-id": rid},
                        json={"model": "demo", "messages": MSG})
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    answered.add(rid)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while len(answered) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        gw.stop(signal.SIGKILL)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert len(answered) >= 100
    gw.start(migrate=False)
    try:
        rows = wait_rows(gw, "request_id LIKE 'kill-%'", count=len(answered))
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["request_id"]] = counts.get(row["request_id"], 0) + 1
        assert all(n == 1 for n in counts.values()), "an event was written twice"
        assert answered <= set(counts), "an answered request lost its event"
        assert set(counts) <= sent
        # the chain continues across the restart
        sdk = _sdk(gw, gw.admin_key)
        sdk.chat.completions.create(model="demo", messages=MSG,
                                    extra_headers={"x-request-id": "after-restart"})
        wait_rows(gw, "request_id = 'after-restart'", count=1)
        assert verify_api(gw)["ok"] is True
    finally:
        gw.stop()


# --- metrics -------------------------------------------------------------------------------
def test_metrics_are_prometheus_text(agw: GatewayProcess, people: dict[str, Any]) -> None:
    sdk = _sdk(agw, people["alpha"]["key"])
    before = metrics(agw)
    sdk.chat.completions.create(model="gpt-4o-mini", messages=MSG)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no-such-model", messages=MSG)
    after = metrics(agw)
    labels = {"endpoint": "chat", "model": "gpt-4o-mini", "status": "200"}
    assert sample(after, "gateway_requests_total", **labels) == \
        sample(before, "gateway_requests_total", **labels) + 1
    assert sample(after, "gateway_errors_total", code="model_not_found", model="unknown") >= 1
    assert sample(after, "gateway_request_latency_seconds_count", model="gpt-4o-mini") >= 1
    assert sample(after, "gateway_request_latency_seconds_bucket", model="gpt-4o-mini",
                  le="+Inf") >= 1
    assert sample(after, "gateway_tokens_total", model="gpt-4o-mini", direction="input") > \
        sample(before, "gateway_tokens_total", model="gpt-4o-mini", direction="input")
    assert sample(after, "gateway_cost_usd_total", model="gpt-4o-mini") > 0
    assert "gateway_audit_queue_depth" in after and "gateway_audit_spool_bytes" in after
    assert sample(after, "gateway_audit_spool_bytes") > 0
    assert "gateway_audit_unavailable" in after
    # each answer was held once for its event (the start of the response, not its body again)
    assert sample(after, "gateway_audit_durable_wait_seconds_count") == \
        sample(before, "gateway_audit_durable_wait_seconds_count") + 2
