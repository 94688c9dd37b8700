"""The `/ui` forms and filter pages under Hypothesis, signed in as an admin with a valid CSRF
token (so the handlers, not the guards, get the input): never a 5xx, never a hang, no stack
trace. The pages answer HTML; their errors are pages too (the JSON envelope is the API's).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.checks import TIMEOUT_S
from tests.fuzz.conftest import SEED_TEMPLATE, FuzzTarget, hypothesis_settings

FIELD = (st.text(max_size=30) | st.sampled_from([
    "", " ", "0", "-1", "1e999", "nan", "9" * 5000, "demo", "demo, demo-embed", "fz-seed",
    "fz-strict", "production", "2026-11-26", "9999-12-31", "0001-01-01",
    "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "[1, 2]", '{"a": 1}', "[" * 3000,
    "name: x\nmessages: [{role: user, content: hi}]", "{{ 7 * 7 }}", "on"]))
# Each form route and the fields its handler reads (all of them are fuzzed at once).
FORMS = {
    "/ui/keys": ["name", "team", "role", "expires_at", "rpm", "tpm", "max_concurrent",
                 "budget_usd", "budget_period", "models"],
    "/ui/keys/{key}": ["rpm", "tpm", "max_concurrent", "budget_usd", "budget_period",
                       "models"],
    "/ui/teams": ["name", "policy", "rpm", "tpm", "budget_usd", "models"],
    "/ui/teams/fz-strict": ["policy", "rpm", "budget_usd", "budget_period", "models"],
    "/ui/templates/new": ["source", "action"],
    "/ui/templates/fz-ui/edit": ["source", "action"],
    "/ui/templates/fz-ui/render": ["version", "var_topic", "var_count", "var_tier",
                                   "var_items"],
    "/ui/templates/fz-ui/labels": ["label", "version", "canary_version", "canary_percent"],
    "/ui/policies/dry-run": ["text", "policy"],
}
PAGES = {
    "/ui/audit": ["key_id", "team", "status_code", "stream", "pii_kind", "since", "until",
                  "limit", "cursor"],
    "/ui/spend": ["since", "until"],
    "/ui/policies": ["key_id"],
    "/ui/templates/fz-ui": ["version"],
    "/ui/audit/export": ["format", "since", "until", "status_code"],
}


@pytest.fixture(scope="module")
def ui(fuzz_target: FuzzTarget) -> Iterator[tuple[httpx.Client, str, str]]:
    """A signed-in admin browser: the client, its CSRF token, and a key id to edit."""
    gw = fuzz_target.gateway
    key_id = gw.create_key(name="fz-ui-target")["id"]
    # its own template: edits fuzzed here must not change the one the /v1 tests render
    assert gw.admin("POST", "/admin/templates", {**SEED_TEMPLATE, "name": "fz-ui"}
                    ).status_code == 201
    with httpx.Client(base_url=gw.url, timeout=TIMEOUT_S) as client:
        form = client.get("/ui/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        r = client.post("/ui/login", data={"csrf_token": token[1], "key": gw.admin_key})
        assert r.status_code == 303, r.text
        page = client.get("/ui/keys")
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        yield client, csrf[1], key_id


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, f"{r.status_code} on {r.url}: {r.text[:300]}"
    assert "Traceback" not in r.text


@pytest.mark.parametrize("route", sorted(FORMS))
@given(data=st.data())
@hypothesis_settings(25)
def test_forms_answer_every_input_without_a_server_error(
        route: str, data: st.DataObject, ui: tuple[httpx.Client, str, str]) -> None:
    client, csrf, key_id = ui
    fields = {name: data.draw(FIELD, label=name) for name in FORMS[route]
              if data.draw(st.booleans())}
    r = client.post(route.replace("{key}", key_id), data={**fields, "csrf_token": csrf})
    _check(r)


@pytest.mark.parametrize("route", sorted(PAGES))
@given(data=st.data())
@hypothesis_settings(25)
def test_filter_pages_answer_every_query_without_a_server_error(
        route: str, data: st.DataObject, ui: tuple[httpx.Client, str, str]) -> None:
    client, _, _ = ui
    params = {name: data.draw(FIELD, label=name) for name in PAGES[route]
              if data.draw(st.booleans())}
    _check(client.get(route, params=params))
