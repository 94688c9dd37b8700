"""Property tests of the `/v1` model endpoints over real HTTP (Hypothesis, fixed seed).

- A valid body (strategies.BODIES) is served: 200 with the endpoint's shape, or the one 400
  a valid-looking body may get (a forced tool the request does not define).
- A valid body with one field anywhere replaced by any JSON value gets a 200 or a 4xx in the
  OpenAI envelope: never a 5xx, never a hang (checks.check_answer).
Every request carries an id; the session checks that each left exactly one audit event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.checks import TIMEOUT_S, check_answer
from tests.fuzz.conftest import FuzzTarget, hypothesis_settings
from tests.fuzz.strategies import BODIES, edited

PATHS = sorted(BODIES)


@pytest.fixture(scope="module")
def http(fuzz_target: FuzzTarget) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_target.gateway.url, timeout=TIMEOUT_S,
                      headers={"authorization": f"Bearer {fuzz_target.app_key}"}) as client:
        yield client


def _post(http: httpx.Client, target: FuzzTarget, path: str, body: Any) -> httpx.Response:
    # json.dumps, not orjson: integers beyond 64 bits must reach the server as sent
    r = http.post(path, content=json.dumps(body), headers={
        "content-type": "application/json", "x-request-id": target.request_id()})
    check_answer(path, r.status_code, r.headers, r.content)
    return r


def _forces_a_missing_tool(path: str, body: dict[str, Any]) -> bool:
    if path == "/v1/messages":
        return False  # its strategy's tool choices (auto, none) never force a tool
    choice = body.get("tool_choice")
    # Chat nests a tool's name under `function`, Responses does not
    names = {t["function"]["name"] if "function" in t else t["name"]
             for t in body.get("tools") or ()}
    if choice == "required":
        return not names
    return isinstance(choice, dict) and (choice["function"]["name"] if "function" in choice
                                         else choice["name"]) not in names


def _token_arrays(path: str, body: dict[str, Any]) -> str | None:
    """The field given as token arrays: refused (400) where the policy scans input for PII."""
    field = {"/v1/completions": "prompt", "/v1/embeddings": "input"}.get(path)
    value = body.get(field) if field else None
    if isinstance(value, list) and value and all(
            isinstance(v, int) or (isinstance(v, list) and all(isinstance(t, int) for t in v))
            for v in value):
        return field
    return None


def _check_served(path: str, body: dict[str, Any], answer: dict[str, Any]) -> None:
    if path == "/v1/messages":
        assert answer["type"] == "message" and answer["usage"]["input_tokens"] >= 0, answer
        return
    if path == "/v1/embeddings":
        assert answer["object"] == "list" and answer["data"], answer
        return
    if path == "/v1/responses":
        assert answer["object"] == "response" and answer["id"].startswith("resp_"), answer
        assert answer["status"] in ("completed", "incomplete") and answer["usage"], answer
        return
    choices = answer["choices"]
    assert choices and answer["usage"]["prompt_tokens"] >= 0, answer
    for choice in choices:
        for call in (choice.get("message") or {}).get("tool_calls") or ():
            assert isinstance(call["function"]["name"], str), call


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@hypothesis_settings(60)
def test_valid_bodies_are_served(path: str, data: st.DataObject, fuzz_target: FuzzTarget,
                                 http: httpx.Client) -> None:
    body = data.draw(BODIES[path], label="body")
    r = _post(http, fuzz_target, path, body)
    if _forces_a_missing_tool(path, body):
        assert r.status_code == 400, r.text
        assert (r.json()["error"]["param"] or "").startswith("tool_choice"), r.text
        return
    tokens = _token_arrays(path, body)
    if tokens is not None:  # the fuzz gateway's default policy has input PII rules
        assert r.status_code == 400 and r.json()["error"]["param"] == tokens, r.text
        return
    assert r.status_code == 200, r.text
    if not body.get("stream"):
        _check_served(path, body, r.json())


@pytest.mark.parametrize("path", PATHS)
@given(data=st.data())
@hypothesis_settings(150)
def test_edited_bodies_get_an_answer_or_a_clear_error(path: str, data: st.DataObject,
                                                      fuzz_target: FuzzTarget,
                                                      http: httpx.Client) -> None:
    body = data.draw(edited(BODIES[path]), label="body")
    r = _post(http, fuzz_target, path, body)
    assert r.status_code in (200, 400, 404, 413), r.text
