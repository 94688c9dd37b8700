"""Every governance feature on every model endpoint, through one real gateway.

One cell per (endpoint, feature): rate limit, budget, PII block, PII redaction of the input
(what the upstream receives), PII redaction of the output (what the client receives),
templates, the audit event and the cost. An endpoint that skips a stage fails its cells.
Streams are endpoints of their own here: their answer is pushed through the same stages.
Adding a protocol is one entry in `ENDPOINTS`. Refusals are checked in the protocol's own
terms: the SDK's exception, its status, and the audit event's `error_code` (Anthropic's
envelope has no `code`).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import GATEWAY_ENV
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

EMAIL = "ana.lima@example.org"
PLACEHOLDER = "[EMAIL_1]"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str
    model: str
    call: Callable[[openai.OpenAI, str, str, dict[str, Any]], str | None]  # -> answer text
    templates: bool = True  # a request of this protocol may use a template
    answers_text: bool = True
    deployment: str = ""  # the model's deployment (default: openai/<model> on the fake)
    sdk: str = "openai"  # whose exceptions a refusal raises


def _chat(stream: bool) -> Callable[..., str | None]:
    def call(client: openai.OpenAI, model: str, text: str, extra: dict[str, Any]) -> str:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": text}], stream=stream,
            extra_body=extra)
        if not stream:
            return reply.choices[0].message.content or ""  # type: ignore[union-attr]
        return "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    return call


def _completions(stream: bool) -> Callable[..., str | None]:
    def call(client: openai.OpenAI, model: str, text: str, extra: dict[str, Any]) -> str:
        reply = client.completions.create(model=model, prompt=text, stream=stream,
                                          max_tokens=16, extra_body=extra)
        if not stream:
            return reply.choices[0].text  # type: ignore[union-attr]
        return "".join(c.choices[0].text for c in reply if c.choices)
    return call


def _embeddings(client: openai.OpenAI, model: str, text: str, extra: dict[str, Any]) -> None:
    client.embeddings.create(model=model, input=text, extra_body=extra)
    return None


def _responses(stream: bool) -> Callable[..., str | None]:
    """/v1/responses; a stream's answer as a client that reads only the terminal event gets
    it (the deltas must say the same: tests/pii/test_responses_events.py)."""
    def call(client: openai.OpenAI, model: str, text: str, extra: dict[str, Any]) -> str:
        reply = client.responses.create(model=model, input=text, stream=stream,
                                        extra_body=extra)
        if not stream:
            return reply.output_text  # type: ignore[union-attr]
        events = list(reply)  # type: ignore[call-overload]
        return events[-1].response.output_text
    return call


def _anthropic_client(client: openai.OpenAI) -> anthropic.Anthropic:
    """The same gateway, key and request id, through the anthropic SDK."""
    return anthropic.Anthropic(base_url=str(client.base_url).removesuffix("v1/"),
                               api_key=client.api_key, max_retries=0, timeout=30,
                               default_headers=dict(client._custom_headers),
                               _strict_response_validation=True)


def _messages(stream: bool) -> Callable[..., str | None]:
    def call(client: openai.OpenAI, model: str, text: str, extra: dict[str, Any]) -> str:
        sdk = _anthropic_client(client)
        request: dict[str, Any] = {"model": model, "max_tokens": 64, "extra_body": extra,
                                   "messages": [{"role": "user", "content": text}]}
        if not stream:
            reply = sdk.messages.create(**request)
        else:
            with sdk.messages.stream(**request) as events:
                reply = events.get_final_message()
        return "".join(b.text for b in reply.content if b.type == "text")
    return call


ENDPOINTS = [
    Endpoint("chat", "/v1/chat/completions", "gpt-4o-mini", _chat(False)),
    Endpoint("chat-stream", "/v1/chat/completions", "gpt-4o-mini", _chat(True)),
    Endpoint("completions", "/v1/completions", "gpt-3.5-turbo-instruct", _completions(False)),
    Endpoint("completions-stream", "/v1/completions", "gpt-3.5-turbo-instruct",
             _completions(True)),
    Endpoint("embeddings", "/v1/embeddings", "text-embedding-3-small", _embeddings,
             templates=False, answers_text=False),
    # translated to the upstream's Chat Completions, and passed through to its Responses API
    Endpoint("responses", "/v1/responses", "gpt-4o-mini", _responses(False)),
    Endpoint("responses-stream", "/v1/responses", "gpt-4o-mini", _responses(True)),
    Endpoint("responses-native", "/v1/responses", "gpt-4.1", _responses(False)),
    Endpoint("responses-native-stream", "/v1/responses", "gpt-4.1", _responses(True)),
    # Messages: translated to the fake's OpenAI Chat, and passed through to its Anthropic API
    Endpoint("messages", "/v1/messages", "gpt-4o-mini", _messages(False), sdk="anthropic"),
    Endpoint("messages-stream", "/v1/messages", "gpt-4o-mini", _messages(True),
             sdk="anthropic"),
    Endpoint("messages-native", "/v1/messages", "claude-matrix", _messages(False),
             deployment="anthropic/claude-3-5-haiku-20241022", sdk="anthropic"),
    Endpoint("messages-native-stream", "/v1/messages", "claude-matrix", _messages(True),
             deployment="anthropic/claude-3-5-haiku-20241022", sdk="anthropic"),
]
NATIVE_RESPONSES = {"gpt-4.1"}  # deployments with native_responses: true

# One team (and policy) per governance feature.
POLICIES = {
    "pii-block": "input: {email: block}",
    "pii-in": "input: {email: redact}",
    "pii-out": "output: {email: redact}",
}
TEMPLATE = {"name": "matrix-greeting", "variables": {"who": {"type": "string"}},
            "messages": [{"role": "system", "content": "Greet {{ who }} from the template."}]}


def _deployment(e: Endpoint, upstream: str) -> str:
    if e.deployment.startswith("anthropic/"):
        return f'{{model: {e.deployment}, api_base: "{upstream}", api_key: env:FAKE_ANTHROPIC_KEY}}'
    return (f'{{model: openai/{e.model}, api_base: "{upstream}/v1", '
            f'native_responses: {str(e.model in NATIVE_RESPONSES).lower()}}}')


def _config(upstream: str) -> str:
    models = "\n".join(f"""  - name: {model}
    deployments: [{deployment}]
    pricing: {{input_per_million: 1000, output_per_million: 2000}}"""
                       for model, deployment in {e.model: _deployment(e, upstream)
                                                 for e in ENDPOINTS}.items())
    return f"models:\n{models}\npolicies_dir: policies\naudit: {{bodies: redacted}}\n"


@dataclass
class Matrix:
    gateway: GatewayProcess
    upstream: FakeUpstream
    keys: dict[str, str]

    def client(self, feature: str, request_id: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=self.keys[feature],
                             max_retries=0, timeout=30,
                             default_headers={"x-request-id": request_id})

    def event(self, request_id: str) -> dict[str, Any]:
        (row,) = self.gateway.wait_for_audit("request_id = :r", {"r": request_id})
        return row

    def upstream_saw(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.upstream.requests
                if (r.get("headers") or {}).get("x-request-id") == request_id] or \
            self.upstream.requests


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    up = FakeUpstream(name="matrix").start()
    work: Path = tmp_path_factory.mktemp("matrix")
    (work / "policies").mkdir()
    for name, pii in POLICIES.items():
        (work / "policies" / f"{name}.yaml").write_text(
            f"name: {name}\napplies_to: {{teams: [{name}]}}\npii: {{{pii}}}\n")
    gw = GatewayProcess(work, _config(up.url), env=GATEWAY_ENV).start()
    try:
        assert gw.admin("POST", "/admin/templates", TEMPLATE).status_code == 201
        keys: dict[str, str] = {}
        for team in ("plain", "limit", "budget", *POLICIES):
            gw.create_team(name=team)
        for feature, fields in {
            "plain": {"team": "plain"},
            "limit": {"team": "limit", "rpm": 1},
            "budget": {"team": "budget", "budget_usd": 0.0000001, "budget_period": "day"},
            **{name: {"team": name} for name in POLICIES},
        }.items():
            keys[feature] = gw.create_key(name=f"matrix-{feature}", **fields)["key"]
        yield Matrix(gw, up, keys)
    finally:
        gw.stop()
        up.stop()


def _rid() -> str:
    return "mx-" + uuid.uuid4().hex[:20]


@dataclass
class Refusal:
    status: int = 0
    code: str | None = None  # OpenAI's `error.code`; None on Anthropic's envelope
    error_type: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def refused(e: Endpoint, status: int) -> Iterator[Refusal]:
    """The request in the block is refused with `status`, as its protocol's SDK reports it."""
    seen = Refusal()
    kind = anthropic.APIStatusError if e.sdk == "anthropic" else openai.APIStatusError
    with pytest.raises(kind) as info:
        yield seen
    exc: Any = info.value
    seen.status, seen.headers = exc.status_code, dict(exc.response.headers)
    if e.sdk == "anthropic":
        assert exc.body["type"] == "error", exc.body
        seen.error_type = exc.body["error"]["type"]
    else:
        seen.code, seen.error_type, seen.param = exc.code, exc.type, exc.param
    assert seen.status == status, (seen.status, exc.body)


