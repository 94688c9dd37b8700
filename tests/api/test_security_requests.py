"""Issue 14, findings 1 and 8 and two contract rules, through a real gateway process.

- Finding 1: a request to a litellm-translated model (`anthropic/`, `mistral/` against the
  fake upstream) carries only allowlisted fields; litellm's own controls (`fallbacks`,
  `mock_response`, callbacks, …) are refused before anything is sent, reach neither the
  upstream nor a capture server, and cannot cool a deployment down. On the direct path new
  parameters flow, but nothing naming a destination or a credential, in any spelling.
- Finding 8: an upstream error that echoes a masked provider key reaches neither the client
  nor the log nor the audit store.
- Error bodies echo at most a short, sanitised excerpt of client input.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

PROVIDER_KEY = "sk-abcQ7vT9pX2mL4nR8xyz"  # 23 characters, as in the finding
MASKED_KEY = "sk-abcQ7v***********xyz"  # 12 of its 23 characters, as providers echo it
KEY_FRAGMENTS = ("sk-abc", "Q7vT9", "abcQ7v", "R8xyz", "***")
HELLO = [{"role": "user", "content": "hello"}]


class LeakyUpstream(FakeUpstream):
    """Its errors echo the provider key, masked, in the words OpenAI and Anthropic use."""

    def _error_body(self, status: int, message: str | None, anthropic: bool) -> dict[str, Any]:
        text = (f"Incorrect API key provided: {MASKED_KEY}. You can find your API key at "
                "https://platform.openai.com/account/api-keys. (key starts sk-abcQ7v, "
                "ends R8xyz)")
        if anthropic:
            return {"type": "error", "error": {"type": "authentication_error", "message": text}}
        return {"error": {"message": text, "type": "invalid_request_error", "param": None,
                          "code": "invalid_api_key"}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(name="sec-upstream") as up:
        yield up


@pytest.fixture(scope="module")
def capture() -> Iterator[FakeUpstream]:
    """Stands for an internal service: records every request on any path, must get none."""
    with FakeUpstream(name="capture") as up:
        yield up


@pytest.fixture(scope="module")
def leaky() -> Iterator[FakeUpstream]:
    with LeakyUpstream(name="leaky", fault="status:401") as up:
        yield up


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
            leaky: FakeUpstream) -> Iterator[GatewayProcess]:
    up, bad = upstream.url, leaky.url
    config = f"""
