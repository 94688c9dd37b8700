"""The response cache end to end (issue 20): a real `gateway serve`, the fake upstream, the
official `openai` client. Scopes never share entries; PII comes back per request; errors,
cut streams, sampled requests and answers with PII found on the way out are never stored;
one entry serves streamed and whole callers; the caller's controls; a hit's accounting."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

POLICIES = {
    "default.yaml": """
name: default
pii:
  input: {credit_card: redact}
  output: {credit_card: redact}
""",
    "restore.yaml": """
name: restoring
applies_to: {teams: [restorers]}
pii:
  input: {email: redact}
  output: {}
  restore: true
""",
    "outscan.yaml": """
name: output-scan
applies_to: {keys: [out-scanned]}
pii:
  input: {}
  output: {email: redact}
""",
    "teamcache.yaml": """
name: team-cache
applies_to: {teams: [policy-cached]}
cache: {enabled: true, ttl_s: 60}
""",
    "nocache.yaml": """
name: no-cache
applies_to: {keys: [never-cached]}
cache: {enabled: false}
""",
}


def _config(upstream: str, faulty: str) -> str:
    return f"""
models:
  - name: cached
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true, ttl_s: 300}}
  - name: cached-key
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true, scope: key}}
  - name: cached-user
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true, scope: user}}
  - name: cached-tpm
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true, hits_use_tpm: true}}
  - name: cached-sampled
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true, sampled: true}}
  - name: cached-instruct
    deployments: [{{model: openai/gpt-3.5-turbo-instruct, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true}}
  - name: cached-embed
    deployments: [{{model: openai/text-embedding-3-small, api_base: "{upstream}/v1"}}]
    cache: {{enabled: true}}
  - name: cached-faulty
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{faulty}/v1", timeout_s: 3,
                   first_token_timeout_s: 2, idle_timeout_s: 2}}]
    cache: {{enabled: true}}
  - name: cached-claude
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: "{upstream}",
                   api_key: env:FAKE_ANTHROPIC_KEY}}]
    cache: {{enabled: true}}
  - name: uncached
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream}/v1"}}]
router: {{retries: 0, cooldown_s: 0.1, failures_to_cooldown: 100}}
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
       fault_upstream_server: FakeUpstream) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("cache")
    (root / "policies").mkdir()
    for name, text in POLICIES.items():
        (root / "policies" / name).write_text(text)
    proc = GatewayProcess(root, _config(upstream.url, fault_upstream_server.url),
                          env={"FAKE_ANTHROPIC_KEY": "sk-ant-upstream"}).start()
    for team in ("red", "blue", "restorers", "policy-cached"):
        proc.create_team(name=team)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def red_key(gw: GatewayProcess) -> str:
    return gw.create_key(name="red-app", team="red")["key"]


def _key(gw: GatewayProcess, team: str | None = None, **fields: Any) -> str:
    fields.setdefault("name", f"k-{uuid.uuid4().hex[:8]}")
    return gw.create_key(team=team, **fields)["key"]


def _prompt(label: str = "q") -> str:
    return f"{label} {uuid.uuid4().hex}"


def _upstream_calls(up: FakeUpstream, marker: str) -> int:
    return sum(1 for r in up.requests if marker in str(r.get("body")))


def post(gw: GatewayProcess, key: str, body: dict[str, Any], path: str = "chat/completions",
         **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.base_url}/{path}", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", **headers})


def chat(gw: GatewayProcess, key: str, text: str, model: str = "cached", **extra: Any
         ) -> httpx.Response:
    headers = extra.pop("headers", {})
    body = {"model": model, "messages": [{"role": "user", "content": text}],
            "temperature": 0, **extra}
    return post(gw, key, body, **headers)


def cache_header(r: httpx.Response) -> str | None:
    return r.headers.get("x-gateway-cache")


def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


# --- hit and miss ------------------------------------------------------------------------

def test_the_same_request_again_is_a_hit_with_age_and_no_upstream_call(
        gw: GatewayProcess, upstream: FakeUpstream, red_key: str) -> None:
    text = _prompt()
    first = chat(gw, red_key, text, headers={"x-request-id": "cache-src-1"})
    second = chat(gw, red_key, text)
    assert first.status_code == second.status_code == 200
    assert cache_header(first) == "MISS" and "age" not in first.headers
    assert cache_header(second) == "HIT" and int(second.headers["age"]) >= 0
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["model"] == "cached"
    assert _upstream_calls(upstream, text) == 1


