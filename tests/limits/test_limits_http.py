"""Limits, budgets and cost through the HTTP surface: a real `gateway serve`, the official
openai client, a fake upstream whose usage counts are known, and prices set in the config.

Prices here: `priced` costs $1,000 per million input tokens and $2,000 per million output
tokens, i.e. 1,000,000 and 2,000,000 nano-dollars per token. The fake upstream counts a
message's words + 1 as prompt tokens and answers "fake: <text>", so "hi" costs 2 prompt and
2 completion tokens: $0.006. The gateway reserves its own tiktoken estimate of the prompt
(8 tokens for that message) plus max_tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

IN_NANOS, OUT_NANOS = 1_000_000, 2_000_000
HI = [{"role": "user", "content": "hi"}]
HI_COST = 2 * IN_NANOS + 2 * OUT_NANOS


def limits_config(upstream: str, fault: str, unpriced: str = "warn") -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: priced
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    pricing: {{input_per_million: 1000, output_per_million: 2000}}
  - name: priced-faulty
    deployments:
      - {{model: openai/gpt-4o-mini, api_base: "{fault}/v1", idle_timeout_s: 3,
          first_token_timeout_s: 3}}
    pricing: {{input_per_million: 1000, output_per_million: 2000}}
  - name: unpriced
    deployments: [{{model: openai/no-such-model-in-any-price-map, api_base: "{upstream}/v1"}}]
  - name: listed
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
router: {{retries: 0, total_timeout_s: 20}}
limits: {{unpriced_models: {unpriced}}}
policies_dir: policies
"""


CAPPED_POLICY = """
name: capped
applies_to: {keys: [capped-key]}
limits: {rpm: 3, max_input_tokens: 40, max_output_tokens: 5}
"""


def start_gateway(workdir: Path, config: str) -> GatewayProcess:
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    (workdir / "policies" / "capped.yaml").write_text(CAPPED_POLICY)
    return GatewayProcess(workdir, config).start()


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    server = FakeUpstream(name="limits-up").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeUpstream]:
    server = FakeUpstream(name="limits-faulty").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, up: FakeUpstream,
       faulty: FakeUpstream) -> Iterator[GatewayProcess]:
    proc = start_gateway(tmp_path_factory.mktemp("limits"), limits_config(up.url, faulty.url))
    yield proc
    proc.stop()


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def asdk(gw: GatewayProcess, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


async def _one(client: openai.AsyncOpenAI, model: str, **kw: Any) -> tuple[int, Any]:
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=HI, **kw)
        return 200, raw.headers
    except openai.APIStatusError as exc:
        return exc.status_code, exc


def burst(gw: GatewayProcess, key: str, count: int, model: str = "demo", **kw: Any
          ) -> list[tuple[int, Any]]:
    async def run() -> list[tuple[int, Any]]:
        client = asdk(gw, key)
        try:
            return await asyncio.gather(*(_one(client, model, **kw) for _ in range(count)))
        finally:
            await client.close()

    return asyncio.run(run())


def audit_cost(gw: GatewayProcess, key_id: str) -> list[dict[str, Any]]:
    return gw.audit_rows("key_id = :k AND status_code = 200", {"k": key_id})


