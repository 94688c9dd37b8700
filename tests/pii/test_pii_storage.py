"""Nothing raw is kept: under `audit.bodies: redacted` the audit row of every request, refused
or answered, holds no card, SSN, email or phone in clear (request body, response body, `user`,
an unknown `model`), whichever stage refused it and whatever the policy let through to the
provider; traces with `GATEWAY_TRACE_CONTENT=true` neither. Read back the way a compliance
team does: `GET /audit/events` with the admin key."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.audit.test_audit_telemetry import Receiver, attrs
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import REPO, GatewayProcess

CARD = "4111 1111 1111 1111"
SSN = "219-09-9999"
EMAIL = "bob.smith@example.com"
PHONE = "+44 20 7946 0958"
PROMPT = f"card {CARD}, ssn {SSN}, mail {EMAIL}, call {PHONE}"
RAW = (CARD, "4111111111111111", SSN, EMAIL, PHONE, "7946 0958")

POLICIES = {
    # Cards and SSNs are refused; everything else the provider may see.
    "default.yaml": """
name: default
pii:
  input: {credit_card: block, us_ssn: block}
audit: {bodies: redacted}
""",
    # Nothing is redacted for the provider: storage must still redact every kind.
    "open.yaml": """
name: open
applies_to: {keys: [open, limited, narrow]}
pii: {input: {}, output: {}}
audit: {bodies: redacted}
""",
    "nothing-kept.yaml": """
name: nothing-kept
applies_to: {keys: [none-kept]}
pii: {input: {}, output: {}}
audit: {bodies: none}
""",
}


def _config(upstream: FakeUpstream) -> str:
    return f"""
models:
  - name: echo
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream.url}/v1"}}]
  - name: other
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{upstream.url}/v1"}}]
  - name: echo-text
    deployments: [{{model: openai/gpt-3.5-turbo-instruct, api_base: "{upstream.url}/v1"}}]