def test_a_hit_is_audited_with_its_source_cost_zero_and_the_saved_cost(
        gw: GatewayProcess, red_key: str) -> None:
    text = _prompt()
    chat(gw, red_key, text, headers={"x-request-id": "cache-source-2"})
    chat(gw, red_key, text, headers={"x-request-id": "cache-hit-2"})
    source = gw.wait_for_audit("request_id = 'cache-source-2'")[0]
    hit = gw.wait_for_audit("request_id = 'cache-hit-2'")[0]
    assert source["cache_status"] == "MISS" and source["cost_nanos"] > 0
    assert hit["cache_status"] == "HIT"
    assert hit["cache_source_request_id"] == "cache-source-2"
    assert hit["cost_nanos"] == 0
    assert hit["saved_cost_nanos"] == source["cost_nanos"]
    assert hit["input_tokens"] == source["input_tokens"]
    assert hit["deployment"] == source["deployment"] and hit["attempts"] == 0
    api = gw.admin("GET", "/audit/events?cache_status=HIT&request_id=cache-hit-2").json()["data"][0]
    assert api["cache_status"] == "HIT" and api["cost_usd"] == 0
    assert api["saved_cost_usd"] == pytest.approx(source["cost_nanos"] / 1e9)
    assert gw.admin("GET", "/audit/verify").json()["ok"] is True


def test_a_route_without_a_cache_answers_without_cache_headers(
        gw: GatewayProcess, upstream: FakeUpstream, red_key: str) -> None:
    text = _prompt()
    for _ in range(2):
        r = chat(gw, red_key, text, model="uncached")
        assert r.status_code == 200 and cache_header(r) is None
    assert _upstream_calls(upstream, text) == 2


# --- partitions --------------------------------------------------------------------------

def test_two_teams_sending_the_same_prompt_never_share_an_entry(
        gw: GatewayProcess, upstream: FakeUpstream) -> None:
    red, blue = _key(gw, "red"), _key(gw, "blue")
    text = _prompt()
    red_first, red_again = chat(gw, red, text), chat(gw, red, text)
    blue_first = chat(gw, blue, text)
    assert [cache_header(r) for r in (red_first, red_again, blue_first)] == \
        ["MISS", "HIT", "MISS"]
    assert _upstream_calls(upstream, text) == 2
    # Nothing tells blue that red had it: the same headers as red's own first miss.
    assert set(blue_first.headers) - {"x-request-id"} == \
        set(red_first.headers) - {"x-request-id"}
    assert not any("key" in h and "cache" in h for h in blue_first.headers)


def test_two_keys_of_one_team_share_on_team_scope_and_not_on_key_scope(
        gw: GatewayProcess, upstream: FakeUpstream) -> None:
    one, two = _key(gw, "red"), _key(gw, "red")
    for model, second in (("cached", "HIT"), ("cached-key", "MISS")):
        text = _prompt(model)
        assert cache_header(chat(gw, one, text, model=model)) == "MISS"
        assert cache_header(chat(gw, two, text, model=model)) == second


def test_user_scope_partitions_by_end_user_and_bypasses_without_one(
        gw: GatewayProcess, red_key: str) -> None:
    text = _prompt()
    seen = [cache_header(chat(gw, red_key, text, model="cached-user", user=user))
            for user in ("ann", "ann", "ben")]
    assert seen == ["MISS", "HIT", "MISS"]
    assert cache_header(chat(gw, red_key, text, model="cached-user")) == "BYPASS"