def wait_until(check: Any, timeout_s: float = 15) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# --- rpm: a burst of 3 x N admits exactly N ---------------------------------------------------
def test_rpm_burst_admits_exactly_n_with_headers(gw: GatewayProcess) -> None:
    n = 6
    key = gw.create_key(name="rpm-key", rpm=n)
    results = burst(gw, key["key"], 3 * n)
    ok = [h for status, h in results if status == 200]
    refused = [e for status, e in results if status == 429]
    assert len(ok) == n and len(refused) == 2 * n, [s for s, _ in results]
    assert sorted(int(h["x-ratelimit-remaining-requests"]) for h in ok) == list(range(n))
    for headers in ok:
        assert headers["x-ratelimit-limit-requests"] == str(n)
        assert headers["x-ratelimit-reset-requests"].endswith("s")
        assert "x-ratelimit-limit-tokens" not in headers  # no tpm applies to this key
    for exc in refused:
        assert isinstance(exc, openai.RateLimitError)
        body = exc.body if isinstance(exc.body, dict) else {}
        assert exc.code == "rate_limit_exceeded" or body.get("code") == "rate_limit_exceeded"
        headers = exc.response.headers
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-limit-requests"] == str(n)
    rows = gw.wait_for_audit("key_id = :k", {"k": key["id"]}, count=3 * n)
    limited = [r for r in rows if r["status_code"] == 429]
    assert len(limited) == 2 * n
    assert all(r["error_code"] == "rate_limit_exceeded" and r["attempts"] == 0
               and r["cost_nanos"] == 0 for r in limited)  # refused before any provider call


def test_team_rpm_is_shared_by_its_keys(gw: GatewayProcess) -> None:
    gw.create_team(name="rpm-team", rpm=4)
    a = gw.create_key(name="team-a", team="rpm-team")
    b = gw.create_key(name="team-b", team="rpm-team", rpm=100)
    results = burst(gw, a["key"], 4) + burst(gw, b["key"], 4)
    assert [s for s, _ in results].count(200) == 4
    refused = [e for s, e in results if s == 429]
    assert all("team" in e.message for e in refused)


def test_policy_limits_the_key_caps_output_and_input(gw: GatewayProcess, up: FakeUpstream
                                                     ) -> None:
    key = gw.create_key(name="capped-key", rpm=100)
    client = sdk(gw, key["key"])
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="priced", messages=[
            {"role": "user", "content": " ".join(["word"] * 60)}])
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as too_much:
        client.chat.completions.create(model="priced", messages=HI, max_tokens=6)
    assert too_much.value.code == "invalid_value" and too_much.value.param == "max_tokens"
    up.clear()
    raw = client.chat.completions.with_raw_response.create(model="priced", messages=HI)
    assert raw.headers["x-ratelimit-limit-requests"] == "3"  # the policy's 3 beats the key's 100
    sent = [r["body"] for r in up.requests if r["path"] == "/v1/chat/completions"]
    assert sent and sent[-1]["max_tokens"] == 5  # the cap goes upstream when none was asked
    client.chat.completions.create(model="priced", messages=HI, max_tokens=5)
    client.chat.completions.create(model="priced", messages=HI, max_tokens=1)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="priced", messages=HI, max_tokens=1)


# --- tpm: reserved, then settled to the real usage --------------------------------------------
def test_tpm_reserves_then_settles_to_real_usage(gw: GatewayProcess) -> None:
    key = gw.create_key(name="tpm-key", tpm=100)
    client = sdk(gw, key["key"])
    admitted = 0
    remaining: list[int] = []
    while True:
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="priced", messages=HI, max_tokens=2)
        except openai.RateLimitError as exc:
            assert "tokens per minute" in exc.message
            assert exc.response.headers["x-ratelimit-limit-tokens"] == "100"
            assert int(exc.response.headers["retry-after"]) >= 1
            break
        admitted += 1
        remaining.append(int(raw.headers["x-ratelimit-remaining-tokens"]))
        assert admitted < 50
    # each request reserves 8 + 2 = 10 tokens and settles to the 4 it used: with k settled,
    # the next fits while 4k + 10 <= 100, so exactly 23 pass (without settling: 10)
    assert admitted == 23
    assert remaining[:3] == [90, 86, 82]
    with pytest.raises(openai.RateLimitError) as too_big:
        client.chat.completions.create(model="priced", messages=HI, max_tokens=500)
    assert "more than the limit" in too_big.value.message


