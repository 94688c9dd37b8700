"""`/admin/templates` through a real gateway: versions, labels, canary, rollback, diff, render,
roles, audit of changes, and sandbox-escape payloads sent as template sources."""

from __future__ import annotations

import math
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.gateway_proc import GatewayProcess


def unique(prefix: str = "tpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def template(name: str, text: str = "hello {{ who }}", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": f"{name} test", "model": "demo",
            "variables": {"who": {"type": "string", "default": "world"}},
            "messages": [{"role": "user", "content": text}], **extra}


def call(gw: GatewayProcess, method: str, path: str, body: Any = None, *,
         key: str | None = None, request_id: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key or gw.admin_key}"}
    if request_id:
        headers["x-request-id"] = request_id
    return httpx.request(method, gw.url + path, json=body, headers=headers, timeout=30)


def create(gw: GatewayProcess, name: str, text: str = "hello {{ who }}") -> dict[str, Any]:
    r = call(gw, "POST", "/admin/templates", template(name, text))
    assert r.status_code == 201, r.text
    return r.json()


def add_version(gw: GatewayProcess, name: str, text: str) -> dict[str, Any]:
    r = call(gw, "POST", f"/admin/templates/{name}/versions", template(name, text))
    assert r.status_code == 201, r.text
    return r.json()


def preview(gw: GatewayProcess, name: str, **body: Any) -> httpx.Response:
    return call(gw, "POST", f"/admin/templates/{name}/render", body)


def assert_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code, err
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param, err
    assert "Traceback" not in r.text and 'File "' not in r.text


def test_create_get_versions_and_list(gateway: GatewayProcess) -> None:
    name = unique()
    first = create(gateway, name, "v1 hello {{ who }}")
    assert first["name"] == name and first["version"] == 1
    assert first["author_key_id"] == "bootstrap" and first["source"] == "api"
    assert first["created_at"].endswith("Z")
    assert first["messages"] == [{"role": "user", "content": "v1 hello {{ who }}"}]
    assert first["variables"] == {"who": {"type": "string", "default": "world"}}
    second = add_version(gateway, name, "v2 hello {{ who }}")
    assert second["version"] == 2
    assert add_version(gateway, name, "v3 hello {{ who }}")["version"] == 3

    latest = call(gateway, "GET", f"/admin/templates/{name}").json()
    assert latest["version"] == 3 and latest["messages"][0]["content"].startswith("v3")
    old = call(gateway, "GET", f"/admin/templates/{name}?version=1").json()
    assert old == first  # immutable: the same version reads back unchanged
    listed = call(gateway, "GET", "/admin/templates").json()["data"]
    (mine,) = [t for t in listed if t["name"] == name]
    assert mine == {"name": name, "description": f"{name} test", "latest_version": 3,
                    "labels": {}}
    versions = call(gateway, "GET", f"/admin/templates/{name}/versions").json()["data"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert all(v["author_key_id"] == "bootstrap" and v["created_at"] for v in versions)

    # There is no way to change or delete a version: edits are new versions.
    for method in ("PUT", "PATCH", "DELETE"):
        r = call(gateway, method, f"/admin/templates/{name}", template(name, "x"))
        assert r.status_code == 405, (method, r.text)
    assert call(gateway, "GET", f"/admin/templates/{name}?version=1").json() == first


def test_concurrent_edits_each_get_their_own_version(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name)
    # Enough at once that retrying on the unique index alone would run out (it did in CI).
    with ThreadPoolExecutor(max_workers=32) as pool:
        made = list(pool.map(lambda i: add_version(gateway, name, f"edit {i}")["version"],
                             range(64)))
    assert sorted(made) == list(range(2, 66))
    r = call(gateway, "GET", f"/admin/templates/{name}/versions")
    assert [v["version"] for v in r.json()["data"]] == list(range(65, 0, -1))


def test_labels_rollback_and_render_preview(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name, "v1 to {{ who }}")
    add_version(gateway, name, "v2 to {{ who }}")
    add_version(gateway, name, "v3 to {{ who }}")

    def rendered(**body: Any) -> str:
        r = preview(gateway, name, variables={"who": "Ann"}, **body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out) >= {"model", "params", "messages"}
        assert out["model"] == "demo"
        return out["messages"][0]["content"]

    assert rendered() == "v3 to Ann"  # no label yet: the latest version
    r = call(gateway, "PUT", f"/admin/templates/{name}/labels/production", {"version": 2})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["canary"] is None
    assert r.json()["updated_by"] == "bootstrap"
    assert rendered() == "v2 to Ann"  # the production label is the default
    assert rendered(label="production") == "v2 to Ann"
    assert rendered(version=1) == "v1 to Ann"
    got = call(gateway, "GET", f"/admin/templates/{name}?label=production").json()
    assert got["version"] == 2 and got["labels"] == ["production"]

    call(gateway, "PUT", f"/admin/templates/{name}/labels/staging", {"version": 3})
    assert rendered(label="staging") == "v3 to Ann"
    listed = call(gateway, "GET", "/admin/templates").json()["data"]
    (mine,) = [t for t in listed if t["name"] == name]
    assert mine["labels"] == {"production": 2, "staging": 3}

    # Promote, then roll back by moving the label.
    call(gateway, "PUT", f"/admin/templates/{name}/labels/production", {"version": 3})
    assert rendered(label="production") == "v3 to Ann"
    call(gateway, "PUT", f"/admin/templates/{name}/labels/production", {"version": 1})
    assert rendered(label="production") == "v1 to Ann"
    labels = call(gateway, "GET", f"/admin/templates/{name}/labels").json()["data"]
    assert [(lab["label"], lab["version"]) for lab in labels] == [("production", 1),
                                                                   ("staging", 3)]
    assert call(gateway, "DELETE", f"/admin/templates/{name}/labels/staging").status_code == 204
    assert_error(preview(gateway, name, label="staging"), 400, "template_label_not_found",
                 "label")
    assert_error(call(gateway, "GET", f"/admin/templates/{name}?label=staging"), 404,
                 "template_label_not_found")


def test_diff_two_versions(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name, "first line\nsecond {{ who }}\n")
    add_version(gateway, name, "first line\nchanged {{ who }}\n")
    r = call(gateway, "GET", f"/admin/templates/{name}/diff?from=1&to=2")
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["name"], out["from"], out["to"]) == (name, 1, 2)
    diff = out["diff"]
    assert diff.startswith(f"--- {name}@1\n+++ {name}@2\n@@")
    assert "-    second {{ who }}\n" in diff and "+    changed {{ who }}\n" in diff
    assert "     first line\n" in diff
    assert call(gateway, "GET", f"/admin/templates/{name}/diff?from=2&to=2").json()["diff"] == ""
    assert_error(call(gateway, "GET", f"/admin/templates/{name}/diff?from=1&to=9"), 404,
                 "template_version_not_found")
    assert_error(call(gateway, "GET", f"/admin/templates/{name}/diff?from=1"), 400,
                 "missing_required_parameter", "to")
    assert_error(call(gateway, "GET", f"/admin/templates/{name}/diff?from=x&to=1"), 400,
                 "invalid_value", "from")


