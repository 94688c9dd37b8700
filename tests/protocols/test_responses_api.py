"""`POST /v1/responses` through a real gateway with the official `openai` SDK, on every path
a request can take: the demo model and an OpenAI-compatible Chat upstream (both by
translation) and a deployment with `native_responses: true` (passthrough)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.responses import PATHS, ResponsesGateway, sse_events, start_responses_gateway

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture(scope="module")
def rg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponsesGateway]:
    yield from start_responses_gateway(tmp_path_factory.mktemp("responses-api"))


@pytest.fixture
def client(rg: ResponsesGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=rg.gateway.base_url, api_key=rg.key, max_retries=0)


def _expected_text(model: str, said: str) -> str:
    prefix = "This is the offline demo model. You said: " if model == "demo" else "fake: "
    return prefix + said


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_plain_request_answers_a_completed_response(client: openai.OpenAI,
                                                      model: str) -> None:
    r = client.responses.create(model=model, input="hello there")
    assert r.id.startswith("resp_") and len(r.id) > 30
    assert r.object == "response" and r.status == "completed" and r.model == model
    assert r.output_text == _expected_text(model, "hello there")
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_stream_is_the_full_event_sequence_with_one_id(client: openai.OpenAI,
                                                         model: str) -> None:
    events = list(client.responses.create(model=model, input="stream this", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.delta", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert kind in kinds, kind
    assert [e.sequence_number for e in events] == list(range(1, len(events) + 1))
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert len(ids) == 1 and next(iter(ids)).startswith("resp_")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text == _expected_text(model, "stream this")
    assert final.usage is not None and final.usage.output_tokens > 0
    assert final.model == model


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_the_sdk_stream_helper_builds_the_final_response(client: openai.OpenAI,
                                                         model: str) -> None:
    with client.responses.stream(model=model, input="helper") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == _expected_text(model, "helper")


def test_sse_frames_carry_event_lines_and_no_done_marker(rg: ResponsesGateway) -> None:
    r = rg.post({"model": "chat", "input": "frames", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    frames = sse_events(r)
    assert all(name == data["type"] for name, data in frames)


def test_the_chat_upstream_gets_the_request_translated(rg: ResponsesGateway,
                                                       client: openai.OpenAI) -> None:
    rg.upstream.clear()
    client.responses.create(
        model="chat", instructions="Answer briefly.", max_output_tokens=40,
        reasoning={"effort": "low"}, tools=[WEATHER], temperature=0.3,
        text={"format": {"type": "json_schema", "name": "answer", "strict": True,
                         "schema": {"type": "object", "properties": {}}}},
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "what is in this image"},
            {"type": "input_image", "image_url": PNG}]}])
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert sent["model"] == "gpt-4o-mini"
    assert sent["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "what is in this image"},
                                     {"type": "image_url", "image_url": {"url": PNG}}]}]
    assert sent["tools"] == [{"type": "function", "function": {
        k: v for k, v in WEATHER.items() if k != "type"}}]
    assert sent["max_tokens"] == 40 and sent["reasoning_effort"] == "low"
    assert sent["temperature"] == 0.3
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["name"] == "answer"


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_function_call_round_trips_with_its_output(client: openai.OpenAI,
                                                     model: str) -> None:
    first = client.responses.create(model=model, input="weather in Oslo?", tools=[WEATHER],
                                    tool_choice="required")
    calls = [i for i in first.output if i.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].call_id and calls[0].id.startswith("fc")
    second = client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                "output": "cold and clear"}])
    assert second.status == "completed" and second.previous_response_id == first.id


def test_a_function_call_output_reaches_chat_as_a_tool_message(rg: ResponsesGateway,
                                                               client: openai.OpenAI) -> None:
    first = client.responses.create(model="chat", input="weather in Oslo?", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"})
    call = first.output[0]
    rg.upstream.clear()
    client.responses.create(model="chat", previous_response_id=first.id, tools=[WEATHER],
                            input=[{"type": "function_call_output", "call_id": call.call_id,
                                    "output": "cold"}])
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": call.arguments}}]},
        {"role": "tool", "tool_call_id": call.call_id, "content": "cold"}]


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_streamed_function_call_has_its_argument_events(client: openai.OpenAI,
                                                          model: str) -> None:
    events = list(client.responses.create(model=model, input="weather?", tools=[WEATHER],
                                          tool_choice="required", stream=True))
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.type == "function_call" and added[0].item.name == "get_weather"
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.name == "get_weather"
    assert any(e.type == "response.function_call_arguments.delta" for e in events)
    final = events[-1].response
    assert [i.type for i in final.output] == ["function_call"]
    assert final.output[0].arguments == done.arguments


def test_the_native_upstream_gets_the_body_as_it_came_with_only_the_model_rewritten(
        rg: ResponsesGateway) -> None:
    body = {"model": "native", "input": [{"role": "user", "content": "as is"}],
            "instructions": "keep", "tools": [{"type": "web_search"}, WEATHER],
            "include": ["reasoning.encrypted_content"], "truncation": "auto",
            "metadata": {"k": "v"}, "reasoning": {"effort": "high", "summary": "auto"},
            "store": False, "future_field": {"x": 1}}
    rg.upstream.clear()
    r = rg.post(body)
    assert r.status_code == 200, r.text
    (sent,) = rg.upstream_bodies("/v1/responses")
    assert sent == {**body, "model": "gpt-4.1"}


@pytest.mark.parametrize(("tools", "choice", "param", "named"), [
    ([{"type": "web_search"}], None, "tools[0].type", "web_search"),
    ([WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}], None, "tools[1].type",
     "file_search"),
    ([{"type": "code_interpreter", "container": {"type": "auto"}}], None, "tools[0].type",
     "code_interpreter"),
    ([WEATHER], {"type": "web_search"}, "tool_choice", "web_search"),
], ids=["web_search", "file_search", "code_interpreter", "hosted tool_choice"])
@pytest.mark.parametrize("model", ["demo", "chat"])
def test_a_hosted_tool_on_a_translated_route_is_a_400_naming_it(
        rg: ResponsesGateway, model: str, tools: list[Any], choice: Any, param: str,
        named: str) -> None:
    rg.upstream.clear()
    body: dict[str, Any] = {"model": model, "input": "search", "tools": tools}
    if choice is not None:
        body["tool_choice"] = choice
    r = rg.post(body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == param and named in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert rg.upstream.requests == []


def test_max_output_tokens_cuts_the_answer_as_incomplete(client: openai.OpenAI) -> None:
    r = client.responses.create(model="demo", input="a long enough sentence to cut short",
                                max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens"
    events = list(client.responses.create(model="demo", input="again a long enough sentence",
                                          max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"


def test_instructions_are_not_carried_over_to_the_next_turn(rg: ResponsesGateway,
                                                            client: openai.OpenAI) -> None:
    first = client.responses.create(model="chat", instructions="Speak French.",
                                    input="bonjour")
    rg.upstream.clear()
    client.responses.create(model="chat", previous_response_id=first.id, input="encore")
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "bonjour"}]},
        {"role": "assistant", "content": "fake: bonjour"},
        {"role": "user", "content": "encore"}]


def test_a_prompt_is_one_of_the_gateways_templates(rg: ResponsesGateway,
                                                   client: openai.OpenAI) -> None:
    rg.upstream.clear()
    r = client.responses.create(model="chat", input="my printer is broken",
                                prompt={"id": "support-bot", "version": "1",
                                        "variables": {"product": "PrintMax"}})
    assert r.output_text == "fake: my printer is broken"
    (sent,) = rg.upstream_bodies("/v1/chat/completions")
    assert sent["messages"][0] == {"role": "system", "content": "You support PrintMax."}
    rid = "rsp-prompt-" + r.id[-8:]
    client.responses.create(model="chat", input="x", extra_headers={"x-request-id": rid},
                            prompt={"id": "support-bot", "variables": {"product": "P"}})
    (event,) = rg.gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["template_name"] == "support-bot" and event["template_version"] == 1


@pytest.mark.parametrize(("prompt", "param"), [
    ({"id": "support-bot"}, "template.variables.product"),
    ({"id": "no-such-template"}, "template.name"),
    ({"id": "support-bot", "version": "9", "variables": {"product": "P"}}, "template.version"),
    # a template without tools cannot satisfy a forced tool (make fuzz found it answered 200)
    ({"id": "support-bot", "variables": {"product": "P"}, "tool_choice":
      {"type": "function", "name": "get_weather"}}, "tool_choice"),
], ids=["missing variable", "unknown template", "unknown version", "forced tool, no tools"])
def test_a_bad_prompt_is_a_400_naming_the_problem(rg: ResponsesGateway, prompt: dict[str, Any],
                                                  param: str) -> None:
    prompt = dict(prompt)
    extra = {"tool_choice": prompt.pop("tool_choice")} if "tool_choice" in prompt else {}
    r = rg.post({"model": "chat", "input": "x", "prompt": prompt, **extra})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


BAD_BODIES = [
    ({"input": "x"}, "model"),
    ({"model": "chat"}, "input"),
    ({"model": "chat", "input": 5}, "input"),
    ({"model": "chat", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": "chat", "input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
     "input[0].arguments"),
    ({"model": "chat", "input": "x", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"model": "chat", "input": "x", "tool_choice": {"type": "function", "name": "nope"},
      "tools": [WEATHER]}, "tool_choice.name"),
    ({"model": "chat", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "chat", "input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
    ({"model": "chat", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    # Chat's parameters are not sent on as extras past Chat's checks (make fuzz: n = 2**63)
    ({"model": "chat", "input": "x", "n": 2**63}, "n"),
    ({"model": "chat", "input": "x", "max_tokens": 5}, "max_tokens"),
    ({"model": "chat", "input": "x", "messages": [{"role": "user", "content": "x"}]},
     "messages"),
    ({"model": "chat", "input": "x", "background": True}, "background"),
    ({"model": "chat", "input": "x", "conversation": "conv_1"}, "conversation"),
    ({"model": "chat", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"model": "chat", "input": "x", "prompt": {"id": "support-bot"},
      "template": {"name": "support-bot"}}, "prompt"),
]


@pytest.mark.parametrize(("body", "param"), BAD_BODIES, ids=[p for _, p in BAD_BODIES])
def test_a_bad_body_is_a_400_naming_the_field(rg: ResponsesGateway, body: dict[str, Any],
                                              param: str) -> None:
    r = rg.post(body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_an_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="nope", input="x")
    assert err.value.code == "model_not_found"


@pytest.mark.parametrize("model", ["faulty-chat", "faulty-native"])
def test_a_stream_cut_mid_way_ends_with_response_failed(rg: ResponsesGateway,
                                                        model: str) -> None:
    rg.faulty.set_fault("drop-after:5")
    try:
        rid = "rsp-cut-" + model
        r = rg.post({"model": model, "input": "one two three four five six", "stream": True},
                    **{"x-request-id": rid})
    finally:
        rg.faulty.set_fault(None)
    events = sse_events(r)
    kinds = [data["type"] for _, data in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert kinds.count("response.failed") == 1
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_error"
    assert failed["id"] == events[0][1]["response"]["id"]
    assert [d["sequence_number"] for _, d in events] == list(range(1, len(events) + 1))
    (event,) = rg.gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["partial"] and event["error_code"] == "upstream_error"
    assert event["status_code"] == 200


def test_an_upstream_that_ignores_include_usage_gets_estimated_usage(
        rg: ResponsesGateway) -> None:
    rg.faulty.set_fault("no-usage")
    try:
        r = rg.post({"model": "faulty-chat", "input": "count me", "stream": True},
                    **{"x-request-id": "rsp-no-usage"})
    finally:
        rg.faulty.set_fault(None)
    final = sse_events(r)[-1][1]["response"]
    assert final["usage"]["output_tokens"] > 0
    assert "_gateway_estimated" not in final["usage"]
    (event,) = rg.gateway.wait_for_audit("request_id = 'rsp-no-usage'")
    assert event["usage_source"] == "estimated" and event["output_tokens"] > 0


def test_each_request_is_one_audit_event_with_the_endpoint(rg: ResponsesGateway) -> None:
    for n, model in enumerate(PATHS):
        for stream in (False, True):
            rid = f"rsp-audit-{n}-{stream}"
            r = rg.post({"model": model, "input": "audit me", "stream": stream},
                        **{"x-request-id": rid})
            assert r.status_code == 200
            (event,) = rg.gateway.wait_for_audit("request_id = :r", {"r": rid})
            assert event["endpoint"] == "/v1/responses" and event["status_code"] == 200
            assert event["model_served"] == model and event["input_tokens"] > 0
            assert bool(event["stream"]) == stream


def test_a_compliance_key_may_not_create_responses(rg: ResponsesGateway) -> None:
    key = rg.gateway.create_key(name="rsp-compliance", role="compliance")["key"]
    r = rg.post({"model": "chat", "input": "x"}, key=key)
    assert r.status_code == 403 and r.json()["error"]["code"] == "endpoint_not_allowed"


def test_the_answer_names_the_public_model_and_no_upstream_id(rg: ResponsesGateway) -> None:
    r = rg.post({"model": "native", "input": "ids"})
    body = r.json()
    assert body["model"] == "native"
    stored_upstream = [b for b in rg.upstream.requests if b["path"] == "/v1/responses"]
    assert stored_upstream and body["id"] not in repr(stored_upstream)


def test_metrics_count_the_endpoint(rg: ResponsesGateway) -> None:
    rg.post({"model": "demo", "input": "metrics"})
    text = httpx.get(rg.gateway.url + "/metrics", timeout=10).text
    assert 'endpoint="responses"' in text


def _http_chunks(url: str, key: str, body: dict[str, Any]) -> list[bytes]:
    """POST over a raw socket and return the body's HTTP/1.1 chunks as the server framed them
    (each one a write of the gateway)."""
    parsed = httpx.URL(url)
    payload = json.dumps(body).encode()
    with socket.create_connection((parsed.host, parsed.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                     b"content-type: application/json\r\nauthorization: Bearer " + key.encode()
                     + b"\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n"
                     + payload)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2:]


@pytest.mark.parametrize("model", ["demo", "chat"])
def test_the_events_of_one_upstream_chunk_go_out_in_one_write(rg: ResponsesGateway,
                                                              model: str) -> None:
    """A translated stream's opening events (five for the first upstream chunk) and its
    closing ones are one write each, not one per event: the first token arrives sooner."""
    chunks = _http_chunks(rg.gateway.url, rg.key,
                          {"model": model, "input": "batch these", "stream": True})
    kinds = [[line[len(b"event: "):].decode() for line in c.split(b"\n")
              if line.startswith(b"event: ")] for c in chunks]
    assert all(c.endswith(b"\n\n") for c in chunks)  # a write ends at an event's end
    flat = [k for group in kinds for k in group]
    assert flat[0] == "response.created" and flat[-1] == "response.completed"
    assert len(chunks) < len(flat)
    assert kinds[0][:2] == ["response.created", "response.in_progress"]
    closing = next(g for g in kinds if "response.output_text.done" in g)
    assert closing[:3] == ["response.output_text.done", "response.content_part.done",
                           "response.output_item.done"]