# --- budgets: known prices, concurrency, never overrun ----------------------------------------
def test_budget_holds_under_a_concurrent_burst(gw: GatewayProcess) -> None:
    budget_nanos = 50_000_000  # $0.05; each request reserves $0.012 and costs $0.006
    key = gw.create_key(name="budget-key", budget_usd=0.05, budget_period="day")
    results = burst(gw, key["key"], 20, model="priced", max_tokens=2)
    codes = [s for s, _ in results]
    assert 4 <= codes.count(200) <= 7, codes
    assert set(codes) <= {200, 429}
    client = sdk(gw, key["key"])
    sent = len(results)
    while sent < 40:
        sent += 1
        try:
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            assert exc.response.status_code == 429
            break
    rows = [r for r in gw.wait_for_audit("key_id = :k", {"k": key["id"]}, count=sent)
            if r["status_code"] == 200]
    assert all(r["cost_nanos"] == HI_COST for r in rows)
    spent = sum(r["cost_nanos"] for r in rows)
    # stopped only when spent + one reservation ($0.012) no longer fit: never over budget
    assert budget_nanos - 12_000_000 < spent <= budget_nanos
    spend = gw.admin("GET", f"/admin/spend?group_by=key&key_id={key['id']}").json()["data"]
    assert spend == [{"group": key["id"], "requests": len(rows), "input_tokens": 2 * len(rows),
                      "output_tokens": 2 * len(rows), "cost_usd": spent / 1e9}]


def test_team_budget_and_spend_by_team_model_day(gw: GatewayProcess) -> None:
    gw.create_team(name="spend-team", budget_usd=0.02)
    key = gw.create_key(name="spend-key", team="spend-team")
    client = sdk(gw, key["key"])
    client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as spent:
        client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
    assert spent.value.code == "insufficient_quota" and "team" in spent.value.message
    team = gw.admin("GET", "/admin/spend?group_by=team&team=spend-team").json()["data"]
    assert team == [{"group": "spend-team", "requests": 2, "input_tokens": 4,
                     "output_tokens": 4, "cost_usd": 2 * HI_COST / 1e9}]
    models = gw.admin("GET", "/admin/spend?group_by=model&team=spend-team").json()["data"]
    assert [m["group"] for m in models] == ["priced"]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    days = gw.admin("GET", "/admin/spend?group_by=day&team=spend-team"
                    f"&since={today}T00:00:00Z").json()["data"]
    assert days == [{**team[0], "group": today}]
    later = gw.admin("GET", "/admin/spend?group_by=team&since=2999-01-01T00:00:00Z").json()
    assert later == {"data": []}


# --- cost on every event; unpriced models are never a silent $0 -------------------------------
def test_unpriced_model_is_served_with_unknown_cost_and_counted(gw: GatewayProcess) -> None:
    key = gw.create_key(name="unpriced-key")
    client = sdk(gw, key["key"])
    client.chat.completions.create(model="unpriced", messages=HI,
                                   extra_headers={"x-request-id": "unpriced-1"})
    client.chat.completions.create(model="listed", messages=HI,
                                   extra_headers={"x-request-id": "listed-1"})
    client.chat.completions.create(model="demo", messages=HI,
                                   extra_headers={"x-request-id": "demo-1"})
    rows = {r["request_id"]: r for r in gw.wait_for_audit(
        "request_id IN ('unpriced-1', 'listed-1', 'demo-1')", count=3)}
    assert rows["unpriced-1"]["cost_nanos"] is None  # unknown, not $0
    # litellm's price map: gpt-4o-mini $0.15 / $0.60 per million tokens
    assert rows["listed-1"]["cost_nanos"] == (2 * 150_000 + 2 * 600_000 + 500) // 1000
    assert rows["demo-1"]["cost_nanos"] == 0  # the offline demo model is free
    metrics = httpx.get(gw.url + "/metrics", timeout=10)
    if metrics.status_code == 200:
        line = [x for x in metrics.text.splitlines()
                if x.startswith("gateway_unpriced_requests_total") and "unpriced" in x]
        assert line and float(line[0].rsplit(" ", 1)[1]) >= 1