def test_canary_label_splits_users_and_sticks(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name, "stable")
    add_version(gateway, name, "canary")
    r = call(gateway, "PUT", f"/admin/templates/{name}/labels/production",
             {"version": 1, "canary": {"version": 2, "percent": 30}})
    assert r.status_code == 200, r.text
    assert r.json()["canary"] == {"version": 2, "percent": 30.0}
    listed = call(gateway, "GET", "/admin/templates").json()["data"]
    assert [t["labels"] for t in listed if t["name"] == name] == [{"production": 1}]

    users = [f"user-{i}" for i in range(600)]
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"authorization": f"Bearer {gateway.admin_key}"}) as http:
        def side(user: str) -> int:
            out = http.post(f"/admin/templates/{name}/render",
                            json={"label": "production", "user": user})
            assert out.status_code == 200, out.text
            return out.json()["version"]

        first = {u: side(u) for u in users}
        canary = sum(1 for v in first.values() if v == 2)
        sigma = math.sqrt(len(users) * 0.3 * 0.7)
        assert abs(canary - len(users) * 0.3) <= 5 * sigma, canary
        for u in users[:100]:  # sticky
            assert side(u) == first[u]
        # Ramp up: everyone already on the canary stays there.
        http.put(f"/admin/templates/{name}/labels/production",
                 json={"version": 1, "canary": {"version": 2, "percent": 60}})
        assert all(side(u) == 2 for u in users[:200] if first[u] == 2)
        # Promote: the canary version becomes the label's only version.
        http.put(f"/admin/templates/{name}/labels/production", json={"version": 2})
        assert {side(u) for u in users[:50]} == {2}


@pytest.mark.parametrize("body,param", [
    ({"version": 9}, "version"),
    ({"version": 1, "canary": {"version": 9, "percent": 10}}, "canary.version"),
])
def test_label_to_missing_version(gateway: GatewayProcess, body: dict, param: str) -> None:
    name = unique()
    create(gateway, name)
    r = call(gateway, "PUT", f"/admin/templates/{name}/labels/production", body)
    assert_error(r, 400, "template_version_not_found", param)


