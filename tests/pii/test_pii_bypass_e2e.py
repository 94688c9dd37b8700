"""Every PII bypass form of issue 14, in every text field of every endpoint, is redacted before
the provider sees it: real `gateway serve`, the fake upstream recording what it received. Also:
a value split across two messages, and token arrays under a policy that must scan."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.conftest import GATEWAY_ENV
from tests.fakes.upstream import FakeUpstream
from tests.pii.bodies import REQUESTS
from tests.pii.test_robustness import BYPASSES
from tests.support.gateway_proc import GatewayProcess

PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
         "embeddings": "/v1/embeddings", "responses": "/v1/responses",
         "messages": "/v1/messages"}
POLICY = """
name: scan-everything
applies_to: {keys: [scanner]}
pii:
  input: {email: redact, phone: redact, credit_card: redact, us_ssn: redact, iban: redact,
          ip_address: redact, secret: redact}
"""
BLOCKING = """
name: block-cards
applies_to: {keys: [blocker]}
pii:
  input: {credit_card: block}
"""
_DATA_URL = re.compile(r"data:[^,\"]*;base64,([A-Za-z0-9+/=]+)")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
       ) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("pii-bypass")
    (root / "policies").mkdir()
    (root / "policies" / "scan.yaml").write_text(POLICY)
    (root / "policies" / "block.yaml").write_text(BLOCKING)
    base = f"{upstream.url}/v1"
    proc = GatewayProcess(root, f"""
models:
  - name: echo
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{base}"}}]
  - name: echo-text
    deployments: [{{model: openai/gpt-3.5-turbo-instruct, api_base: "{base}"}}]
  - name: embed
    deployments: [{{model: openai/text-embedding-3-small, api_base: "{base}"}}]
  - name: echo-responses
    deployments: [{{model: openai/gpt-4.1, api_base: "{base}", native_responses: true}}]
  - name: claude
    deployments: [{{model: anthropic/claude-3-5-haiku-20241022, api_base: "{upstream.url}",
                   api_key: "env:FAKE_ANTHROPIC_KEY"}}]
router: {{retries: 0}}
""", env=GATEWAY_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def scanner(gw: GatewayProcess) -> str:
    return gw.create_key(name="scanner")["key"]


def _post(gw: GatewayProcess, key: str, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gw.url + PATHS[endpoint], json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}"})


def _readable(body: Any) -> str:
    """What a reader of the upstream request could see: its JSON, percent-decoded, with
    base64 `data:` payloads decoded."""
    text = json.dumps(body, ensure_ascii=False)
    decoded = [base64.b64decode(m).decode("utf-8", "replace") for m in _DATA_URL.findall(text)]
    return unquote("\n".join([text, *decoded]))


def _request(endpoint: str, value: str) -> dict[str, Any]:
    """The maximal body of `endpoint` with `value` in each text place, minus what no policy
    rewrites: signed thinking (Messages), whose signature covers it (stored views scan it:
    tests/protocols/test_messages_session.py)."""
    body = REQUESTS[endpoint](value)
    body.pop("previous_response_id", None)  # (a stored response of this key's: none here)
    if endpoint == "messages":
        body.pop("thinking", None)
        for message in body["messages"]:
            if isinstance(message["content"], list):
                message["content"] = [b for b in message["content"]
                                      if b.get("type") not in ("thinking", "redacted_thinking")]
    return body


def _text_fields(endpoint: str) -> int:
    """How many places of the maximal body carry the user's text."""
    mark = "mark-7f3a"
    texts = []

    def walk(node: Any) -> None:
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, str):
                texts.append(_readable(value))
            elif isinstance(value, dict | list):
                walk(value)

    walk(_request(endpoint, mark))
    return sum(t.count(mark) for t in texts)


CASES = [(name, value, kind, endpoint) for name, value, kind in BYPASSES
         for endpoint in REQUESTS]


@pytest.mark.parametrize(("value", "kind", "endpoint"), [c[1:] for c in CASES],
                         ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_a_bypass_form_in_every_text_field_is_redacted_upstream(
        gw: GatewayProcess, scanner: str, upstream: FakeUpstream, value: str, kind: str,
        endpoint: str) -> None:
    upstream.clear()
    r = _post(gw, scanner, endpoint, _request(endpoint, value))
    assert r.status_code == 200, r.text
    (sent,) = [q["body"] for q in upstream.requests if q["path"].startswith("/v1/")]
    seen = _readable(sent)
    assert value not in seen
    assert seen.count(f"[{kind.upper()}_1]") == _text_fields(endpoint)


def test_a_card_split_across_two_messages_is_redacted_or_blocked(
        gw: GatewayProcess, scanner: str, upstream: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "my card is 4111 1111"},
                {"role": "user", "content": "1111 1111, thanks"}]
    upstream.clear()
    r = _post(gw, scanner, "chat", {"model": "echo", "messages": messages})
    assert r.status_code == 200
    (sent,) = [q["body"] for q in upstream.requests if q["path"].startswith("/v1/")]
    assert [m["content"] for m in sent["messages"]] == ["my card is [CREDIT_CARD_1]",
                                                        ", thanks"]
    upstream.clear()
    blocker = gw.create_key(name="blocker")["key"]
    r = _post(gw, blocker, "chat", {"model": "echo", "messages": messages})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "pii_blocked")
    assert upstream.requests == []


@pytest.mark.parametrize(("endpoint", "body", "param"), [
    ("completions", {"model": "echo-text", "prompt": [19, 4111, 220]}, "prompt"),
    ("completions", {"model": "echo-text", "prompt": [[19, 4111], [220]]}, "prompt"),
    ("embeddings", {"model": "embed", "input": [19, 4111, 220]}, "input"),
])
def test_token_arrays_are_refused_where_the_policy_must_scan(
        gw: GatewayProcess, scanner: str, upstream: FakeUpstream, endpoint: str,
        body: dict[str, Any], param: str) -> None:
    upstream.clear()
    r = _post(gw, scanner, endpoint, body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["code"], error["type"]) == \
        (param, "invalid_value", "invalid_request_error")
    assert "token arrays" in error["message"]
    assert upstream.requests == []