def test_unpriced_block_refuses_before_any_provider_call(tmp_path: Path, up: FakeUpstream,
                                                         faulty: FakeUpstream) -> None:
    proc = start_gateway(tmp_path, limits_config(up.url, faulty.url, unpriced="block"))
    try:
        key = proc.create_key(name="blocked")
        up.clear()
        with pytest.raises(openai.PermissionDeniedError) as blocked:
            sdk(proc, key["key"]).chat.completions.create(model="unpriced", messages=HI)
        assert blocked.value.code == "model_unpriced"
        assert not [r for r in up.requests if "no-such-model" in str(r["body"])]
        assert sdk(proc, key["key"]).chat.completions.create(model="priced", messages=HI)
    finally:
        proc.stop()


# --- streams: usage estimated when the provider sends none; leases always released ------------
def test_cut_stream_is_estimated_and_releases_its_slot(gw: GatewayProcess,
                                                       faulty: FakeUpstream) -> None:
    key = gw.create_key(name="stream-key", max_concurrent=1, budget_usd=10)
    client = sdk(gw, key["key"])
    faulty.set_fault("drop-after:4")
    try:
        text = []
        with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the SSE error event
            for chunk in client.chat.completions.create(
                    model="priced-faulty", stream=True, messages=HI, max_tokens=3,
                    stream_options={"include_usage": True},
                    extra_headers={"x-request-id": "cut-stream"}):
                text.extend(c.delta.content or "" for c in chunk.choices)
    finally:
        faulty.set_fault(None)
    row = gw.wait_for_audit("request_id = 'cut-stream'")[0]
    assert row["partial"] and row["usage_source"] == "estimated" and row["cost_estimated"]
    assert row["output_tokens"] >= 1
    assert row["cost_nanos"] == row["input_tokens"] * IN_NANOS + row["output_tokens"] * OUT_NANOS
    # the slot of the cut stream is free again (max_concurrent 1)
    assert client.chat.completions.create(model="priced", messages=HI, max_tokens=2)


def test_cancelled_stream_releases_its_slot(gw: GatewayProcess, faulty: FakeUpstream) -> None:
    key = gw.create_key(name="cancel-key", max_concurrent=1)
    faulty.set_fault("chunk-delay:400")
    try:
        with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {key['key']}",
                                   "x-request-id": "cancel-stream"},
                          json={"model": "priced-faulty", "stream": True, "messages": HI}) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()  # keep a reference: a dropped iterator closes the stream
            next(chunks)
            busy = burst(gw, key["key"], 1, model="priced")
            assert busy[0][0] == 429 and "concurrent" in busy[0][1].message
    finally:
        faulty.set_fault(None)
    row = gw.wait_for_audit("request_id = 'cancel-stream'")[0]
    assert row["cancelled"] and row["cost_nanos"] is not None
    assert wait_until(lambda: burst(gw, key["key"], 1, model="priced")[0][0] == 200)


def test_headers_on_streams_and_on_upstream_errors(gw: GatewayProcess,
                                                   faulty: FakeUpstream) -> None:
    key = gw.create_key(name="hdr-key", rpm=50, tpm=100_000)
    with httpx.stream("POST", gw.base_url + "/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {key['key']}"},
                      json={"model": "demo", "stream": True, "messages": HI}) as r:
        assert r.headers["x-ratelimit-remaining-requests"] == "49"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100_000
        r.read()
    faulty.set_fault("status:500")
    try:
        with pytest.raises(openai.InternalServerError) as failed:
            sdk(gw, key["key"]).chat.completions.create(model="priced-faulty", messages=HI)
        assert failed.value.response.headers["x-ratelimit-remaining-requests"] == "48"
    finally:
        faulty.set_fault(None)


# --- bad input: clear 400s --------------------------------------------------------------------
@pytest.mark.parametrize("max_tokens", [-1, 0, 10**12, "many", 1.5])
def test_absurd_max_tokens_is_a_400(gw: GatewayProcess, max_tokens: Any) -> None:
    key = gw.create_key(name="absurd", budget_usd=1)
    r = httpx.post(gw.base_url + "/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {key['key']}"},
                   json={"model": "priced", "messages": HI, "max_tokens": max_tokens})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"