def test_a_namespace_is_a_partition_inside_the_callers_scope(
        gw: GatewayProcess, red_key: str) -> None:
    text = _prompt()
    def ns(value: str | None) -> str | None:
        headers = {"x-gateway-cache-namespace": value} if value else {}
        return cache_header(chat(gw, red_key, text, headers=headers))
    assert [ns(None), ns("a"), ns("a"), ns("b"), ns(None)] == \
        ["MISS", "MISS", "HIT", "MISS", "HIT"]
    bad = chat(gw, red_key, text, headers={"x-gateway-cache-namespace": "no spaces"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "x-gateway-cache-namespace"


def test_purging_a_team_deletes_its_entries_and_nobody_elses(gw: GatewayProcess) -> None:
    gw.create_team(name="purged")
    purged, other = _key(gw, "purged"), _key(gw, "blue")
    text = _prompt()
    for key, user, ns in ((purged, None, None), (purged, "ann", None), (purged, None, "n1"),
                          (other, None, None)):
        extra: dict[str, Any] = {"user": user} if user else {}
        headers = {"x-gateway-cache-namespace": ns} if ns else {}
        model = "cached-user" if user else "cached"
        assert cache_header(chat(gw, key, text, model=model, headers=headers, **extra)) == \
            "MISS"
    r = gw.admin("DELETE", "/admin/cache?team=purged")
    assert r.status_code == 200 and r.json() == {"deleted": 3}
    assert cache_header(chat(gw, purged, text)) == "MISS"
    assert cache_header(chat(gw, other, text)) == "HIT"
    event = gw.wait_for_audit("action = 'cache.purge'")[0]
    assert event["target_type"] == "cache" and event["target_id"] == "team:purged"
    assert event["status_code"] == 200
    bad = gw.admin("DELETE", "/admin/cache?team=purged&key_id=x")
    assert bad.status_code == 400


def test_policies_switch_the_cache_on_for_a_team_and_off_for_a_key(
        gw: GatewayProcess) -> None:
    team_key = _key(gw, "policy-cached")
    off_key = _key(gw, "red", name="never-cached")
    text = _prompt()
    assert [cache_header(chat(gw, team_key, text, model="uncached")) for _ in range(2)] == \
        ["MISS", "HIT"]
    assert [cache_header(chat(gw, off_key, text)) for _ in range(2)] == [None, None]


# --- PII -----------------------------------------------------------------------------------

def test_two_users_whose_prompts_differ_only_in_pii_each_get_their_own_back(
        gw: GatewayProcess, upstream: FakeUpstream) -> None:
    key = _key(gw, "restorers")
    marker = uuid.uuid4().hex
    answers = {}
    for email in ("ann.lee@example.com", "ben.ng@example.org"):
        r = chat(gw, key, f"write to {email} about {marker}")
        answers[email] = (cache_header(r), r.json()["choices"][0]["message"]["content"])
    assert answers == {
        "ann.lee@example.com": ("MISS", f"fake: write to ann.lee@example.com about {marker}"),
        "ben.ng@example.org": ("HIT", f"fake: write to ben.ng@example.org about {marker}"),
    }
    assert _upstream_calls(upstream, marker) == 1
    assert "ann.lee" not in str([r["body"] for r in upstream.requests])


def test_a_streamed_hit_restores_this_requests_own_pii(gw: GatewayProcess) -> None:
    key = _key(gw, "restorers")
    marker = uuid.uuid4().hex
    chat(gw, key, f"write to ann.lee@example.com about {marker}")
    stream = sdk(gw, key).chat.completions.create(
        model="cached", temperature=0, stream=True,
        messages=[{"role": "user", "content": f"write to cy@example.net about {marker}"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"fake: write to cy@example.net about {marker}"


def test_an_answer_whose_output_scan_found_pii_is_not_stored(
        gw: GatewayProcess, upstream: FakeUpstream) -> None:
    key = _key(gw, "red", name="out-scanned")
    text = f"echo dee@example.com {uuid.uuid4().hex}"
    first, second = chat(gw, key, text), chat(gw, key, text)
    assert "[EMAIL_1]" in first.json()["choices"][0]["message"]["content"]
    assert [cache_header(first), cache_header(second)] == ["MISS", "MISS"]
    assert _upstream_calls(upstream, text) == 2


# --- never stored ------------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "status"), [
    ({"n": 2}, "BYPASS"),
    ({"temperature": 0.7}, "BYPASS"),
    ({"temperature": None}, "BYPASS"),  # the provider's default temperature samples
    ({"temperature": 0.7, "seed": 7}, "MISS"),
], ids=["n-2", "sampled", "default-temperature", "seeded"])
def test_answers_that_are_not_one_answer_bypass_the_cache(
        gw: GatewayProcess, red_key: str, extra: dict[str, Any], status: str) -> None:
    text = _prompt()
    body = {"model": "cached", "messages": [{"role": "user", "content": text}], **extra}
    if body.get("temperature", 1) is None:
        del body["temperature"]
    first, second = post(gw, red_key, body), post(gw, red_key, body)
    assert first.status_code == 200
    assert cache_header(first) == status
    assert cache_header(second) == ("HIT" if status == "MISS" else "BYPASS")


def test_a_route_that_opts_in_caches_sampled_answers(gw: GatewayProcess, red_key: str) -> None:
    body = {"model": "cached-sampled", "temperature": 0.9,
            "messages": [{"role": "user", "content": _prompt()}]}
    assert [cache_header(post(gw, red_key, body)) for _ in range(2)] == ["MISS", "HIT"]


def test_an_upstream_error_is_not_stored(gw: GatewayProcess, red_key: str,
                                         fault_upstream: FakeUpstream) -> None:
    text = _prompt()
    fault_upstream.set_fault("status:500")
    failed = chat(gw, red_key, text, model="cached-faulty")
    assert failed.status_code == 502 and cache_header(failed) == "MISS"
    fault_upstream.set_fault(None)
    time.sleep(0.2)  # the deployment's cooldown
    again = chat(gw, red_key, text, model="cached-faulty")
    assert again.status_code == 200 and cache_header(again) == "MISS"
    assert cache_header(chat(gw, red_key, text, model="cached-faulty")) == "HIT"


def test_a_stream_cut_midway_is_not_stored(gw: GatewayProcess, red_key: str,
                                           fault_upstream: FakeUpstream) -> None:
    text = _prompt("one two three four five six")
    fault_upstream.set_fault("drop-after:3")
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {red_key}"},
                      json={"model": "cached-faulty", "stream": True, "temperature": 0,
                            "messages": [{"role": "user", "content": text}]}) as r:
        body = r.read().decode()
    assert r.headers["x-gateway-cache"] == "MISS"
    assert '"error"' in body and "[DONE]" not in body
    fault_upstream.set_fault(None)
    time.sleep(0.2)
    assert cache_header(chat(gw, red_key, text, model="cached-faulty")) == "MISS"


# --- one entry, streamed and whole -------------------------------------------------------

def test_a_streamed_hit_replays_a_whole_answer_with_usage(gw: GatewayProcess,
                                                          red_key: str) -> None:
    text = _prompt()
    whole = chat(gw, red_key, text).json()
    raw = sdk(gw, red_key).chat.completions.with_raw_response.create(
        model="cached", temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": text}])
    assert raw.headers["x-gateway-cache"] == "HIT"
    chunks = list(raw.parse())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    assert content == whole["choices"][0]["message"]["content"]
    assert finish == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == whole["usage"]["total_tokens"]


def test_a_stored_stream_serves_whole_and_streamed_callers(gw: GatewayProcess,
                                                           red_key: str) -> None:
    text = _prompt("alpha beta gamma")
    client = sdk(gw, red_key)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="cached", temperature=0, stream=True,
        messages=[{"role": "user", "content": text}]) if c.choices)
    whole = chat(gw, red_key, text)
    assert cache_header(whole) == "HIT"
    assert whole.json()["choices"][0]["message"]["content"] == streamed
    assert whole.json()["choices"][0]["finish_reason"] == "stop"
    assert whole.json()["usage"]["total_tokens"] > 0
    again = client.chat.completions.with_raw_response.create(
        model="cached", temperature=0, stream=True, messages=[{"role": "user", "content": text}])
    assert again.headers["x-gateway-cache"] == "HIT"
    assert "".join(c.choices[0].delta.content or "" for c in again.parse() if c.choices) == \
        streamed


def test_a_tool_call_answer_replays_as_a_stream(gw: GatewayProcess, red_key: str) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {}}}}]
    messages = [{"role": "user", "content": _prompt()}]
    client = sdk(gw, red_key)
    whole = client.chat.completions.create(model="cached", temperature=0, messages=messages,
                                           tools=tools, tool_choice="required")
    stream = client.chat.completions.create(model="cached", temperature=0, messages=messages,
                                            tools=tools, tool_choice="required", stream=True)
    calls = [t for c in stream if c.choices for t in (c.choices[0].delta.tool_calls or ())]
    assert [(t.id, t.function.name, t.function.arguments) for t in calls] == \
        [(t.id, t.function.name, t.function.arguments)
         for t in whole.choices[0].message.tool_calls]


