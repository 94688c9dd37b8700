"""The Open Responses compliance scenarios (openresponses/openresponses, `bin/compliance-test.ts`)
as our own tests, on the demo model and on the fake upstream by both paths.

The suite itself is TypeScript run with bun, and its source lives only on GitHub, which this
build cannot reach: `make compliance OPENRESPONSES_DIR=<checkout>` runs the real CLI
(`tests/clients/open_responses.py`) when a checkout is at hand. Here its HTTP scenarios are
replayed with the same requests, and every answer and stream event is checked against the
fields the Open Responses schema requires (`ResponseResource`, the streaming events, output
items), the way the suite's schema validation and semantic validators check them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.responses import PATHS, ResponsesGateway, start_responses_gateway

NULLABLE_STR = (str, type(None))
NULLABLE_INT = (int, type(None))
NUMBER = (int, float)
# ResponseResource: every required field and the JSON types it may hold
RESPONSE_FIELDS: dict[str, Any] = {
    "id": str, "object": str, "created_at": int, "completed_at": NULLABLE_INT,
    "status": str, "incomplete_details": (dict, type(None)), "model": str,
    "previous_response_id": NULLABLE_STR, "instructions": (str, list, type(None)),
    "output": list, "error": (dict, type(None)), "tools": list,
    "tool_choice": (str, dict), "truncation": str, "parallel_tool_calls": bool,
    "text": dict, "top_p": NUMBER, "presence_penalty": NUMBER, "frequency_penalty": NUMBER,
    "top_logprobs": int, "temperature": NUMBER, "reasoning": (dict, type(None)),
    "user": NULLABLE_STR, "usage": (dict, type(None)), "max_output_tokens": NULLABLE_INT,
    "max_tool_calls": NULLABLE_INT, "store": bool, "background": bool, "service_tier": str,
    "metadata": dict, "safety_identifier": NULLABLE_STR, "prompt_cache_key": NULLABLE_STR,
}
ITEM_FIELDS = {"message": ("id", "status", "role", "content"),
               "function_call": ("id", "call_id", "name", "arguments", "status"),
               "reasoning": ("id", "summary")}
FUNCTION_TOOL_FIELDS = ("type", "name", "description", "parameters", "strict")
USAGE_FIELDS = ("input_tokens", "output_tokens", "total_tokens", "input_tokens_details",
                "output_tokens_details")
# streaming events: the fields each one requires besides `type` and `sequence_number`
EVENT_FIELDS = {
    "response.created": ("response",), "response.in_progress": ("response",),
    "response.completed": ("response",), "response.incomplete": ("response",),
    "response.failed": ("response",),
    "response.output_item.added": ("output_index", "item"),
    "response.output_item.done": ("output_index", "item"),
    "response.content_part.added": ("item_id", "output_index", "content_index", "part"),
    "response.content_part.done": ("item_id", "output_index", "content_index", "part"),
    "response.output_text.delta": ("item_id", "output_index", "content_index", "delta"),
    "response.output_text.done": ("item_id", "output_index", "content_index", "text"),
    "response.refusal.delta": ("item_id", "output_index", "content_index", "delta"),
    "response.refusal.done": ("item_id", "output_index", "content_index", "refusal"),
    "response.function_call_arguments.delta": ("item_id", "output_index", "delta"),
    "response.function_call_arguments.done": ("item_id", "output_index", "arguments"),
    "response.reasoning_summary_part.added": ("item_id", "output_index", "summary_index",
                                              "part"),
    "response.reasoning_summary_part.done": ("item_id", "output_index", "summary_index",
                                             "part"),
    "response.reasoning_summary_text.delta": ("item_id", "output_index", "summary_index",
                                              "delta"),
    "response.reasoning_summary_text.done": ("item_id", "output_index", "summary_index",
                                             "text"),
}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 32).decode()
WEATHER = {"type": "function", "name": "get_weather",
           "description": "Get the current weather for a location",
           "parameters": {"type": "object", "required": ["location"], "properties": {
               "location": {"type": "string", "description": "The city and state"}}}}


def resource_problems(response: Any) -> list[str]:
    """What keeps `response` from being a valid Open Responses `ResponseResource`."""
    if not isinstance(response, dict):
        return ["not an object"]
    out = [f"{name}: Required" for name in RESPONSE_FIELDS if name not in response]
    out += [f"{name}: Invalid input" for name, kinds in RESPONSE_FIELDS.items()
            if name in response and (not isinstance(response[name], kinds)
                                     or (isinstance(response[name], bool) and kinds is int))]
    for i, item in enumerate(response.get("output") or ()):
        for name in ITEM_FIELDS.get(item.get("type"), ("id",)):
            if name not in item:
                out.append(f"output.{i}.{name}: Required")
        for j, part in enumerate(item.get("content") or ()):
            if part.get("type") == "output_text" and not isinstance(
                    part.get("annotations"), list):
                out.append(f"output.{i}.content.{j}.annotations: Required")
    for i, tool in enumerate(response.get("tools") or ()):
        if tool.get("type") == "function":
            out += [f"tools.{i}.{name}: Invalid input" for name in FUNCTION_TOOL_FIELDS
                    if name not in tool]
    usage = response.get("usage")
    if isinstance(usage, dict):
        out += [f"usage.{name}: Required" for name in USAGE_FIELDS if name not in usage]
    return out


def event_problems(event: Any) -> list[str]:
    kind = event.get("type") if isinstance(event, dict) else None
    if kind not in EVENT_FIELDS:
        return [f"unknown event {kind!r}"]
    out = [f"{kind}.{name}: Required" for name in ("sequence_number", *EVENT_FIELDS[kind])
           if name not in event]
    if "response" in EVENT_FIELDS[kind]:
        out += [f"{kind}.response.{p}" for p in resource_problems(event.get("response"))]
    return out


@pytest.fixture(scope="module")
def rg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponsesGateway]:
    for gateway in start_responses_gateway(tmp_path_factory.mktemp("responses-compliance")):
        # the fake upstream's model uses an offered tool, as the suite expects of a model
        gateway.upstream.set_fault("tool-on-auto")
        yield gateway


def _message(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": content, **extra}


# (id, input / extra fields, streaming, semantic checks)
SCENARIOS: list[tuple[str, dict[str, Any], bool, tuple[str, ...]]] = [
    ("basic-response", {"input": [_message("user", "Say hello in exactly 3 words.")]}, False,
     ("output", "completed")),
    ("assistant-phase", {"input": [
        _message("assistant", "I should answer with the saved number.", phase="commentary"),
        _message("assistant", "The number is four.", phase="final_answer"),
        _message("user", "Repeat only the number.")]}, False, ("output", "completed")),
    ("streaming-response", {"input": [_message("user", "Count from 1 to 5.")]}, True,
     ("events", "completed")),
    ("system-prompt", {"input": [
        _message("system", "You are a pirate. Always respond in pirate speak."),
        _message("user", "Say hello.")]}, False, ("output", "completed")),
    ("tool-calling", {"input": [_message("user", "What's the weather like in San Francisco?")],
                      "tools": [WEATHER]}, False, ("output", "function_call")),
    ("tool-calling-streaming", {"input": [
        _message("user", "What's the weather like in San Francisco?")], "tools": [WEATHER]},
     True, ("events", "function_call_events")),
    ("image-input", {"input": [_message("user", [
        {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
        {"type": "input_image", "image_url": PNG}])]}, False, ("output", "completed")),
    ("multi-turn", {"input": [
        _message("user", "My name is Alice."),
        _message("assistant", "Hello Alice! Nice to meet you. How can I help you today?"),
        _message("user", "What is my name?")]}, False, ("output", "completed")),
]


def _stream(rg: ResponsesGateway, body: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    """The suite's SSE reading: every `data:` JSON event; the final response from the last
    completed/failed/incomplete event."""
    events, final = [], None
    with httpx.stream("POST", rg.gateway.url + "/v1/responses", json=body, timeout=30,
                      headers={"authorization": f"Bearer {rg.key}"}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                event = json.loads(line[5:].strip())
                events.append(event)
                if event["type"] in ("response.completed", "response.failed",
                                     "response.incomplete"):
                    final = event["response"]
    return events, final


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
@pytest.mark.parametrize(("fields", "streaming", "checks"), [s[1:] for s in SCENARIOS],
                         ids=[s[0] for s in SCENARIOS])
def test_open_responses_scenario(rg: ResponsesGateway, model: str, fields: dict[str, Any],
                                 streaming: bool, checks: tuple[str, ...]) -> None:
    body = {"model": model, **fields, "stream": streaming}
    if streaming:
        events, response = _stream(rg, body)
        assert [p for e in events for p in event_problems(e)] == []
    else:
        r = rg.post(body)
        assert r.status_code == 200, r.text
        events, response = [], r.json()
    assert resource_problems(response) == []
    kinds = [e["type"] for e in events]
    if "output" in checks:
        assert response["output"], "Response has no output items"
    if "completed" in checks:
        assert response["status"] == "completed"
    if "events" in checks:
        assert events, "No streaming events received"
    if "function_call" in checks:
        assert any(i["type"] == "function_call" for i in response["output"])
    if "function_call_events" in checks:
        assert any(e["type"] == "response.output_item.added"
                   and e["item"]["type"] == "function_call" for e in events)
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
        assert any(e["type"] == "response.output_item.done"
                   and e["item"]["type"] == "function_call" for e in events)


def test_the_checker_finds_what_the_suite_found_in_other_gateways() -> None:
    """The checks are not vacuous: the bugs the notes cite are caught."""
    good = {**dict.fromkeys(RESPONSE_FIELDS), "id": "resp_1", "object": "response",
            "created_at": 1, "status": "completed", "model": "m", "output": [],
            "tools": [], "tool_choice": "auto", "truncation": "disabled",
            "parallel_tool_calls": True, "text": {}, "top_p": 1, "presence_penalty": 0,
            "frequency_penalty": 0, "top_logprobs": 0, "temperature": 1, "store": True,
            "background": False, "service_tier": "default", "metadata": {}}
    assert resource_problems(good) == []
    assert "tools: Required" in resource_problems({k: v for k, v in good.items()
                                                   if k != "tools"})
    assert "completed_at: Invalid input" in resource_problems({**good, "completed_at": "x"})
    assert "tools.0.strict: Invalid input" in resource_problems(
        {**good, "tools": [{"type": "function", "name": "f", "description": None,
                            "parameters": None}]})
    assert event_problems({"type": "response.output_text.delta", "sequence_number": 1,
                           "delta": "x"}) != []
