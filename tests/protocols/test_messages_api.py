"""`/v1/messages` and `/v1/messages/count_tokens` as Anthropic's clients see them: the official
`anthropic` SDK with strict response validation against a real `gateway serve`, on a
translated route (the fake's OpenAI Chat), a passthrough route (the fake's Anthropic API) and
the offline `demo` model; raw SSE where the exact event sequence matters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import GATEWAY_ENV, UPSTREAM_ANTHROPIC_KEY
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess, free_port

TOOLS = [{"name": "Read", "description": "Read a file",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]
ROUTES = ["gpt-agent", "claude-agent", "demo"]  # translated, passthrough, offline


def _config(up: str, faulty: str) -> str:
    closed = free_port()
    return f"""
models:
  - name: gpt-agent
    deployments: [{{model: openai/gpt-agent-1, api_base: "{up}/v1", api_key: env:FAKE_OPENAI_KEY}}]
  - name: claude-agent
    deployments: [{{model: anthropic/claude-agent-1, api_base: "{up}",
                    api_key: env:FAKE_ANTHROPIC_KEY}}]
  - name: claude-allow
    deployments: [{{model: anthropic/claude-agent-2, api_base: "{up}",
                    api_key: env:FAKE_ANTHROPIC_KEY,
                    anthropic_beta_allowlist: [interleaved-thinking-2025-05-14]}}]
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: gpt-faulty
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{faulty}/v1", timeout_s: 3,
                    first_token_timeout_s: 2, idle_timeout_s: 2}}]
  - name: claude-faulty
    deployments: [{{model: anthropic/claude-agent-3, api_base: "{faulty}", timeout_s: 3,
                    first_token_timeout_s: 2, idle_timeout_s: 2}}]
  - name: broken
    deployments: [{{model: openai/nothing, api_base: "http://127.0.0.1:{closed}/v1",
                    connect_timeout_s: 1}}]
router: {{retries: 0, total_timeout_s: 10, cooldown_s: 0, failures_to_cooldown: 100}}
server: {{max_body_bytes: 65536}}
"""


class Env:
    def __init__(self, gateway: GatewayProcess, up: FakeUpstream, faulty: FakeUpstream) -> None:
        self.gateway, self.up, self.faulty = gateway, up, faulty
        self.key = gateway.create_key(name="messages-app")["key"]

    def sdk(self, **headers: str) -> anthropic.Anthropic:
        rid = "msg-" + uuid.uuid4().hex[:16]
        return anthropic.Anthropic(base_url=self.gateway.url, api_key=self.key, max_retries=0,
                                   timeout=30, _strict_response_validation=True,
                                   default_headers={"x-request-id": rid, **headers})

    def post(self, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(self.gateway.url + path, json=body, timeout=30,
                          headers={"x-api-key": self.key, "anthropic-version": "2023-06-01",
                                   **headers})


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    up = FakeUpstream(name="messages").start()
    faulty = FakeUpstream(name="messages-faulty").start()
    work: Path = tmp_path_factory.mktemp("messages")
    gw = GatewayProcess(work, _config(up.url, faulty.url), env=GATEWAY_ENV).start()
    try:
        yield Env(gw, up, faulty)
    finally:
        gw.stop()
        faulty.stop()
        up.stop()


def _events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every SSE event, checking that the two agree."""
    out = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name_line, data_line = block.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), block
        data = orjson.loads(data_line[6:])
        assert data["type"] == name_line[7:], block
        out.append((name_line[7:], data))
    return out


# --- create, stream, tools ------------------------------------------------------------------

@pytest.mark.parametrize("model", ROUTES)
def test_create_answers_in_anthropics_shape_on_every_route(env: Env, model: str) -> None:
    reply = env.sdk().messages.create(model=model, max_tokens=100,
                                      messages=[{"role": "user", "content": "hello there"}])
    assert reply.type == "message" and reply.role == "assistant" and reply.model == model
    assert reply.id.startswith("msg_") and reply.stop_reason == "end_turn"
    assert [b.type for b in reply.content] == ["text"]
    assert "hello there" in reply.content[0].text  # type: ignore[union-attr]
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