def _text(endpoint: Endpoint) -> str:
    return f"please answer {endpoint.name}"


# --- the features -------------------------------------------------------------------------

def limit(m: Matrix, e: Endpoint) -> None:
    """rpm 1 per key: a second request within the minute is 429 rate_limit_exceeded."""
    key = f"limit-{e.name}"
    m.keys[key] = m.gateway.create_key(name=key, team="limit", rpm=1)["key"]
    first, second = _rid(), _rid()
    e.call(m.client(key, first), e.model, _text(e), {})
    with refused(e, 429) as refusal:
        e.call(m.client(key, second), e.model, _text(e), {})
    assert refusal.code in ("rate_limit_exceeded", None)
    assert refusal.error_type == "rate_limit_error"
    assert refusal.headers.get("retry-after")
    event = m.event(second)
    assert event["status_code"] == 429 and event["error_code"] == "rate_limit_exceeded"


def budget(m: Matrix, e: Endpoint) -> None:
    """A spent budget: 429 insufficient_quota before anything goes upstream."""
    rid = _rid()
    before = len(m.upstream.requests)
    with refused(e, 429) as refusal:
        e.call(m.client("budget", rid), e.model, _text(e), {})
    assert refusal.code in ("insufficient_quota", None)
    assert len(m.upstream.requests) == before
    assert m.event(rid)["error_code"] == "insufficient_quota"