models:
  - name: claude
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: '{up}',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: claude-2
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: '{up}',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: mistral
    deployments: [{{model: mistral/mistral-small-latest, api_base: '{up}/v1',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: mistral-embed
    deployments: [{{model: mistral/mistral-embed, api_base: '{up}/v1',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: gpt
    deployments: [{{model: openai/gpt-4o-mini, api_base: '{up}/v1',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: gpt-leaky
    deployments: [{{model: openai/gpt-4o-mini, api_base: '{bad}/v1',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: claude-leaky
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: '{bad}',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: mistral-leaky
    deployments: [{{model: mistral/mistral-small-latest, api_base: '{bad}/v1',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
  - name: claude-leaky-log
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: '{bad}',
                    api_key: 'env:SEC_PROVIDER_KEY'}}]
router: {{retries: 0, total_timeout_s: 20, cooldown_s: 60, failures_to_cooldown: 3}}
server: {{max_json_depth: 32}}
"""
    proc = GatewayProcess(tmp_path_factory.mktemp("sec"), config,
                          env={"SEC_PROVIDER_KEY": PROVIDER_KEY}).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def key(gateway: GatewayProcess) -> str:
    return gateway.create_key(name="sec-app")["key"]


CHAT = "/v1/chat/completions"


def _post(gateway: GatewayProcess, key: str, body: dict[str, Any], *,
          path: str = CHAT, headers: dict[str, str] | None = None
          ) -> tuple[httpx.Response, str]:
    rid = "sec-" + uuid.uuid4().hex[:12]
    r = httpx.post(gateway.url + path, json=body, timeout=60,
                   headers={"authorization": f"Bearer {key}", "x-request-id": rid,
                            **(headers or {})})
    return r, rid


def _error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return err


# ------------------------------------------------------------------ finding 1: litellm routes

def _steal(capture: FakeUpstream) -> str:
    return f"oobabooga/{capture.url}/steal#"


# (id, endpoint path, extra body fields, code, param). Each is sent to `claude` and `mistral`
# (`mistral-embed` for embeddings); `{capture}` in a value becomes the capture server's URL.
LITELLM_REFUSED = [
    ("ssrf-fallback-unmocked", "chat",
     {"mock_response": "litellm.InternalServerError",
      "fallbacks": [{"model": "{steal}", "mock_response": None}]},
     "forbidden_parameter", "mock_response"),
    ("ssrf-fallback-alone", "chat", {"fallbacks": [{"model": "{steal}"}]},
     "forbidden_parameter", "fallbacks"),
    ("langsmith-callback", "chat",
     {"success_callback": ["langsmith"], "langsmith_base_url": "{capture}/ls",
      "langsmith_api_key": "x"}, "forbidden_parameter", "success_callback"),
    ("unconfigured-fallback-model", "chat", {"fallbacks": ["mistral/mistral-large-latest"]},
     "forbidden_parameter", "fallbacks"),
    ("fallback-forging-a-log-line", "chat",
     {"fallbacks": ['m\n{"level":"error","msg":"forged"}']}, "forbidden_parameter",
     "fallbacks"),
    ("mock-error", "chat", {"mock_response": "litellm.RateLimitError"},
     "forbidden_parameter", "mock_response"),
    ("mock-nested-in-thinking", "chat",
     {"thinking": {"type": "enabled", "budget_tokens": 1024, "mock_response": "x"}},
     "forbidden_parameter", "thinking.mock_response"),
    ("mock-nested-in-a-message", "chat",
     {"messages": [{"role": "user", "content": "hi", "mock_response": "x"}]},
     "forbidden_parameter", "messages[0].mock_response"),
    ("failure-callback", "chat", {"failure_callback": ["langfuse"]},
     "forbidden_parameter", "failure_callback"),
    ("num-retries", "chat", {"num_retries": 9}, "forbidden_parameter", "num_retries"),
    ("custom-provider", "chat", {"custom_llm_provider": "openai"}, "forbidden_parameter",
     "custom_llm_provider"),
    ("tls-off", "chat", {"ssl_verify": False}, "forbidden_parameter", "ssl_verify"),
    ("litellm-metadata", "chat", {"litellm_metadata": {}}, "forbidden_parameter",
     "litellm_metadata"),
    ("logger-fn", "chat", {"logger_fn": "print"}, "forbidden_parameter", "logger_fn"),
    ("metadata-litellm-reads", "chat", {"metadata": {"tags": ["x"]}},
     "unsupported_parameter", "metadata"),
    ("cost-override", "chat", {"input_cost_per_token": 0}, "unsupported_parameter",
     "input_cost_per_token"),
    ("cache-control", "chat", {"caching": True}, "unsupported_parameter", "caching"),
    ("model-list", "chat", {"model_list": [{"model_name": "x"}]}, "unsupported_parameter",
     "model_list"),
    ("prompt-management", "chat", {"prompt_id": "p", "prompt_variables": {}},
     "unsupported_parameter", "prompt_id"),
    ("guardrails", "chat", {"guardrails": ["g"]}, "unsupported_parameter", "guardrails"),
    ("extra-body", "chat", {"extra_body": {"top_k": 1}}, "unsupported_parameter",
     "extra_body"),
    ("completions-mock", "completions", {"mock_response": "x"}, "forbidden_parameter",
     "mock_response"),
    ("completions-metadata", "completions", {"metadata": {}}, "unsupported_parameter",
     "metadata"),
    ("embeddings-caching", "embeddings", {"caching": True}, "unsupported_parameter", "caching"),
    ("embeddings-fallbacks", "embeddings", {"fallbacks": ["x"]}, "forbidden_parameter",
     "fallbacks"),
]
_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
          "embeddings": "/v1/embeddings"}


def _fill(value: Any, capture: FakeUpstream) -> Any:
    if isinstance(value, str):
        return value.replace("{steal}", _steal(capture)).replace("{capture}", capture.url)
    if isinstance(value, list):
        return [_fill(v, capture) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, capture) for k, v in value.items()}
    return value


def _base(endpoint: str, model: str) -> dict[str, Any]:
    if endpoint == "embeddings":
        return {"model": "mistral-embed", "input": "hello"}
    if endpoint == "completions":
        return {"model": model, "prompt": "hello"}
    return {"model": model, "messages": HELLO}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", ["claude", "mistral"])
@pytest.mark.parametrize("case", LITELLM_REFUSED, ids=[c[0] for c in LITELLM_REFUSED])
def test_litellm_control_fields_are_refused_before_anything_is_sent(
        gateway: GatewayProcess, key: str, upstream: FakeUpstream, capture: FakeUpstream,
        case: tuple, model: str, stream: bool) -> None:
    _, endpoint, fields, code, param = case
    if endpoint == "embeddings" and (model != "mistral" or stream):
        pytest.skip("one embeddings model, which cannot stream")
    body = {**_base(endpoint, model), **_fill(fields, capture)}
    if stream:
        body["stream"] = True
    sent_before = len(upstream.requests)
    r, rid = _post(gateway, key, body, path=_PATHS[endpoint])
    err = _error(r, 400, code)
    assert err["param"] == param and err["type"] == "invalid_request_error"
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["status_code"] == 400 and event["error_code"] == code
    assert len(upstream.requests) == sent_before
    assert capture.requests == []


def test_nothing_reaches_an_internal_address_even_later(
        gateway: GatewayProcess, key: str, capture: FakeUpstream) -> None:
    """litellm's callbacks post their run logs seconds after the answer (4 s measured)."""
    for model in ("claude", "mistral"):
        for _, endpoint, fields, _code, _param in LITELLM_REFUSED[:3]:
            r, _ = _post(gateway, key, {**_base(endpoint, model), **_fill(fields, capture)})
            assert r.status_code == 400, r.text
    time.sleep(6)
    assert capture.requests == []


@pytest.mark.parametrize("model,path,fields,sent", [
    ("claude", "/v1/messages", {"temperature": 0.5, "top_k": 5, "stop": ["zz"],
                                "max_tokens": 50, "user": "u-1"},
     {"temperature": 0.5, "top_k": 5, "stop_sequences": ["zz"], "max_tokens": 50}),
    ("mistral", "/v1/chat/completions", {"top_p": 0.5, "seed": 7, "max_tokens": 20},
     {"top_p": 0.5, "max_tokens": 20}),
], ids=["anthropic", "mistral"])
def test_allowlisted_fields_reach_the_provider(
        gateway: GatewayProcess, key: str, upstream: FakeUpstream, model: str, path: str,
        fields: dict[str, Any], sent: dict[str, Any]) -> None:
    upstream.clear()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    extra = {k: v for k, v in fields.items() if k == "top_k"}
    known = {k: v for k, v in fields.items() if k != "top_k"}
    reply = client.chat.completions.create(model=model, messages=HELLO, extra_body=extra,
                                           **known)
    assert reply.choices[0].message.content == "fake: hello"
    (request,) = [r for r in upstream.requests if r["path"] == path]
    assert {k: request["body"].get(k) for k in sent} == sent


def test_embeddings_through_litellm_still_work(gateway: GatewayProcess, key: str) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    out = client.embeddings.create(model="mistral-embed", input="hello", encoding_format="float")
    assert len(out.data) == 1 and out.data[0].embedding


def test_a_client_cannot_cool_the_deployment_down_for_others(
        gateway: GatewayProcess, upstream: FakeUpstream) -> None:
    """Three `mock_response` errors used to trip the cooldown (`failures_to_cooldown: 3`):
    another team then got 503 `no_healthy_deployment` without any upstream call. So did
    three bodies litellm cannot translate (it reports them as connection errors)."""
    attacker = gateway.create_key(name="sec-attacker")["key"]
    victim = gateway.create_key(name="sec-victim")["key"]
    for _ in range(4):
        r, _ = _post(gateway, attacker, {"model": "claude-2", "messages": HELLO,
                                         "mock_response": "litellm.InternalServerError"})
        _error(r, 400, "forbidden_parameter")
    sent_before = len(upstream.requests)
    odd_part = [{"role": "user", "content": [{"type": "no_such_part", "x": 1}]}]
    for stream in (False, True, False, True):
        r, _ = _post(gateway, attacker, {"model": "claude-2", "messages": odd_part,
                                         "stream": stream})
        _error(r, 400, "upstream_invalid_request")
    assert len(upstream.requests) == sent_before
    r, _ = _post(gateway, victim, {"model": "claude-2", "messages": HELLO})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "fake: hello"


# ------------------------------------------------------------------ finding 1: direct path

# Fields an OpenAI-compatible server gets as sent: OpenAI's own, servers' extras, and the
# caller's own data that happens to use destination or credential words.
DIRECT_ALLOWED = [
    ("prompt_cache_key", {"prompt_cache_key": "user-42"}),
    ("safety_identifier", {"safety_identifier": "hash-1"}),
    ("service_tier", {"service_tier": "auto"}),
    ("store", {"store": False}),
    ("metadata-with-routing-words", {"metadata": {"headers": "x", "api_key": "mine",
                                                  "base_url": "note"}}),
    ("user", {"user": "end-user-1"}),
    ("max_completion_tokens", {"max_completion_tokens": 30}),
    ("reasoning_effort", {"reasoning_effort": "low"}),
    ("web_search_options", {"web_search_options": {"user_location": {
        "type": "approximate", "approximate": {"city": "Oslo", "region": "Oslo"}}}}),
    ("tool-schema-with-routing-words", {"tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {
            "api_key": {"type": "string"}, "base_url": {"type": "string"}}}}}]}),
    ("response-schema-with-routing-words", {"response_format": {
        "type": "json_schema", "json_schema": {"name": "s", "schema": {
            "type": "object", "properties": {"endpoint": {"type": "string"},
                                             "password": {"type": "string"}}}}}}),
    ("logit_bias", {"logit_bias": {"50256": -100}}),
    ("vllm-extras", {"top_k": 5, "min_p": 0.1, "stop_token_ids": [2],
                     "chat_template_kwargs": {"enable_thinking": False}}),
    ("guided_json-with-routing-words", {"guided_json": {"properties": {"api_key": {}}}}),
    ("openrouter-provider", {"provider": {"order": ["a"], "allow_fallbacks": False}}),
    ("image-url-part", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "hello"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
]

# Destination and credential names in every spelling, at the top and nested.
DIRECT_REFUSED = [
    ("apiBase", {"apiBase": "http://evil"}, "apiBase"),
    ("API-KEY", {"API-KEY": "sk-x"}, "API-KEY"),
    ("baseURL", {"baseURL": "http://evil"}, "baseURL"),
    ("BASEURL", {"BASEURL": "http://evil"}, "BASEURL"),
    ("Base_Url", {"Base_Url": "http://evil"}, "Base_Url"),
    ("x-api-key", {"x-api-key": "sk-x"}, "x-api-key"),
    ("XApiKey", {"XApiKey": "sk-x"}, "XApiKey"),
    ("apikey", {"apikey": "sk-x"}, "apikey"),
    ("api_version", {"api_version": "2024-01-01"}, "api_version"),
    ("azure_ad_token", {"azure_ad_token": "t"}, "azure_ad_token"),
    ("aws_region_name", {"aws_region_name": "us-east-1"}, "aws_region_name"),
    ("vertex_project", {"vertex_project": "p"}, "vertex_project"),
    ("extra_headers", {"extra_headers": {"x": "y"}}, "extra_headers"),
    ("headers", {"headers": {"x": "y"}}, "headers"),
    ("custom_host", {"custom_host": "evil"}, "custom_host"),
    ("proxy", {"proxy": "http://evil"}, "proxy"),
    ("upstream_url", {"upstream_url": "http://evil"}, "upstream_url"),
    ("server_url", {"server_url": "http://evil"}, "server_url"),
    ("access_token", {"access_token": "t"}, "access_token"),
    ("password", {"password": "p"}, "password"),
    ("mock_response", {"mock_response": "x"}, "mock_response"),
    ("fallbacks", {"fallbacks": ["x"]}, "fallbacks"),
    ("success_callback", {"success_callback": ["x"]}, "success_callback"),
    ("in-a-message", {"messages": [{"role": "user", "content": "hi", "api_key": "k"}]},
     "messages[0].api_key"),
    ("in-a-tool-function", {"tools": [{"type": "function", "function": {
        "name": "f", "apiBase": "http://evil"}}]}, "tools[0].function.apiBase"),
    ("in-extra_body", {"extra_body": {"x": {"base_url": "http://evil"}}},
     "extra_body.x.base_url"),
]


@pytest.mark.parametrize("case", DIRECT_ALLOWED, ids=[c[0] for c in DIRECT_ALLOWED])
def test_direct_path_forwards_openai_parameters_and_user_data(
        gateway: GatewayProcess, key: str, upstream: FakeUpstream, case: tuple) -> None:
    _, fields = case
    upstream.clear()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    body = {"messages": HELLO, **fields}
    reply = client.chat.completions.create(model="gpt", messages=body.pop("messages"),
                                           extra_body=body)
    assert reply.choices[0].message.content == "fake: hello"
    (request,) = upstream.requests
    assert {k: request["body"].get(k) for k in body} == body


@pytest.mark.parametrize("case", DIRECT_REFUSED, ids=[c[0] for c in DIRECT_REFUSED])
def test_direct_path_refuses_destinations_and_credentials_in_any_spelling(
        gateway: GatewayProcess, key: str, upstream: FakeUpstream, case: tuple) -> None:
    _, fields, param = case
    upstream.clear()
    client = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    body = {"messages": HELLO, **fields}
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt", messages=body.pop("messages"),
                                       extra_body=body)
    err = info.value.body
    assert isinstance(err, dict) and err["code"] == "forbidden_parameter", err
    assert err["param"] == param
    assert upstream.requests == []


@pytest.mark.parametrize("header,allowed", [
    ("X-Api-Base", False), ("api-key", False), ("X-Base-URL", False),
    ("x-portkey-custom-host", False), ("X-Upstream-Url", False), ("x-apikey", False),
    ("X-LiteLLM-Api-Key", False), ("X-Azure-Deployment", False),
    ("OpenAI-Organization", True), ("OpenAI-Project", True), ("X-Forwarded-Host", True),
    ("Cookie", True), ("Idempotency-Key", True), ("anthropic-version", True),
])
def test_headers_follow_the_same_rule(gateway: GatewayProcess, key: str, header: str,
                                      allowed: bool) -> None:
    r, rid = _post(gateway, key, {"model": "gpt", "messages": HELLO},
                   headers={header: "http://evil.example"})
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert _error(r, 400, "forbidden_parameter")["param"].lower() == header.lower()
        (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
        assert event["error_code"] == "forbidden_parameter"


# ------------------------------------------------------------------ finding 8: upstream text

@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model,code", [
    ("gpt-leaky", "invalid_api_key"),  # our own client: the upstream's own code
    ("claude-leaky", "authentication_error"),  # litellm, Anthropic's protocol: its class
    ("mistral-leaky", "authentication_error"),  # litellm, OpenAI-shaped protocol
])
def test_upstream_error_text_with_a_masked_key_never_reaches_client_log_or_audit(
        gateway: GatewayProcess, key: str, leaky: FakeUpstream, model: str, code: str,
        stream: bool) -> None:
    r, rid = _post(gateway, key, {"model": model, "messages": HELLO, "stream": stream})
    err = _error(r, 502, "upstream_error")
    assert err["message"].endswith(f"(upstream answered 401 ({code}))"), err
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    stored = json.dumps(event, default=str)
    log = gateway.log()
    for fragment in (*KEY_FRAGMENTS, PROVIDER_KEY, "platform.openai.com"):
        assert fragment not in r.text, fragment
        assert fragment not in stored, fragment
        assert fragment not in log, fragment
    assert any(req["headers"].get("authorization", req["headers"].get("x-api-key", ""))
               .endswith(PROVIDER_KEY) for req in leaky.requests)  # the key did go upstream


def test_log_is_json_lines_only_and_carries_no_library_text(
        gateway: GatewayProcess, key: str) -> None:
    """litellm's own handlers wrote plain text (tracebacks, a fallback string's newline forged
    a line); its records are not written at all now."""
    for model in ("claude", "mistral", "claude-leaky-log"):
        _post(gateway, key, {"model": model, "messages": HELLO,
                             "fallbacks": ['x\n{"level":"error","msg":"forged"}']})
        _post(gateway, key, {"model": model, "messages": HELLO})
    time.sleep(0.5)
    for line in gateway.log().splitlines():
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict) and entry.get("msg") != "forged", line
        assert not str(entry.get("logger", "")).startswith(("LiteLLM", "litellm")), line
        assert "litellm_redacted" not in entry


# ------------------------------------------------------------------ contract: short echoes

LONG = "m" * 10_000
NASTY = "bad\nname\u202e\x1b[31m" + "z" * 5_000


@pytest.mark.parametrize("case", [
    ("long-path", {"model": "gpt", "messages": HELLO}, None, 404, "/v1/" + LONG),
    ("long-model", {"model": LONG, "messages": HELLO}, None, 404),
    ("control-model", {"model": NASTY, "messages": HELLO}, None, 404),
    ("long-key-path", {"model": "gpt", "messages": HELLO, LONG: {"api_key": 1}}, None, 400),
    ("control-key", {"model": "gpt", "messages": HELLO, NASTY + "_api_key": 1}, None, 400),
    ("long-unsupported", {"model": "claude", "messages": HELLO, LONG: 1}, None, 400),
    ("long-template", {"model": "gpt", "messages": HELLO, "template": {"name": LONG}}, None,
     400),
    ("long-header", {"model": "gpt", "messages": HELLO}, {"x-" + "h" * 3000 + "-api-key": "1"},
     400),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_errors_echo_only_a_short_clean_excerpt_of_client_input(
        gateway: GatewayProcess, key: str, case: tuple) -> None:
    _, body, headers, status, *path = case
    r, _ = _post(gateway, key, body, headers=headers, path=path[0] if path else CHAT)
    assert r.status_code == status, r.text[:300]
    err = r.json()["error"]
    assert len(err["message"]) <= 200, err["message"]
    assert err["param"] is None or len(err["param"]) <= 65
    for text in (err["message"], err["param"] or ""):
        assert text.isprintable(), text
        assert "\u202e" not in text and "\x1b" not in text
    assert len(r.content) < 600