router: {{retries: 0}}
audit: {{bodies: redacted}}
"""


def _start(root: Path, upstream: FakeUpstream, **env: str) -> GatewayProcess:
    (root / "policies").mkdir(exist_ok=True)
    for name, text in POLICIES.items():
        (root / "policies" / name).write_text(text)
    return GatewayProcess(root, _config(upstream), env=env).start()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
       ) -> Iterator[GatewayProcess]:
    proc = _start(tmp_path_factory.mktemp("pii-storage"), upstream)
    yield proc
    proc.stop()


def _post(gw: GatewayProcess, key: str, request_id: str, body: dict[str, Any],
          path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(gw.url + path, json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", "x-request-id": request_id})


def _event(gw: GatewayProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = gw.admin("GET", f"/audit/events?request_id={request_id}")
        assert r.status_code == 200, r.text
        if r.json()["data"]:
            (event,) = r.json()["data"]
            return event
        time.sleep(0.05)
    raise AssertionError(f"no audit event for {request_id}")


def _assert_clean(event: dict[str, Any]) -> None:
    stored = json.dumps(event, ensure_ascii=False)
    for raw in RAW:
        assert raw not in stored, (raw, stored)


def _body(event: dict[str, Any], name: str = "request_body") -> str:
    """A stored body as text (the API answers bodies as the JSON they were)."""
    return json.dumps(event[name], ensure_ascii=False)


def _chat(model: str = "echo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "user": EMAIL,
            "messages": [{"role": "user", "content": PROMPT}], **extra}


# (case id, key fields, body, expected status, expected code)
REFUSALS = [
    ("blocked", {"name": "plain"}, _chat(), 400, "pii_blocked"),
    ("unknown-model", {"name": "plain"}, _chat("no-such-model"), 404, "model_not_found"),
    ("model-is-pii", {"name": "plain"}, _chat(EMAIL), 404, "model_not_found"),
    ("not-allowed", {"name": "narrow", "models": ["other"]}, _chat(), 403, "model_not_allowed"),
    ("bad-value", {"name": "plain"}, _chat(temperature=7), 400, "invalid_value"),
    ("no-such-template", {"name": "plain"}, _chat(template={"name": EMAIL}), 400,
     "template_not_found"),
]


@pytest.mark.parametrize(("case", "key_fields", "body", "status", "code"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_a_refused_request_leaves_no_raw_pii_in_its_audit_row(
        gw: GatewayProcess, upstream: FakeUpstream, case: str, key_fields: dict[str, Any],
        body: dict[str, Any], status: int, code: str) -> None:
    key = gw.create_key(**key_fields)["key"]
    upstream.clear()
    r = _post(gw, key, f"refused-{case}", body)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    assert upstream.requests == []
    event = _event(gw, f"refused-{case}")
    assert event["status_code"] == status
    _assert_clean(event)
    if case != "bad-value":  # the body was read: it is kept, redacted
        assert "[CREDIT_CARD_1]" in _body(event)
        assert "[US_SSN_1]" in _body(event)
        assert "[EMAIL_1]" in _body(event)
        assert event["user"] == "[EMAIL_1]"
    if case == "model-is-pii":
        assert event["model_requested"] == "[EMAIL_1]"
    if case == "no-such-template":
        assert event["template_name"] == "[EMAIL_1]"


def test_a_rate_limited_request_leaves_no_raw_pii(gw: GatewayProcess) -> None:
    key = gw.create_key(name="limited", rpm=1)["key"]
    assert _post(gw, key, "limit-first", _chat()).status_code == 200
    r = _post(gw, key, "limit-second", _chat())
    assert r.status_code == 429
    for request_id in ("limit-first", "limit-second"):
        event = _event(gw, request_id)
        _assert_clean(event)
        assert "[PHONE_1]" in _body(event) and event["user"] == "[EMAIL_1]"


def test_an_unauthenticated_request_leaves_no_raw_pii(gw: GatewayProcess) -> None:
    r = _post(gw, "sk-gw-not-a-key", "unauthenticated", _chat())
    assert r.status_code == 401
    event = _event(gw, "unauthenticated")
    assert event["key_id"] is None
    _assert_clean(event)


def test_what_the_policy_lets_through_is_still_redacted_in_storage(
        gw: GatewayProcess, upstream: FakeUpstream) -> None:
    key = gw.create_key(name="open")["key"]
    upstream.clear()
    r = _post(gw, key, "open-chat", _chat())
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "fake: " + PROMPT
    assert EMAIL in json.dumps(upstream.requests)  # the policy let it through
    sdk = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    streamed = "".join(
        c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": PROMPT}], user=PHONE,
            stream=True, extra_headers={"x-request-id": "open-stream"}) if c.choices)
    assert streamed == "fake: " + PROMPT
    sdk.completions.create(model="echo-text", prompt=PROMPT, echo=True,
                           extra_headers={"x-request-id": "open-completion"})
    sdk.embeddings.create(model="echo", input=[PROMPT, EMAIL],
                          extra_headers={"x-request-id": "open-embedding"})
    for request_id in ("open-chat", "open-stream", "open-completion", "open-embedding"):
        event = _event(gw, request_id)
        _assert_clean(event)
        assert "[EMAIL_1]" in _body(event) and "[CREDIT_CARD_1]" in _body(event)
    chat = _event(gw, "open-chat")
    assert chat["response_body"]["choices"][0]["message"]["content"] == \
        "fake: card [CREDIT_CARD_1], ssn [US_SSN_1], mail [EMAIL_1], call [PHONE_1]"
    assert _event(gw, "open-stream")["response_body"] == \
        "fake: card [CREDIT_CARD_1], ssn [US_SSN_1], mail [EMAIL_1], call [PHONE_1]"
    assert _event(gw, "open-stream")["user"] == "[PHONE_1]"


def test_bodies_none_keeps_no_body_and_a_redacted_user(gw: GatewayProcess) -> None:
    key = gw.create_key(name="none-kept")["key"]
    assert _post(gw, key, "none-kept", _chat()).status_code == 200
    event = _event(gw, "none-kept")
    assert event["request_body"] is None and event["response_body"] is None
    assert event["user"] == "[EMAIL_1]"


def test_token_arrays_are_kept_only_as_their_length(gw: GatewayProcess) -> None:
    key = gw.create_key(name="open")["key"]
    r = _post(gw, key, "open-tokens", {"model": "echo-text", "prompt": [40, 41, 42]},
              path="/v1/completions")
    assert r.status_code == 200
    event = _event(gw, "open-tokens")
    assert event["request_body"]["prompt"] == "[3 tokens, not stored]"


def test_traced_content_is_redacted(tmp_path: Path, upstream: FakeUpstream) -> None:
    receiver = Receiver()
    proc = _start(tmp_path, upstream, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                  OTEL_BSP_SCHEDULE_DELAY="100", GATEWAY_TRACE_CONTENT="true")
    try:
        key = proc.create_key(name="open")["key"]
        assert _post(proc, key, "traced", _chat()).status_code == 200
        (span,) = receiver.wait(lambda s: attrs(s).get("gateway.request_id") == "traced")
        traced = json.dumps([str(v) for s in receiver.spans for v in attrs(s).values()],
                            ensure_ascii=False)
        assert "[EMAIL_1]" in attrs(span)["gen_ai.input.messages"]
        assert "[EMAIL_1]" in attrs(span)["gen_ai.output.messages"]
        for raw in RAW:
            assert raw not in traced
    finally:
        proc.stop()
        receiver.close()


def test_the_shipped_config_keeps_no_email_or_phone_in_clear(tmp_path: Path) -> None:
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    proc = GatewayProcess(tmp_path, (REPO / "gateway.yaml").read_text()).start()
    try:
        text = f"mail {EMAIL} or call {PHONE}"
        sdk = openai.OpenAI(base_url=proc.base_url, api_key=proc.admin_key, max_retries=0)
        reply = sdk.chat.completions.create(
            model="demo", user=EMAIL, messages=[{"role": "user", "content": text}],
            extra_headers={"x-request-id": "shipped"})
        assert EMAIL in (reply.choices[0].message.content or "")  # the demo echoes it
        event = _event(proc, "shipped")
        _assert_clean(event)
        assert "[EMAIL_1]" in _body(event, "response_body") and event["user"] == "[EMAIL_1]"
    finally:
        proc.stop()


def test_a_redaction_failure_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: the detectors fail while the audit event is finished."""
    from gateway.audit.bodies import BodyRecorder
    from gateway.pii import body_scan
    from tests.support.contexts import make_ctx

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("detector crashed")

    monkeypatch.setattr(body_scan, "detect", boom)
    ctx = make_ctx("chat", _chat("no-such-model"))
    ctx.event.fields = {"user": EMAIL, "model_requested": "no-such-model",
                        "template_name": EMAIL}
    with pytest.raises(Exception, match="detector"):
        BodyRecorder("redacted", ["echo"])(ctx)
    assert ctx.event.fields == {"user": None, "model_requested": None, "template_name": None}