@pytest.mark.parametrize("model", ROUTES)
def test_a_stream_ends_in_the_same_message_as_the_plain_answer(env: Env, model: str) -> None:
    request: dict[str, Any] = {"model": model, "max_tokens": 200, "tools": TOOLS,
                               "thinking": {"type": "enabled", "budget_tokens": 1024},
                               "messages": [{"role": "user", "content": "open README.md"}]}
    plain = env.sdk().messages.create(**request)
    with env.sdk().messages.stream(**request) as stream:
        final = stream.get_final_message()
    def shape(message: Any) -> list[tuple[str, Any]]:
        return [(b.type, getattr(b, "input", None) or getattr(b, "text", None)
                 or getattr(b, "thinking", None)) for b in message.content]
    assert shape(final) == shape(plain)
    assert final.stop_reason == plain.stop_reason
    assert final.usage.input_tokens == plain.usage.input_tokens > 0


def test_a_translated_stream_sends_anthropics_exact_event_sequence(env: Env) -> None:
    body = {"model": "gpt-agent", "max_tokens": 200, "stream": True, "tools": TOOLS,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "open README.md"}]}
    r = env.post("/v1/messages", body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.content)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    # thinking (from reasoning_content), then the tool call: each block opened, fed, closed
    blocks = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert blocks == ["thinking", "tool_use"]
    for index in range(len(blocks)):
        mine = [n for n, d in events if d.get("index") == index]
        assert mine[0] == "content_block_start" and mine[-1] == "content_block_stop"
        assert set(mine[1:-1]) == {"content_block_delta"}
    deltas = {d["delta"]["type"] for n, d in events if n == "content_block_delta"}
    assert deltas == {"thinking_delta", "input_json_delta"}
    start = events[0][1]["message"]
    assert start["model"] == "gpt-agent" and start["usage"]["input_tokens"] > 0  # never zeros
    end = events[-2][1]
    assert end["delta"]["stop_reason"] == "tool_use" and end["usage"]["output_tokens"] > 0
    arguments = "".join(d["delta"]["partial_json"] for n, d in events
                        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta")
    assert orjson.loads(arguments) == {"query": "open README.md"}


def test_a_passthrough_stream_relays_the_upstreams_events_with_the_public_model(env: Env
                                                                                ) -> None:
    body = {"model": "claude-agent", "max_tokens": 200, "stream": True,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": "hi"}]}
    events = _events(env.post("/v1/messages?beta=true", body).content)
    names = [n for n, _ in events]
    assert "ping" in names and names[-1] == "message_stop"
    assert events[0][1]["message"]["model"] == "claude-agent"
    assert {"thinking_delta", "signature_delta", "text_delta"} <= {
        d["delta"]["type"] for n, d in events if n == "content_block_delta"}


def test_forced_tool_use_is_parsed_by_the_sdk(env: Env) -> None:
    for model in ("gpt-agent", "claude-agent"):
        reply = env.sdk().messages.create(
            model=model, max_tokens=100, tools=TOOLS, tool_choice={"type": "tool", "name": "Read"},
            messages=[{"role": "user", "content": "find the license"}])
        (call,) = [b for b in reply.content if b.type == "tool_use"]
        assert call.name == "Read" and call.input == {"query": "find the license"}
        assert reply.stop_reason == "tool_use"


# --- count_tokens -------------------------------------------------------------------------

def test_count_tokens_asks_a_passthrough_upstream_and_estimates_elsewhere(env: Env) -> None:
    messages = [{"role": "user", "content": "count these five words please"}]
    sdk = env.sdk()
    native = sdk.messages.with_raw_response.count_tokens(model="claude-agent",
                                                         messages=messages)
    assert native.parse().input_tokens == 6  # the fake's own count: 5 words + 1
    assert native.headers.get("x-gateway-estimated") is None
    assert env.up.requests[-1]["path"] == "/v1/messages/count_tokens"
    translated = sdk.messages.with_raw_response.count_tokens(model="gpt-agent",
                                                             messages=messages)
    assert translated.headers["x-gateway-estimated"] == "true"
    assert translated.parse().input_tokens > 0


def test_count_tokens_is_audited_and_costs_nothing(env: Env) -> None:
    rid = "cnt-" + uuid.uuid4().hex[:12]
    r = env.post("/v1/messages/count_tokens", {"model": "demo", "messages": [
        {"role": "user", "content": "hi"}]}, **{"x-request-id": rid})
    assert r.status_code == 200 and set(r.json()) == {"input_tokens"}
    (event,) = env.gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["endpoint"] == "/v1/messages/count_tokens" and event["status_code"] == 200
    assert event["cost_nanos"] is None


# --- errors, auth, routes -----------------------------------------------------------------

def _too_large() -> dict[str, Any]:
    return {"model": "demo", "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 70_000}]}


ERRORS = [
    ("bad key", {"api_key": "sk-not-a-key"}, {}, anthropic.AuthenticationError, 401,
     "authentication_error"),
    ("unknown model", {}, {"model": "nope"}, anthropic.NotFoundError, 404, "not_found_error"),
    ("bad field", {}, {"extra_body": {"temperature": 5}}, anthropic.BadRequestError, 400,
     "invalid_request_error"),
    # an object where a name belongs (make fuzz at FUZZ_SCALE=10: it was a 500)
    ("thinking type an object", {}, {"extra_body": {"thinking": {"type": {}}}},
     anthropic.BadRequestError, 400, "invalid_request_error"),
    ("too large", {}, _too_large(), anthropic.RequestTooLargeError, 413, "request_too_large"),
    ("upstream down", {}, {"model": "broken"}, anthropic.InternalServerError, 502,
     "api_error"),
]


@pytest.mark.parametrize(("case", "client", "body", "kind", "status", "error_type"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_errors_are_anthropics_envelope_and_map_to_the_sdk_exceptions(
        env: Env, case: str, client: dict[str, Any], body: dict[str, Any], kind: type,
        status: int, error_type: str) -> None:
    rid = "err-" + uuid.uuid4().hex[:12]
    sdk = anthropic.Anthropic(base_url=env.gateway.url, max_retries=0, timeout=30,
                              default_headers={"x-request-id": rid},
                              **{"api_key": env.key, **client})
    request = {"model": "demo", "max_tokens": 20,
               "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(kind) as raised:
        sdk.messages.create(**request)
    exc: Any = raised.value
    assert exc.status_code == status
    assert exc.body == {"type": "error", "error": {"type": error_type,
                                                   "message": exc.body["error"]["message"]}}
    assert exc.body["error"]["message"]
    env.gateway.wait_for_audit("request_id = :r", {"r": rid})  # exactly one event


def test_forbidden_model_and_rate_limit_are_permission_and_rate_limit_errors(env: Env) -> None:
    limited = env.gateway.create_key(name="messages-limited", rpm=1, models=["demo"])["key"]
    sdk = anthropic.Anthropic(base_url=env.gateway.url, api_key=limited, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        sdk.messages.create(model="claude-agent", max_tokens=5,
                            messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    sdk.messages.create(model="demo", max_tokens=5, messages=[{"role": "user", "content": "a"}])
    with pytest.raises(anthropic.RateLimitError) as limited_error:
        sdk.messages.create(model="demo", max_tokens=5,
                            messages=[{"role": "user", "content": "b"}])
    assert limited_error.value.response.headers["retry-after"]
    assert limited_error.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_missing_max_tokens_is_invalid_request_naming_it(env: Env) -> None:
    r = env.post("/v1/messages", {"model": "demo", "messages": [{"role": "user",
                                                                 "content": "hi"}]})
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in r.json()["error"]["message"]


@pytest.mark.parametrize("header", ["x-api-key", "authorization"])
def test_the_key_comes_by_x_api_key_or_bearer_and_the_query_string_is_ignored(
        env: Env, header: str) -> None:
    value = env.key if header == "x-api-key" else f"Bearer {env.key}"
    r = httpx.post(env.gateway.url + "/v1/messages?beta=true", timeout=30,
                   headers={header: value, "anthropic-version": "2023-06-01"},
                   json={"model": "demo", "max_tokens": 20,
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["type"] == "message"


def test_other_methods_and_paths_under_messages_answer_in_anthropics_envelope(env: Env
                                                                              ) -> None:
    r = httpx.get(env.gateway.url + "/v1/messages", headers={"x-api-key": env.key})
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = httpx.post(env.gateway.url + "/v1/messages/batches", headers={"x-api-key": env.key})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_models_list_is_in_anthropics_shape_when_the_request_says_anthropic_version(
        env: Env) -> None:
    page = env.sdk().models.list()
    ids = [m.id for m in page.data]
    assert "claude-agent" in ids and all(m.type == "model" for m in page.data)
    assert env.sdk().models.retrieve("claude-agent").display_name == "claude-agent"
    openai_shape = httpx.get(env.gateway.url + "/v1/models",
                             headers={"authorization": f"Bearer {env.key}"}).json()
    assert openai_shape["object"] == "list" and openai_shape["data"][0]["object"] == "model"
    missing = httpx.get(env.gateway.url + "/v1/models",
                        headers={"anthropic-version": "2023-06-01"})
    assert missing.status_code == 401 and missing.json()["type"] == "error"


# --- passthrough headers ------------------------------------------------------------------

def test_passthrough_forwards_anthropic_headers_unchanged_and_never_the_virtual_key(
        env: Env) -> None:
    env.up.clear()
    env.sdk(**{"anthropic-version": "2023-06-01",
               "anthropic-beta": "interleaved-thinking-2025-05-14,  fine-grained-tool-streaming"
               "-2025-05-14"}).messages.create(
        model="claude-agent", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    (seen,) = env.up.requests
    headers = seen["headers"]
    assert headers["anthropic-version"] == "2023-06-01"  # as the client sent them
    assert headers["anthropic-beta"] == ("interleaved-thinking-2025-05-14,  fine-grained-tool"
                                         "-streaming-2025-05-14")
    assert headers["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
    assert env.key not in orjson.dumps(seen).decode()
    assert seen["body"]["model"] == "claude-agent-1"


def test_a_beta_allowlist_strips_the_flags_a_backend_rejects(env: Env) -> None:
    betas = {"anthropic-beta": "interleaved-thinking-2025-05-14,unknown-feature-2099-01-01"}
    request: dict[str, Any] = {"max_tokens": 20, "messages": [{"role": "user",
                                                               "content": "hi"}]}
    env.up.clear()
    reply = env.sdk(**betas).messages.create(model="claude-allow", **request)
    assert reply.content
    assert env.up.requests[-1]["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    with pytest.raises(anthropic.BadRequestError):  # no allowlist: the backend refuses it
        env.sdk(**betas).messages.create(model="claude-agent", **request)


# --- mid-stream failures ------------------------------------------------------------------

@pytest.mark.parametrize("model", ["gpt-faulty", "claude-faulty"])
def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(env: Env, model: str) -> None:
    env.faulty.set_fault("drop-after:3")
    try:
        rid = "cut-" + uuid.uuid4().hex[:12]
        r = env.post("/v1/messages", {"model": model, "max_tokens": 50, "stream": True,
                                      "messages": [{"role": "user", "content": "a b c d e f"}]},
                     **{"x-request-id": rid})
    finally:
        env.faulty.set_fault(None)
    events = _events(r.content)
    assert events[0][0] == "message_start" and events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [n for n, _ in events]
    (event,) = env.gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["partial"] and event["status_code"] == 200
    assert event["error_code"] == "upstream_error"


# --- usage semantics ------------------------------------------------------------------------

def test_usage_is_anthropics_on_the_wire_and_every_prompt_token_in_the_audit(env: Env) -> None:
    """Anthropic's input_tokens excludes cache reads and writes; OpenAI's prompt_tokens (and
    the audit's input_tokens, as on chat) includes them: no double count either way."""
    system = [{"type": "text", "text": "You are a careful coding agent " + uuid.uuid4().hex,
               "cache_control": {"type": "ephemeral"}}]
    for model in ("claude-agent", "gpt-agent"):
        for turn in (1, 2):  # the second turn reads the system prompt from the cache
            rid = f"use-{model}-{turn}-" + uuid.uuid4().hex[:8]
            reply = env.sdk(**{"x-request-id": rid}).messages.create(
                model=model, max_tokens=50, system=system,
                messages=[{"role": "user", "content": "hello"}])
            u = reply.usage
            cached = (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
            (event,) = env.gateway.wait_for_audit("request_id = :r", {"r": rid})
            assert event["input_tokens"] == u.input_tokens + cached
            assert event["output_tokens"] == u.output_tokens
            if turn == 2 or model == "gpt-agent":
                assert u.cache_read_input_tokens and u.cache_read_input_tokens > 0