def test_completions_and_embeddings_hit_through_the_sdk(gw: GatewayProcess,
                                                        red_key: str) -> None:
    client = sdk(gw, red_key)
    prompt = _prompt("complete")
    first = client.completions.with_raw_response.create(
        model="cached-instruct", prompt=prompt, temperature=0)
    streamed = client.completions.with_raw_response.create(
        model="cached-instruct", prompt=prompt, temperature=0, stream=True)
    assert [first.headers["x-gateway-cache"], streamed.headers["x-gateway-cache"]] == \
        ["MISS", "HIT"]
    text = "".join(c.choices[0].text for c in streamed.parse() if c.choices)
    assert text == first.parse().choices[0].text
    words = _prompt("embed")
    one = client.embeddings.with_raw_response.create(model="cached-embed", input=words)
    two = client.embeddings.with_raw_response.create(model="cached-embed", input=words)
    assert [one.headers["x-gateway-cache"], two.headers["x-gateway-cache"]] == ["MISS", "HIT"]
    assert two.parse().data[0].embedding == one.parse().data[0].embedding


# --- the caller's controls -----------------------------------------------------------------

def test_cache_control_no_cache_refreshes_no_store_skips_the_write_and_max_age_bounds_age(
        gw: GatewayProcess, upstream: FakeUpstream, red_key: str) -> None:
    text = _prompt()
    def status(control: str | None = None) -> str | None:
        headers = {"cache-control": control} if control else {}
        return cache_header(chat(gw, red_key, text, headers=headers))
    assert status("no-store") == "MISS"
    assert status() == "MISS"  # no-store wrote nothing
    assert status("no-store") == "HIT"  # no-store still reads
    assert status("no-cache") == "REFRESH"
    assert status("no-cache, no-store") == "BYPASS"
    time.sleep(1.1)
    assert status("max-age=0") == "MISS"  # older than 0 s: fetched and stored again
    assert status("max-age=60") == "HIT"
    assert _upstream_calls(upstream, text) == 5