@pytest.mark.parametrize("body,param", [
    ({}, "version"),
    ({"version": "1"}, "version"),
    ({"version": 0}, "version"),
    ({"version": 1, "bogus": 1}, "bogus"),
    ({"version": 1, "canary": {"version": 1, "percent": 10}}, "canary.version"),
    ({"version": 1, "canary": {"version": 2, "percent": 0}}, "canary.percent"),
    ({"version": 1, "canary": {"version": 2, "percent": 100}}, "canary.percent"),
    ({"version": 1, "canary": {"version": 2}}, "canary.percent"),
])
def test_bad_label_bodies(gateway: GatewayProcess, body: dict, param: str) -> None:
    name = unique()
    create(gateway, name)
    add_version(gateway, name, "two")
    r = call(gateway, "PUT", f"/admin/templates/{name}/labels/production", body)
    assert_error(r, 400, "invalid_value", param)
    assert call(gateway, "GET", f"/admin/templates/{name}/labels").json()["data"] == []


def test_unknown_template_version_label(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name)
    assert_error(call(gateway, "GET", "/admin/templates/nope-x"), 404, "template_not_found")
    assert_error(call(gateway, "GET", f"/admin/templates/{name}?version=7"), 404,
                 "template_version_not_found")
    assert_error(call(gateway, "GET", f"/admin/templates/{name}?version=one"), 400,
                 "invalid_value", "version")
    assert_error(call(gateway, "POST", "/admin/templates/nope-x/versions", template("nope-x")),
                 404, "template_not_found")
    assert_error(call(gateway, "PUT", "/admin/templates/nope-x/labels/production",
                      {"version": 1}), 404, "template_not_found")
    assert_error(call(gateway, "GET", "/admin/templates/nope-x/versions"), 404,
                 "template_not_found")
    assert_error(preview(gateway, "nope-x"), 404, "template_not_found")
    assert_error(preview(gateway, name, version=4), 400, "template_version_not_found",
                 "version")
    assert_error(call(gateway, "POST", "/admin/templates", template(name)), 409,
                 "template_exists", "name")


@pytest.mark.parametrize("mutate,code,param", [
    (lambda t: t.pop("messages"), "template_invalid", "messages"),
    (lambda t: t.update(messages=[]), "template_invalid", "messages"),
    (lambda t: t.update(name="has space"), "template_invalid", "name"),
    (lambda t: t.update(bogus=True), "template_invalid", "bogus"),
    (lambda t: t.update(messages=[{"role": "bot", "content": "x"}]), "template_invalid",
     "messages[0].role"),
    (lambda t: t.update(model="no-such-model"), "invalid_value", "model"),
    (lambda t: t.update(params={"base_url": "http://x"}), "template_invalid", "params.base_url"),
    (lambda t: t.update(variables={"who": {"type": "integer", "default": "x"}}),
     "template_invalid", "variables.who.default"),
    (lambda t: t.update(messages=[{"role": "user", "content": "{{ nope }}"}]),
     "template_invalid", "messages[0].content"),
    (lambda t: t.update(messages=[{"role": "user", "content": "{% if %}"}]),
     "template_invalid", "messages[0].content"),
])
def test_bad_template_bodies(gateway: GatewayProcess, mutate: Any, code: str,
                             param: str) -> None:
    body = template(unique())
    mutate(body)
    assert_error(call(gateway, "POST", "/admin/templates", body), 400, code, param)


def test_add_version_name_must_match_path(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name)
    r = call(gateway, "POST", f"/admin/templates/{name}/versions", template("other-name"))
    assert_error(r, 400, "invalid_value", "name")
    body = template(name, "no name in the body")
    del body["name"]
    r = call(gateway, "POST", f"/admin/templates/{name}/versions", body)
    assert r.status_code == 201 and r.json()["name"] == name and r.json()["version"] == 2


SSTI_SOURCES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self.__dict__ }}",
    "{{ who.__class__.__base__.__subclasses__() }}",
    "{{ who|attr('__class__') }}",
    "{{ who|attr('__cla' ~ 'ss__') }}",
    "{{ who['__cla' ~ 'ss__'] }}",
    "{{ who.__len__() }}",
    "{{ '{0.__class__}'.format(who) }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**10 }}",
    "{{ 'x' * 10000 * 10000 }}",
    "{{ 2 ** 100000000 }}",
    "{% macro bomb() %}{{ bomb() }}{% endmacro %}{{ bomb() }}",
]


@pytest.mark.parametrize("source", SSTI_SOURCES)
def test_sandbox_escapes_in_a_source_are_400_at_create(gateway: GatewayProcess,
                                                      source: str) -> None:
    name = unique("ssti")
    r = call(gateway, "POST", "/admin/templates", template(name, source))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("template_unsafe", "template_render_limit")
    assert r.json()["error"]["param"] == "messages[0].content"
    # and as a new version of an existing template
    create(gateway, name)
    r = call(gateway, "POST", f"/admin/templates/{name}/versions", template(name, source))
    assert r.status_code == 400, r.text
    assert call(gateway, "GET", f"/admin/templates/{name}").json()["version"] == 1
    assert call(gateway, "GET", "/healthz").status_code == 200


