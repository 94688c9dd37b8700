"""Bad input: the exact OpenAI-shaped error and status of DESIGN.md, and one audit event each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest

from tests.support.gateway_proc import GatewayProcess

CHAT = "/v1/chat/completions"
OK_BODY = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def _post(gateway: GatewayProcess, key: str | None, *, json: Any = None,
          content: bytes | None = None, path: str = CHAT,
          headers: dict[str, str] | None = None) -> tuple[httpx.Response, str]:
    rid = "bad-" + uuid.uuid4().hex[:12]
    h = {"x-request-id": rid, "content-type": "application/json", **(headers or {})}
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    r = httpx.post(gateway.url + path, json=json, content=content, headers=h, timeout=30)
    return r, rid


def _assert_error(r: httpx.Response, status: int, code: str | None, type_: str | None = None
                  ) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    if type_:
        assert body["error"]["type"] == type_
    assert "Traceback" not in r.text
    return body["error"]


def _one_event(gateway: GatewayProcess, rid: str, status: int, code: str | None
               ) -> dict[str, Any]:
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["status_code"] == status and event["error_code"] == code
    return event


CASES = [
    # (id, body/content, status, code, param)
    ("malformed-json", b'{"model": "demo", "messages": [', 400, "invalid_json", None),
    ("not-an-object", b'[1, 2, 3]', 400, "invalid_json", None),
    ("empty-body", b"", 400, "invalid_json", None),
    ("missing-model", {"messages": [{"role": "user", "content": "x"}]}, 400,
     "missing_required_parameter", "model"),
    ("missing-messages", {"model": "demo"}, 400, "missing_required_parameter", "messages"),
    ("model-wrong-type", {"model": 5, "messages": [{"role": "user", "content": "x"}]}, 400,
     "invalid_value", "model"),
    ("messages-wrong-type", {"model": "demo", "messages": "hi"}, 400, "invalid_value",
     "messages"),
    ("bad-role", {"model": "demo", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "invalid_value", "messages[0].role"),
    ("temperature-string", {**OK_BODY, "temperature": "hot"}, 400, "invalid_value",
     "temperature"),
    ("n-too-large", {**OK_BODY, "n": 99}, 400, "invalid_value", "n"),
    ("max-tokens-negative", {**OK_BODY, "max_tokens": -5}, 400, "invalid_value", "max_tokens"),
    ("stream-not-bool", {**OK_BODY, "stream": "yes"}, 400, "invalid_value", "stream"),
    ("api-base-top", {**OK_BODY, "api_base": "http://evil.example"}, 400,
     "forbidden_parameter", "api_base"),
    ("base-url-nested", {**OK_BODY, "extra_body": {"x": {"base_url": "http://evil"}}}, 400,
     "forbidden_parameter", "extra_body.x.base_url"),
    ("api-key-in-list", {**OK_BODY, "extra": [{"api_key": "sk-x"}]}, 400,
     "forbidden_parameter", "extra[0].api_key"),
    ("too-deep", {**OK_BODY, "deep": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {
        "a": {"a": {"a": {"a": {"a": {"a": {"a": 1}}}}}}}}}}}}}}}}}, 400, "invalid_json", None),
    ("unknown-model", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404,
     "model_not_found", "model"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_body(gateway: GatewayProcess, app_key: str, case: tuple) -> None:
    _, payload, status, code, param = case
    kwargs = {"content": payload} if isinstance(payload, bytes) else {"json": payload}
    r, rid = _post(gateway, app_key, **kwargs)
    err = _assert_error(r, status, code)
    assert err["param"] == param
    assert r.headers["x-request-id"] == rid
    event = _one_event(gateway, rid, status, code)
    assert event["key_id"] is not None  # authenticated before the body was read


def test_missing_key(gateway: GatewayProcess) -> None:
    r, rid = _post(gateway, None, json=OK_BODY)
    _assert_error(r, 401, "invalid_api_key", "authentication_error")
    event = _one_event(gateway, rid, 401, "invalid_api_key")
    assert event["key_id"] is None


def test_invalid_key(gateway: GatewayProcess) -> None:
    r, rid = _post(gateway, "sk-gw-not-a-real-key", json=OK_BODY)
    err = _assert_error(r, 401, "invalid_api_key")
    assert "sk-gw-not-a-real-key" not in err["message"]
    assert _one_event(gateway, rid, 401, "invalid_api_key")["key_id"] is None


def test_revoked_key_is_refused_at_once(gateway: GatewayProcess) -> None:
    created = gateway.create_key(name="to-revoke")
    r, _ = _post(gateway, created["key"], json=OK_BODY)
    assert r.status_code == 200
    assert gateway.admin("DELETE", f"/admin/keys/{created['id']}").status_code == 200
    r, rid = _post(gateway, created["key"], json=OK_BODY)
    err = _assert_error(r, 401, "invalid_api_key")
    assert "revoked" in err["message"]
    assert _one_event(gateway, rid, 401, "invalid_api_key")["key_id"] == created["id"]


def test_expired_key(gateway: GatewayProcess) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    created = gateway.create_key(name="expiring", expires_at=soon)
    import time

    time.sleep(1.2)
    r, rid = _post(gateway, created["key"], json=OK_BODY)
    assert "expired" in _assert_error(r, 401, "invalid_api_key")["message"]
    _one_event(gateway, rid, 401, "invalid_api_key")


def test_disallowed_model_is_403(gateway: GatewayProcess) -> None:
    key = gateway.create_key(name="only-demo", models=["demo"])["key"]
    r, _ = _post(gateway, key, json=OK_BODY)
    assert r.status_code == 200
    r, rid = _post(gateway, key, json={**OK_BODY, "model": "gpt-4o-mini"})
    _assert_error(r, 403, "model_not_allowed", "permission_error")
    _one_event(gateway, rid, 403, "model_not_allowed")
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["demo"]


def test_team_models_restrict_key(gateway: GatewayProcess) -> None:
    gateway.create_team(name="team-embed-only", models=["demo-embed"])
    key = gateway.create_key(name="in-team", team="team-embed-only")["key"]
    r, _ = _post(gateway, key, json=OK_BODY)
    _assert_error(r, 403, "model_not_allowed")
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    assert [m.id for m in sdk.models.list()] == ["demo-embed"]


def test_compliance_key_may_not_call_models(gateway: GatewayProcess) -> None:
    key = gateway.create_key(name="auditor", role="compliance")["key"]
    r, rid = _post(gateway, key, json=OK_BODY)
    _assert_error(r, 403, "endpoint_not_allowed")
    _one_event(gateway, rid, 403, "endpoint_not_allowed")


def test_body_over_limit_is_413(gateway: GatewayProcess, app_key: str) -> None:
    big = {**OK_BODY, "messages": [{"role": "user", "content": "x" * 70_000}]}
    r, rid = _post(gateway, app_key, json=big)
    _assert_error(r, 413, "request_too_large")
    _one_event(gateway, rid, 413, "request_too_large")


def test_chunked_body_over_limit_is_413(gateway: GatewayProcess, app_key: str) -> None:
    def gen():
        for _ in range(20):
            yield b"x" * 8192

    rid = "bad-chunked-413"
    r = httpx.post(gateway.url + CHAT, content=gen(), timeout=30,
                   headers={"authorization": f"Bearer {app_key}", "x-request-id": rid})
    _assert_error(r, 413, "request_too_large")
    _one_event(gateway, rid, 413, "request_too_large")


@pytest.mark.parametrize("header", ["x-api-base", "api-key", "X-Base-URL", "x-portkey-custom-host"])
def test_routing_headers_refused(gateway: GatewayProcess, app_key: str, header: str) -> None:
    r, rid = _post(gateway, app_key, json=OK_BODY, headers={header: "http://evil.example"})
    _assert_error(r, 400, "forbidden_parameter")
    _one_event(gateway, rid, 400, "forbidden_parameter")


def test_sdk_raises_typed_errors(gateway: GatewayProcess, app_key: str) -> None:
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="demo", messages=[])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}],
                                    extra_body={"api_base": "http://evil"})
    bad = openai.OpenAI(base_url=gateway.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_embeddings_and_completions_validate(gateway: GatewayProcess, app_key: str) -> None:
    r, rid = _post(gateway, app_key, json={"model": "demo-embed"}, path="/v1/embeddings")
    _assert_error(r, 400, "missing_required_parameter")
    _one_event(gateway, rid, 400, "missing_required_parameter")
    r, _ = _post(gateway, app_key, json={"model": "demo-embed", "input": [1.5]},
                 path="/v1/embeddings")
    _assert_error(r, 400, "invalid_value")
    r, _ = _post(gateway, app_key, json={"model": "demo", "prompt": {"x": 1}},
                 path="/v1/completions")
    _assert_error(r, 400, "invalid_value")


def test_unknown_v1_path_and_method(gateway: GatewayProcess, app_key: str) -> None:
    r, rid = _post(gateway, app_key, json=OK_BODY, path="/v1/nope")
    _assert_error(r, 404, "not_found")
    _one_event(gateway, rid, 404, "not_found")
    r = httpx.get(gateway.url + CHAT, headers={"authorization": f"Bearer {app_key}"})
    _assert_error(r, 405, "method_not_allowed")
    r = httpx.post(gateway.url + CHAT + "/", json=OK_BODY,
                   headers={"authorization": f"Bearer {app_key}"})
    assert r.status_code == 404  # paths are exact: no trailing-slash redirect


def test_request_id_kept_or_replaced(gateway: GatewayProcess, app_key: str) -> None:
    h = {"authorization": f"Bearer {app_key}"}
    r = httpx.post(gateway.url + CHAT, json=OK_BODY, headers={**h, "x-request-id": "abc:1.2_3-4"})
    assert r.headers["x-request-id"] == "abc:1.2_3-4"
    r = httpx.post(gateway.url + CHAT, json=OK_BODY, headers={**h, "x-request-id": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!" and len(r.headers["x-request-id"]) == 32
    assert "server" not in r.headers
    assert httpx.get(gateway.url + "/healthz").headers.get("x-request-id")