# --- accounting ----------------------------------------------------------------------------

def test_hits_count_against_rpm(gw: GatewayProcess) -> None:
    key = _key(gw, "red", rpm=3)
    text = _prompt()
    codes = [chat(gw, key, text).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize(("model", "refused"), [("cached", False), ("cached-tpm", True)],
                         ids=["default", "hits_use_tpm"])
def test_hits_count_against_tpm_only_where_the_route_says_so(
        gw: GatewayProcess, model: str, refused: bool) -> None:
    key = _key(gw, "red", tpm=100)
    text = _prompt()
    codes = [chat(gw, key, text, model=model, max_tokens=20).status_code for _ in range(30)]
    assert (429 in codes) is refused and codes[:2] == [200, 200]


def test_savings_are_on_the_audit_api_and_the_spend_page(gw: GatewayProcess) -> None:
    from tests.ui.test_ui_http import sign_in

    gw.create_team(name="savers")
    key = _key(gw, "savers")
    text = _prompt()
    for _ in range(3):
        chat(gw, key, text)
    gw.wait_for_audit("team = 'savers' AND cache_status = 'HIT'", count=2)
    source = gw.wait_for_audit("team = 'savers' AND cache_status = 'MISS'")[0]
    savings = gw.admin("GET", "/audit/cache-savings?team=savers").json()
    assert savings == {"hits": 2,
                       "saved_cost_usd": pytest.approx(2 * source["cost_nanos"] / 1e9)}
    client, _ = sign_in(gw, gw.admin_key)
    page = client.get("/ui/spend?range=24h").text
    assert 'id="spend-cache-savings"' in page and "The response cache answered" in page


def test_hit_ratio_and_saved_cost_are_metrics(gw: GatewayProcess, red_key: str) -> None:
    text = _prompt()
    chat(gw, red_key, text)
    chat(gw, red_key, text)
    metrics = httpx.get(gw.url + "/metrics", timeout=10).text
    assert 'gateway_cache_requests_total{model="cached",status="HIT",team="red"}' in metrics
    assert 'gateway_cache_saved_cost_usd_total{model="cached",team="red"}' in metrics


# --- Responses and Messages ----------------------------------------------------------------

def test_a_responses_answer_serves_a_streamed_caller_with_its_terminal_event_and_usage(
        gw: GatewayProcess, upstream: FakeUpstream, red_key: str) -> None:
    client = sdk(gw, red_key)
    text = _prompt("responses")
    first = client.responses.with_raw_response.create(
        model="cached", input=text, store=False, temperature=0)
    whole = first.parse()
    assert first.headers["x-gateway-cache"] == "MISS"
    raw = client.responses.with_raw_response.create(
        model="cached", input=text, store=False, temperature=0, stream=True)
    assert raw.headers["x-gateway-cache"] == "HIT"
    events = list(raw.parse())
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text == whole.output_text
    assert final.usage is not None and final.usage.total_tokens == whole.usage.total_tokens
    assert final.id != whole.id and final.store is False
    assert _upstream_calls(upstream, text) == 1


def test_a_streamed_responses_answer_serves_a_whole_caller(gw: GatewayProcess,
                                                           red_key: str) -> None:
    client = sdk(gw, red_key)
    text = _prompt("responses stream")
    events = list(client.responses.create(model="cached", input=text, store=False,
                                          temperature=0, stream=True))
    raw = client.responses.with_raw_response.create(model="cached", input=text, store=False,
                                                    temperature=0)
    assert raw.headers["x-gateway-cache"] == "HIT"
    assert raw.parse().output_text == events[-1].response.output_text


def test_stored_and_chained_responses_bypass_the_cache(gw: GatewayProcess,
                                                       red_key: str) -> None:
    client = sdk(gw, red_key)
    text = _prompt("stateful")
    stored = client.responses.with_raw_response.create(model="cached", input=text,
                                                       temperature=0)
    chained = client.responses.with_raw_response.create(
        model="cached", input=text, temperature=0, store=False,
        previous_response_id=stored.parse().id)
    assert [stored.headers["x-gateway-cache"], chained.headers["x-gateway-cache"]] == \
        ["BYPASS", "BYPASS"]


ZERO = {"temperature": 0}  # this SDK version takes it through extra_body only


def _anthropic(gw: GatewayProcess, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)


def test_messages_with_other_upstream_headers_are_another_entry(gw: GatewayProcess,
                                                                red_key: str) -> None:
    body = {"model": "cached-claude", "max_tokens": 32, "temperature": 0,
            "messages": [{"role": "user", "content": _prompt()}]}

    def status(beta: str | None = None) -> str | None:
        headers = {"x-api-key": red_key, "anthropic-version": "2023-06-01",
                   **({"anthropic-beta": beta} if beta else {})}
        r = httpx.post(f"{gw.url}/v1/messages", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return cache_header(r)

    beta = "token-efficient-tools-2025-02-19"
    assert [status(), status(), status(beta), status(beta)] == ["MISS", "HIT", "MISS", "HIT"]


@pytest.mark.parametrize("model", ["cached", "cached-claude"], ids=["translated", "native"])
def test_a_messages_answer_replays_as_a_stream_and_back(gw: GatewayProcess, red_key: str,
                                                        model: str) -> None:
    client = _anthropic(gw, red_key)
    text = _prompt("messages")
    messages = [{"role": "user", "content": text}]
    first = client.messages.with_raw_response.create(model=model, max_tokens=64,
                                                     messages=messages, extra_body=ZERO)
    whole = first.parse()
    assert first.headers["x-gateway-cache"] == "MISS"
    with client.messages.stream(model=model, max_tokens=64, messages=messages,
                                extra_body=ZERO) as stream:
        assert stream.response.headers["x-gateway-cache"] == "HIT"
        final = stream.get_final_message()
    assert [b.text for b in final.content] == [b.text for b in whole.content]
    assert final.stop_reason == whole.stop_reason == "end_turn"
    assert final.usage.output_tokens == whole.usage.output_tokens
    # and a stream stored first serves a whole caller
    text = _prompt("messages stream")
    messages = [{"role": "user", "content": text}]
    with client.messages.stream(model=model, max_tokens=64, messages=messages,
                                extra_body=ZERO) as stream:
        streamed = stream.get_final_message()
    again = client.messages.with_raw_response.create(model=model, max_tokens=64,
                                                     messages=messages, extra_body=ZERO)
    assert again.headers["x-gateway-cache"] == "HIT"
    assert [b.text for b in again.parse().content] == [b.text for b in streamed.content]
    assert again.parse().usage.output_tokens == streamed.usage.output_tokens