@pytest.mark.parametrize("variables", [
    {"n": 10**9},
    {"n": 10**8, "s": "x"},
])
def test_value_driven_bombs_are_400_at_render(gateway: GatewayProcess,
                                              variables: dict) -> None:
    name = unique()
    body = {"name": name, "variables": {"n": {"type": "integer", "default": 1},
                                        "s": {"type": "string", "default": ""}},
            "messages": [{"role": "user", "content":
                          "{% for i in range(n) %}.{% endfor %}{{ s * n }}"}]}
    assert call(gateway, "POST", "/admin/templates", body).status_code == 201
    assert preview(gateway, name).json()["messages"][0]["content"] == "."
    assert_error(preview(gateway, name, variables=variables), 400, "template_render_limit")


@pytest.mark.parametrize("variables,code,param", [
    ({"who": 3}, "template_variable_invalid", "variables.who"),
    ({"whom": "x"}, "template_variable_unknown", "variables.whom"),
    ([], "invalid_value", "variables"),
])
def test_render_preview_variable_errors(gateway: GatewayProcess, variables: Any, code: str,
                                        param: str) -> None:
    name = unique()
    create(gateway, name)
    assert_error(preview(gateway, name, variables=variables), 400, code, param)


def test_reads_and_writes_need_an_admin_key(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, name)
    app = gateway.create_key(name="tpl-app")["key"]
    compliance = gateway.create_key(name="tpl-compliance", role="compliance")["key"]
    attempts = [("GET", "/admin/templates", None),
                ("GET", f"/admin/templates/{name}", None),
                ("GET", f"/admin/templates/{name}/versions", None),
                ("GET", f"/admin/templates/{name}/diff?from=1&to=1", None),
                ("POST", f"/admin/templates/{name}/render", {}),
                ("POST", "/admin/templates", template(unique())),
                ("POST", f"/admin/templates/{name}/versions", template(name, "x")),
                ("PUT", f"/admin/templates/{name}/labels/production", {"version": 1})]
    for key in (app, compliance):
        for method, path, body in attempts:
            assert_error(call(gateway, method, path, body, key=key), 403,
                         "endpoint_not_allowed")
    for method, path, body in attempts:
        r = call(gateway, method, path, body, key="sk-gw-wrong")
        assert r.status_code == 401, (method, path)
    assert call(gateway, "GET", f"/admin/templates/{name}/labels").json()["data"] == []
    assert call(gateway, "GET", f"/admin/templates/{name}").json()["version"] == 1


def test_changes_are_audited_reads_are_not(gateway: GatewayProcess) -> None:
    name = unique()
    admin = gateway.create_key(name="tpl-admin", role="admin")
    rid = uuid.uuid4().hex
    r = call(gateway, "POST", "/admin/templates", template(name), key=admin["key"],
             request_id=f"{rid}-create")
    assert r.status_code == 201 and r.json()["author_key_id"] == admin["id"]
    call(gateway, "POST", f"/admin/templates/{name}/versions", template(name, "v2"),
         request_id=f"{rid}-version")
    call(gateway, "PUT", f"/admin/templates/{name}/labels/production", {"version": 2},
         key=admin["key"], request_id=f"{rid}-label")
    call(gateway, "PUT", f"/admin/templates/{name}/labels/production", {"version": 99},
         request_id=f"{rid}-bad-label")
    call(gateway, "GET", f"/admin/templates/{name}", request_id=f"{rid}-read")
    call(gateway, "POST", f"/admin/templates/{name}/render", {}, request_id=f"{rid}-render")

    def event(suffix: str) -> dict[str, Any]:
        (row,) = gateway.wait_for_audit("request_id = :r", {"r": f"{rid}-{suffix}"})
        return row

    created = event("create")
    assert created["endpoint"] == "POST /admin/templates"
    assert (created["key_id"], created["status_code"]) == (admin["id"], 201)
    version = event("version")
    assert version["endpoint"] == "POST /admin/templates/{name}/versions"
    assert version["key_id"] == "bootstrap"
    label = event("label")
    assert label["endpoint"] == "PUT /admin/templates/{name}/labels/{label}"
    assert (label["key_id"], label["status_code"]) == (admin["id"], 200)
    bad = event("bad-label")
    assert (bad["status_code"], bad["error_code"]) == (400, "template_version_not_found")
    assert gateway.audit_rows("request_id IN (:a, :b)",
                              {"a": f"{rid}-read", "b": f"{rid}-render"}) == []