def test_huge_max_tokens_within_range_exceeds_budget_not_500(gw: GatewayProcess) -> None:
    key = gw.create_key(name="huge-out", budget_usd=1)
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(gw, key["key"]).chat.completions.create(model="priced", messages=HI,
                                                    max_tokens=5_000_000)
    assert refused.value.code == "insufficient_quota"


@pytest.mark.parametrize("fields", [
    {"rpm": -5}, {"rpm": 0}, {"rpm": 1.5}, {"rpm": "10"}, {"rpm": True}, {"tpm": 10**12},
    {"max_concurrent": -1}, {"budget_usd": -1}, {"budget_usd": "lots"},
    {"budget_usd": 1e30}, {"budget_period": "week"}, {"budget_period": 30},
])
def test_nonsense_limits_through_the_admin_api_are_400(gw: GatewayProcess,
                                                       fields: dict[str, Any]) -> None:
    r = gw.admin("POST", "/admin/keys", {"name": "nonsense", **fields})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == next(iter(fields))
    team = gw.admin("POST", "/admin/teams", {"name": "nonsense-team", **fields})
    assert team.status_code == 400, team.text
    key = gw.create_key(name="patchable")
    patch = gw.admin("PATCH", f"/admin/keys/{key['id']}", fields)
    assert patch.status_code == 400, patch.text


# --- /admin/spend access and parameters -------------------------------------------------------
def test_spend_access_and_bad_parameters(gw: GatewayProcess) -> None:
    gw.create_team(name="own-team")
    gw.create_team(name="other-team")
    own = gw.create_key(name="own-app", team="own-team")
    other = gw.create_key(name="other-app", team="other-team")
    sdk(gw, own["key"]).chat.completions.create(model="priced", messages=HI, max_tokens=2)
    sdk(gw, other["key"]).chat.completions.create(model="priced", messages=HI, max_tokens=2)
    auditor = gw.create_key(name="auditor", role="compliance", team="own-team")["key"]
    seen = gw.admin("GET", "/admin/spend?group_by=team", key=auditor)
    assert seen.status_code == 200
    assert [row["group"] for row in seen.json()["data"]] == ["own-team"]
    assert gw.admin("GET", "/admin/spend?group_by=team&team=other-team",
                    key=auditor).status_code == 400
    both = {row["group"] for row in gw.admin("GET", "/admin/spend?group_by=team").json()["data"]}
    assert {"own-team", "other-team"} <= both
    assert gw.admin("GET", "/admin/spend", key=own["key"]).status_code == 403
    for query in ("group_by=week", "since=yesterday", "since=2026-01-02T00:00:00Z"
                  "&until=2026-01-01T00:00:00Z", "colour=blue", "group_by=key&group_by=team",
                  "until=2026-01-01T00:00:00"):
        r = gw.admin("GET", "/admin/spend?" + query)
        assert r.status_code == 400, (query, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# --- budgets survive a restart (spend loaded from the rollups) --------------------------------
def test_budget_survives_restart(tmp_path: Path, up: FakeUpstream, faulty: FakeUpstream) -> None:
    proc = start_gateway(tmp_path, limits_config(up.url, faulty.url))
    try:
        key = proc.create_key(name="persist", budget_usd=0.03, budget_period="month")
        client = sdk(proc, key["key"])
        for _ in range(3):
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
        proc.stop()  # SIGTERM: the spend rollups are flushed on the way out
        proc.start(migrate=False)
        client = sdk(proc, key["key"])
        client.chat.completions.create(model="priced", messages=HI, max_tokens=2)  # 0.024
        with pytest.raises(openai.RateLimitError) as spent:
            client.chat.completions.create(model="priced", messages=HI, max_tokens=2)
        assert spent.value.code == "insufficient_quota"
    finally:
        proc.stop()
