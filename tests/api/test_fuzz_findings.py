"""What fuzzing found (issue 22 and `make fuzz`), each pinned through the real HTTP surface.

Bodies whose values have the wrong type are 400s naming the field, never 500s; extreme but
valid times work on every route that takes one; an export that breaks after its first byte
can be told from a complete file; token-array prompts are counted.
"""

from __future__ import annotations

import csv
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.ui.test_ui_http import csrf_of, sign_in

HI = [{"role": "user", "content": "hi"}]
WEATHER = [{"type": "function", "function": {"name": "get_weather"}}]
CHAT, EMBED, COMPLETE = "/v1/chat/completions", "/v1/embeddings", "/v1/completions"

BAD_BODIES = [
    # (id, path, body, param)
    ("role-object", CHAT, {"model": "demo", "messages": [{"role": {}}]}, "messages[0].role"),
    ("role-array-stream", CHAT, {"model": "demo", "stream": True,
                                 "messages": [{"role": [], "content": "x"}]},
     "messages[0].role"),
    ("role-object-upstream", CHAT, {"model": "gpt-4o-mini",
                                    "messages": [{"role": {"a": 1}, "content": "x"}]},
     "messages[0].role"),
    ("tool-choice-name-object", CHAT, {"model": "demo", "messages": HI, "tools": WEATHER,
                                       "tool_choice": {"type": "function",
                                                       "function": {"name": {}}}},
     "tool_choice.function.name"),
    ("tool-choice-unknown-tool", CHAT, {"model": "demo", "messages": HI, "tools": WEATHER,
                                        "tool_choice": {"type": "function",
                                                        "function": {"name": "other"}}},
     "tool_choice.function.name"),
    ("tool-choice-without-tools", CHAT, {"model": "gpt-4o-mini", "messages": HI,
                                         "tool_choice": "required"}, "tool_choice"),
    ("tool-choice-shape", CHAT, {"model": "demo", "messages": HI, "tools": WEATHER,
                                 "tool_choice": {"type": "x"}}, "tool_choice"),
    ("tool-choice-array", CHAT, {"model": "demo", "messages": HI, "tool_choice": []},
     "tool_choice"),
    # litellm crashed on it: a 502, and the deployment put in cooldown for every client
    ("tool-type-object", CHAT, {"model": "claude-haiku", "messages": HI,
                                "tools": [{"type": {}, "function": {"name": "f"}}]},
     "tools[0].type"),
    ("tool-parameters-array", CHAT, {"model": "claude-haiku", "messages": HI, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": [None]}}]},
     "tools[0].function.parameters"),
    ("response-format-type-object", CHAT, {"model": "demo", "messages": HI,
                                           "response_format": {"type": {}}},
     "response_format"),
    ("encoding-format-array", EMBED, {"model": "demo-embed", "input": "x",
                                      "encoding_format": []}, "encoding_format"),
]


def _post(gateway: GatewayProcess, key: str, path: str, body: Any) -> tuple[httpx.Response, str]:
    rid = "finding-" + uuid.uuid4().hex[:12]
    r = httpx.post(gateway.url + path, json=body, timeout=30,
                   headers={"authorization": f"Bearer {key}", "x-request-id": rid})
    return r, rid


@pytest.mark.parametrize("case", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_wrong_typed_values_are_400s_naming_the_field(gateway: GatewayProcess, app_key: str,
                                                      case: tuple) -> None:
    _, path, body, param = case
    r, rid = _post(gateway, app_key, path, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["status_code"] == 400


def test_a_forced_tool_of_the_request_is_called_by_name(gateway: GatewayProcess,
                                                        app_key: str) -> None:
    tools = [*WEATHER, {"type": "function", "function": {"name": "lookup"}}]
    r, _ = _post(gateway, app_key, CHAT, {
        "model": "demo", "messages": HI, "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}}})
    assert r.status_code == 200, r.text
    (call,) = r.json()["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup"


@pytest.mark.parametrize(("prompt", "tokens"), [([5, 6, 7], 3), ([[1, 2], [3, 4, 5]], 5)],
                         ids=["token-array", "token-arrays"])
def test_token_array_prompts_count_their_tokens(gateway: GatewayProcess, app_key: str,
                                                prompt: list, tokens: int) -> None:
    r, _ = _post(gateway, app_key, COMPLETE, {"model": "demo", "prompt": prompt})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == tokens


# --- times --------------------------------------------------------------------------------

EXTREME_RANGES = [
    {"since": "0001-01-01T00:00:00Z"},
    {"until": "9999-12-31T23:59:59.999Z"},
    {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"},
    {"since": "1969-12-31T23:59:59.999Z", "until": "1970-01-01T00:00:00Z"},
    {"until": "0001-01-01T00:00:00Z"},
]
OUT_OF_RANGE = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


def _admin_get(gateway: GatewayProcess, path: str, params: dict[str, str]) -> httpx.Response:
    return httpx.get(gateway.url + path, params=params, timeout=30,
                     headers={"authorization": f"Bearer {gateway.admin_key}"})


@pytest.mark.parametrize("params", EXTREME_RANGES, ids=str)
def test_extreme_times_filter_events_spend_and_exports(gateway: GatewayProcess,
                                                       app_key: str, params: dict) -> None:
    _post(gateway, app_key, CHAT, {"model": "demo", "messages": HI})
    covers_now = params.get("until", "9999").startswith("9999")
    events = _admin_get(gateway, "/audit/events", {**params, "limit": "5"})
    assert events.status_code == 200, events.text
    assert bool(events.json()["data"]) == covers_now
    assert _admin_get(gateway, "/admin/spend", params).status_code == 200
    for fmt in ("jsonl", "csv"):
        with httpx.stream("GET", gateway.url + "/audit/export", timeout=30,
                          params={**params, "format": fmt, "limit": "3"},
                          headers={"authorization": f"Bearer {gateway.admin_key}"}) as r:
            assert r.status_code == 200
            body = r.read()  # raises if the body was cut
        assert b"export_incomplete" not in body


@pytest.mark.parametrize("value", OUT_OF_RANGE)
@pytest.mark.parametrize("route", ["/audit/events", "/audit/export", "/admin/spend"])
def test_times_past_the_calendar_are_400s_naming_the_parameter(gateway: GatewayProcess,
                                                               route: str, value: str) -> None:
    for name in ("since", "until"):
        r = _admin_get(gateway, route, {name: value})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == name


def test_key_expiry_past_the_calendar_is_a_400(gateway: GatewayProcess) -> None:
    r = gateway.admin("POST", "/admin/keys", {"name": "far", "expires_at": OUT_OF_RANGE[0]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "expires_at"
    far = gateway.create_key(name="far-ok", expires_at="9999-12-31T23:59:59.999Z")
    assert far["expires_at"] == "9999-12-31T23:59:59.999Z"


# --- an export that breaks after its first byte -------------------------------------------

@pytest.fixture(scope="module")
def broken_export(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
                  ) -> Iterator[GatewayProcess]:
    """A gateway whose audit log has 600 readable events, then (older) one whose time cannot
    be read: an export reads it on its second page, after the first rows were sent."""
    gw = GatewayProcess(tmp_path_factory.mktemp("broken-export"), standard_config(upstream.url),
                        env=GATEWAY_ENV)
    gw.start()
    try:
        key = gw.create_key(name="app")["key"]
        _, rid = _post(gw, key, CHAT, {"model": "demo", "messages": HI})
        (row,) = gw.wait_for_audit("request_id = :r", {"r": rid})
        base = int(row["id"][:12], 16)
        copies = [{**row, "id": f"{base - i:012x}{row['id'][12:]}", "request_id": f"copy-{i}"}
                  for i in range(1, 601)]
        copies.append({**copies[-1], "id": f"{base - 10_000:012x}{row['id'][12:]}",
                       "request_id": "unreadable", "received_at": "not a time"})
        with sqlite3.connect(gw.database_url.removeprefix("sqlite:///")) as db:
            cols = list(row)
            db.executemany(f"INSERT INTO audit_events ({', '.join(cols)}) VALUES "
                           f"({', '.join('?' for _ in cols)})",
                           [[c[k] for k in cols] for c in copies])
        yield gw
    finally:
        gw.stop()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_cut_after_its_first_byte_says_so_and_is_not_terminated(
        broken_export: GatewayProcess, fmt: str) -> None:
    received = b""
    with httpx.stream("GET", broken_export.url + "/audit/export", params={"format": fmt},
                      timeout=30,
                      headers={"authorization": f"Bearer {broken_export.admin_key}"}) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the chunked body never ends
            for chunk in r.iter_raw():
                received += chunk
    lines = received.decode().splitlines()
    assert len(lines) > 100  # the first rows did arrive
    last = lines[-1]
    if fmt == "csv":
        assert last.startswith("#error,")
        last = next(csv.reader([last]))[1]
    assert orjson.loads(last)["error"]["code"] == "export_incomplete"
    assert "Traceback" not in broken_export.log()


def test_an_export_that_fails_before_its_first_byte_is_an_error_answer(
        broken_export: GatewayProcess) -> None:
    r = _admin_get(broken_export, "/audit/export", {"request_id": "unreadable"})
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"


# --- UI forms -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin_ui(gateway: GatewayProcess) -> Iterator[tuple[httpx.Client, str]]:
    gateway.admin("POST", "/admin/templates", {
        "name": "finding-ui", "variables": {"items": {"type": "array", "required": False}},
        "messages": [{"role": "user", "content": "{{ items }}"}]})
    client, r = sign_in(gateway, gateway.admin_key)
    assert r.status_code == 303
    try:
        yield client, csrf_of(client.get("/ui/keys").text)
    finally:
        client.close()


UI_CASES = [
    ("deep-yaml", "POST", "/ui/templates/finding-ui/edit", {"source": "[" * 3000}),
    ("deep-json-variable", "POST", "/ui/templates/finding-ui/render",
     {"var_items": "[" * 3000}),
    ("huge-version-query", "GET", "/ui/templates/finding-ui?version=" + "9" * 5000, None),
    ("huge-version-form", "POST", "/ui/templates/finding-ui/render", {"version": "9" * 5000}),
    # the calendar's last day on the spend page (make fuzz at FUZZ_SCALE=10 found these)
    ("spend-last-day", "GET", "/ui/spend?until=9999-12-31", None),
    ("spend-first-day", "GET", "/ui/spend?since=0001-01-01&until=0001-01-01", None),
    # a YAML integer longer than int() converts
    ("huge-yaml-int-template", "POST", "/ui/templates/finding-ui/edit", {"source": "9" * 5000}),
    ("huge-yaml-int-new-template", "POST", "/ui/templates/new", {"source": "a: " + "9" * 5000}),
    ("huge-yaml-int-policy", "POST", "/ui/policies/new",
     {"name": "finding", "source": "name: finding\nx: " + "9" * 5000}),
]


@pytest.mark.parametrize("case", UI_CASES, ids=[c[0] for c in UI_CASES])
def test_ui_forms_refuse_hostile_input_with_a_page(admin_ui: tuple[httpx.Client, str],
                                                   case: tuple) -> None:
    client, csrf = admin_ui
    _, method, path, form = case
    r = client.request(method, path, data={**form, "csrf_token": csrf} if form else None)
    assert r.status_code < 500, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
