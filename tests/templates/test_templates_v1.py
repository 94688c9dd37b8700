"""Templates from the official `openai` SDK (`extra_body={"template": …}`), streaming included:
what reaches the provider, errors, sandbox payloads in variables, and the audit event."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess


def unique(prefix: str = "v1tpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def create(gw: GatewayProcess, body: dict[str, Any]) -> None:
    r = gw.admin("POST", "/admin/templates", body)
    assert r.status_code == 201, r.text


def greeting(name: str, model: str = "demo", **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "params": {"temperature": 0.3, "max_tokens": 50},
            "variables": {"who": {"type": "string", "required": True, "max_length": 40},
                          "tone": {"type": "string", "enum": ["warm", "dry"],
                                   "default": "warm"}},
            "messages": [{"role": "system", "content": "You are {{ tone }}."},
                         {"role": "user", "content": "Greet {{ who }}."}], **extra}


def seen_by(upstream: FakeUpstream, marker: str) -> dict[str, Any]:
    found = [q["body"] for q in upstream.requests
             if q["path"].endswith("/completions") and marker in str(q["body"])]
    assert len(found) == 1, found
    return found[0]


def test_chat_with_template_and_own_messages(client: openai.OpenAI, gateway: GatewayProcess,
                                             upstream: FakeUpstream) -> None:
    name = unique()
    create(gateway, greeting(name, model="gpt-4o-mini"))
    marker = uuid.uuid4().hex
    reply = client.chat.completions.create(
        model=None, messages=[{"role": "user", "content": f"and also {marker}"}],  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "variables": {"who": "Ada", "tone": "dry"}}})
    assert reply.model == "gpt-4o-mini"
    assert reply.choices[0].message.content == f"fake: and also {marker}"
    body = seen_by(upstream, marker)
    assert body["messages"] == [{"role": "system", "content": "You are dry."},
                                {"role": "user", "content": "Greet Ada."},
                                {"role": "user", "content": f"and also {marker}"}]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert "template" not in body and body["model"] == "gpt-4o-mini"


def test_request_model_and_params_win_over_the_template(client: openai.OpenAI,
                                                        gateway: GatewayProcess,
                                                        upstream: FakeUpstream) -> None:
    name = unique()
    create(gateway, greeting(name, model="demo"))
    marker = uuid.uuid4().hex
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": marker}], max_tokens=7,
        extra_body={"template": {"name": name, "variables": {"who": "Bo"}}})
    body = seen_by(upstream, marker)
    assert body["max_tokens"] == 7 and body["temperature"] == 0.3
    assert body["messages"][0] == {"role": "system", "content": "You are warm."}


def test_template_params_apply_on_the_demo_model(client: openai.OpenAI,
                                                 gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, greeting(name, params={"max_tokens": 3}))
    out = client.chat.completions.create(
        model=None, messages=[],  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "variables": {"who": "Cy"}}})
    assert out.model == "demo"
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 3


def test_streaming_with_a_label(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, greeting(name))
    v2 = greeting(name)
    v2["messages"] = [{"role": "user", "content": "Version two greets {{ who }}."}]
    assert gateway.admin("POST", f"/admin/templates/{name}/versions", v2).status_code == 201
    gateway.admin("PUT", f"/admin/templates/{name}/labels/production", {"version": 2})
    gateway.admin("PUT", f"/admin/templates/{name}/labels/old", {"version": 1})

    def streamed(**template: Any) -> str:
        chunks = list(client.chat.completions.create(
            model=None, messages=[], stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
            extra_body={"template": {"name": name, "variables": {"who": "Di"}, **template}}))
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert streamed(label="production").endswith("You said: Version two greets Di.")
    assert streamed(label="old").endswith("You said: Greet Di.")
    assert streamed(version=2).endswith("You said: Version two greets Di.")
    assert streamed().endswith("You said: Version two greets Di.")  # production by default
    plain = client.chat.completions.create(
        model=None, messages=[],  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "label": "old", "variables": {"who": "Di"}}})
    assert plain.choices[0].message.content.endswith("You said: Greet Di.")


async def test_async_client_streams_too(aclient: openai.AsyncOpenAI,
                                        gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, greeting(name))
    stream = await aclient.chat.completions.create(
        model="demo", messages=[], stream=True,
        extra_body={"template": {"name": name, "variables": {"who": "Ed"}}})
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text.endswith("You said: Greet Ed.")


def test_completions_with_a_template(client: openai.OpenAI, gateway: GatewayProcess,
                                     upstream: FakeUpstream) -> None:
    name = unique()
    create(gateway, greeting(name, model="gpt-3.5-turbo-instruct"))
    marker = uuid.uuid4().hex
    out = client.completions.create(
        model=None, prompt=f"Answer: {marker}",  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "variables": {"who": "Fay"}}})
    assert out.model == "gpt-3.5-turbo-instruct"
    body = seen_by(upstream, marker)
    assert body["prompt"] == f"You are warm.\n\nGreet Fay.\n\nAnswer: {marker}"
    assert body["max_tokens"] == 50 and "template" not in body
    streamed = client.completions.create(
        model="demo", prompt=None, stream=True,  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "variables": {"who": "Fay"}}})
    text = "".join(c.choices[0].text for c in streamed if c.choices)
    assert text.endswith("You said: You are warm.\n\nGreet Fay.")


@pytest.mark.parametrize("template,status,code,param", [
    ({"name": "no-such-template"}, 400, "template_not_found", "template.name"),
    ({"variables": {"who": "x"}, "version": 9}, 400, "template_version_not_found",
     "template.version"),
    ({"variables": {"who": "x"}, "label": "nope"}, 400, "template_label_not_found",
     "template.label"),
    ({}, 400, "template_variable_missing", "template.variables.who"),
    ({"variables": {"who": None}}, 400, "template_variable_missing", "template.variables.who"),
    ({"variables": {"who": "x", "extra": 1}}, 400, "template_variable_unknown",
     "template.variables.extra"),
    ({"variables": {"who": 12}}, 400, "template_variable_invalid", "template.variables.who"),
    ({"variables": {"who": "x" * 41}}, 400, "template_variable_invalid",
     "template.variables.who"),
    ({"variables": {"who": "x", "tone": "rude"}}, 400, "template_variable_invalid",
     "template.variables.tone"),
    ({"variables": ["x"]}, 400, "template_variable_invalid", "template.variables"),
    ({"variables": {"who": "x"}, "version": "1"}, 400, "invalid_value", "template.version"),
    ({"variables": {"who": "x"}, "version": 1, "label": "production"}, 400, "invalid_value",
     "template.label"),
    ({"variables": {"who": "x"}, "bogus": 1}, 400, "invalid_value", "template.bogus"),
])
def test_template_errors_are_400_naming_the_problem_and_audited(
        client: openai.OpenAI, gateway: GatewayProcess, template: dict[str, Any], status: int,
        code: str, param: str) -> None:
    name = unique()
    create(gateway, greeting(name))
    rid = uuid.uuid4().hex
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model=None, messages=[],  # type: ignore[arg-type]
            extra_body={"template": {"name": name, **template}},
            extra_headers={"x-request-id": rid})
    assert err.value.status_code == status
    body = err.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
    assert (body["code"], body["param"]) == (code, param), body
    assert "Traceback" not in body["message"]
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert (event["status_code"], event["error_code"]) == (status, code)
    assert event["template_name"] == template.get("name", name)


def test_template_without_model_anywhere(client: openai.OpenAI,
                                         gateway: GatewayProcess) -> None:
    name = unique()
    body = greeting(name)
    del body["model"]
    create(gateway, body)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=None, messages=[],  # type: ignore[arg-type]
            extra_body={"template": {"name": name, "variables": {"who": "x"}}})
    assert err.value.body["code"] == "missing_required_parameter"
    ok = client.chat.completions.create(
        model="demo", messages=[],
        extra_body={"template": {"name": name, "variables": {"who": "x"}}})
    assert ok.choices[0].message.content.endswith("Greet x.")


def test_template_model_still_needs_the_keys_permission(gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, greeting(name, model="gpt-4o-mini"))
    key = gateway.create_key(name="tpl-demo-only", models=["demo"])["key"]
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        sdk.chat.completions.create(model=None, messages=[],  # type: ignore[arg-type]
                                    extra_body={"template": {"name": name,
                                                             "variables": {"who": "x"}}})
    assert err.value.body["code"] == "model_not_allowed"


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'a' * 10**9 }}",
    "{% include '/etc/passwd' %}",
])
def test_variables_are_data_never_templates(client: openai.OpenAI, gateway: GatewayProcess,
                                            payload: str) -> None:
    name = unique()
    body = greeting(name)
    body["variables"]["who"]["max_length"] = 200
    create(gateway, body)
    for stream in (False, True):
        result = client.chat.completions.create(
            model=None, messages=[], stream=stream,  # type: ignore[arg-type]
            extra_body={"template": {"name": name, "variables": {"who": payload}}})
        text = ("".join(c.choices[0].delta.content or "" for c in result if c.choices)
                if stream else result.choices[0].message.content)
        assert text.endswith(f"You said: Greet {payload}.")


@pytest.mark.parametrize("variables", [{"n": 10**9}, {"n": 10**7, "s": "abc"}])
def test_value_driven_bombs_are_400_from_v1(client: openai.OpenAI, gateway: GatewayProcess,
                                            variables: dict) -> None:
    name = unique()
    create(gateway, {"name": name, "model": "demo",
                     "variables": {"n": {"type": "integer", "default": 1},
                                   "s": {"type": "string", "default": ""}},
                     "messages": [{"role": "user", "content":
                                   "{{ s * n }}{% for i in range(n) %}.{% endfor %}"}]})
    rid = uuid.uuid4().hex
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model=None, messages=[], stream=stream,  # type: ignore[arg-type]
                extra_body={"template": {"name": name, "variables": variables}},
                extra_headers={"x-request-id": f"{rid}-{stream}"})
        assert err.value.body["code"] == "template_render_limit"
        assert err.value.body["param"] == "template"
        (event,) = gateway.wait_for_audit("request_id = :r", {"r": f"{rid}-{stream}"})
        assert event["error_code"] == "template_render_limit"


def test_audit_event_carries_template_name_and_version(client: openai.OpenAI,
                                                       gateway: GatewayProcess) -> None:
    name = unique()
    create(gateway, greeting(name))
    v2 = greeting(name)
    v2["messages"][1]["content"] = "Hi {{ who }}!"
    gateway.admin("POST", f"/admin/templates/{name}/versions", v2)
    gateway.admin("PUT", f"/admin/templates/{name}/labels/production", {"version": 1})
    rid = uuid.uuid4().hex
    client.chat.completions.create(
        model=None, messages=[],  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "label": "production",
                                 "variables": {"who": "Gil"}}},
        extra_headers={"x-request-id": f"{rid}-a"}, user="end-user-1")
    list(client.chat.completions.create(
        model=None, messages=[], stream=True,  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "version": 2, "variables": {"who": "Gil"}}},
        extra_headers={"x-request-id": f"{rid}-b"}))
    client.completions.create(
        model=None, prompt=None,  # type: ignore[arg-type]
        extra_body={"template": {"name": name, "variables": {"who": "Gil"}}},
        extra_headers={"x-request-id": f"{rid}-c"})
    rows = {r["request_id"]: r for r in gateway.wait_for_audit(
        "request_id LIKE :r", {"r": f"{rid}-%"}, count=3)}
    a, b, c = rows[f"{rid}-a"], rows[f"{rid}-b"], rows[f"{rid}-c"]
    assert (a["template_name"], a["template_version"], a["status_code"]) == (name, 1, 200)
    assert a["model_requested"] == "demo" and a["user"] == "end-user-1"
    assert (b["template_name"], b["template_version"], b["stream"]) == (name, 2, True)
    assert (c["template_name"], c["template_version"], c["endpoint"]) == (
        name, 1, "/v1/completions")
    assert a["input_tokens"] > 0


def test_canary_through_v1_is_sticky_per_user(gateway: GatewayProcess, app_key: str) -> None:
    name = unique()
    create(gateway, {"name": name, "model": "demo",
                     "messages": [{"role": "user", "content": "stable"}]})
    gateway.admin("POST", f"/admin/templates/{name}/versions",
                  {"name": name, "model": "demo",
                   "messages": [{"role": "user", "content": "canary"}]})
    gateway.admin("PUT", f"/admin/templates/{name}/labels/production",
                  {"version": 1, "canary": {"version": 2, "percent": 50}})
    with httpx.Client(base_url=gateway.base_url, timeout=30,
                      headers={"authorization": f"Bearer {app_key}"}) as http:
        def side(user: str) -> str:
            r = http.post("/chat/completions", json={
                "user": user, "template": {"name": name, "label": "production"}})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"].rsplit(" ", 1)[-1]

        users = [f"end-user-{i}" for i in range(60)]
        first = {u: side(u) for u in users}
        assert set(first.values()) == {"stable", "canary"}
        assert all(side(u) == first[u] for u in users[:20])


def test_embeddings_take_no_template(gateway: GatewayProcess, app_key: str) -> None:
    name = unique()
    create(gateway, greeting(name))
    r = httpx.post(gateway.base_url + "/embeddings", timeout=30,
                   headers={"authorization": f"Bearer {app_key}"},
                   json={"model": "demo-embed", "input": "x",
                         "template": {"name": name, "variables": {"who": "x"}}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "template"