def pii_block(m: Matrix, e: Endpoint) -> None:
    rid = _rid()
    before = len(m.upstream.requests)
    with refused(e, 400) as refusal:
        e.call(m.client("pii-block", rid), e.model, f"write to {EMAIL}", {})
    assert refusal.code in ("pii_blocked", None)
    assert refusal.error_type == "invalid_request_error"
    assert len(m.upstream.requests) == before
    event = m.event(rid)
    assert event["error_code"] == "pii_blocked" and EMAIL not in str(event)


def pii_redact_in(m: Matrix, e: Endpoint) -> None:
    rid = _rid()
    m.upstream.clear()
    e.call(m.client("pii-in", rid), e.model, f"write to {EMAIL}", {})
    sent = str(m.upstream.requests[-1]["body"])
    assert EMAIL not in sent and PLACEHOLDER in sent


def pii_redact_out(m: Matrix, e: Endpoint) -> None:
    """The upstream echoes the email (no input rule); the client gets the placeholder."""
    rid = _rid()
    answer = e.call(m.client("pii-out", rid), e.model, f"write to {EMAIL}", {})
    if e.answers_text:
        assert answer is not None and EMAIL not in answer and PLACEHOLDER in answer, answer
    event = m.event(rid)
    assert event["status_code"] == 200 and EMAIL not in str(event)


def template(m: Matrix, e: Endpoint) -> None:
    rid = _rid()
    spec = {"template": {"name": "matrix-greeting", "variables": {"who": "Ada"}}}
    if not e.templates:
        with refused(e, 400) as refusal:
            e.call(m.client("plain", rid), e.model, _text(e), spec)
        assert refusal.param == "template"
        return
    m.upstream.clear()
    e.call(m.client("plain", rid), e.model, _text(e), spec)
    assert "Greet Ada from the template." in str(m.upstream.requests[-1]["body"])
    event = m.event(rid)
    assert event["template_name"] == "matrix-greeting" and event["template_version"] == 1


def audit(m: Matrix, e: Endpoint) -> None:
    """One event, with the endpoint, model, tokens and the stream flag."""
    rid = _rid()
    e.call(m.client("plain", rid), e.model, _text(e), {})
    event = m.event(rid)
    assert event["endpoint"] == e.path and event["status_code"] == 200
    assert event["model_served"] == e.model and event["input_tokens"] > 0
    assert bool(event["stream"]) == e.name.endswith("-stream")


def cost(m: Matrix, e: Endpoint) -> None:
    rid = _rid()
    e.call(m.client("plain", rid), e.model, _text(e), {})
    event = m.event(rid)
    expected = event["input_tokens"] * 1000 + event["output_tokens"] * 2000  # $/1M tokens
    assert event["cost_nanos"] == expected * 1000 and event["cost_nanos"] > 0


FEATURES = [limit, budget, pii_block, pii_redact_in, pii_redact_out, template, audit, cost]


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_every_governance_feature_holds_on_every_endpoint(
        matrix: Matrix, endpoint: Endpoint, feature: Callable[[Matrix, Endpoint], None]) -> None:
    feature(matrix, endpoint)
