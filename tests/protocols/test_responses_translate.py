"""The Responses <-> Chat translation: requests, whole answers, and the stream state machine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.protocols.responses_stream import ChatToResponsesStream
from gateway.protocols.responses_translate import chat_request, responses_answer

TOOL = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True}

# (name, Responses request fields, what the Chat body must hold)
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("string input is one user message", {"input": "hi"},
     {"messages": [{"role": "user", "content": "hi"}]}),
    ("instructions become the first system message",
     {"instructions": "be brief", "input": "hi"},
     {"messages": [{"role": "system", "content": "be brief"},
                   {"role": "user", "content": "hi"}]}),
    ("developer is system, parts become Chat parts",
     {"input": [{"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "what is this"},
                    {"type": "input_image", "image_url": "https://x.example/a.png",
                     "detail": "low"}]}]},
     {"messages": [{"role": "system", "content": "rules"},
                   {"role": "user", "content": [
                       {"type": "text", "text": "what is this"},
                       {"type": "image_url", "image_url": {"url": "https://x.example/a.png",
                                                           "detail": "low"}}]}]}),
    ("an echoed assistant message is its text",
     {"input": [{"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "hello", "annotations": []}]}]},
     {"messages": [{"role": "assistant", "content": "hello"}]}),
    ("function calls join the assistant message, outputs become tool messages",
     {"input": [{"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                 "arguments": '{"city":"Oslo"}'},
                {"type": "function_call", "call_id": "call_2", "name": "get_weather",
                 "arguments": '{"city":"Rome"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "cold"},
                {"type": "function_call_output", "call_id": "call_2",
                 "output": [{"type": "input_text", "text": "warm"}]}]},
     {"messages": [
         {"role": "user", "content": "weather?"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
             {"id": "call_2", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "cold"},
         {"role": "tool", "tool_call_id": "call_2", "content": "warm"}]}),
    ("reasoning items are dropped",
     {"input": [{"type": "reasoning", "id": "rs_1", "summary": []},
                {"role": "user", "content": "go"}]},
     {"messages": [{"role": "user", "content": "go"}]}),
    ("flat function tools become nested, a named choice too",
     {"input": "x", "tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"}},
     {"tools": [{"type": "function", "function": {
         "name": "get_weather", "description": "Weather in a city",
         "parameters": TOOL["parameters"], "strict": True}}],
      "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
    ("allowed_tools keeps the allowed ones and its mode",
     {"input": "x", "tools": [TOOL, {**TOOL, "name": "other"}],
      "tool_choice": {"type": "allowed_tools", "mode": "required",
                      "tools": [{"type": "function", "name": "other"}]}},
     {"tool_choice": "required"}),
    ("text.format json_schema becomes response_format",
     {"input": "x", "text": {"format": {"type": "json_schema", "name": "answer",
                                        "schema": {"type": "object"}, "strict": True},
                             "verbosity": "low"}},
     {"response_format": {"type": "json_schema", "json_schema": {
         "name": "answer", "schema": {"type": "object"}, "strict": True}},
      "verbosity": "low"}),
    ("json_object", {"input": "x", "text": {"format": {"type": "json_object"}}},
     {"response_format": {"type": "json_object"}}),
    ("reasoning effort, output cap, sampling, logprobs",
     {"input": "x", "reasoning": {"effort": "high", "summary": "auto"},
      "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "top_logprobs": 2,
      "user": "u1", "parallel_tool_calls": False},
     {"reasoning_effort": "high", "max_tokens": 50, "temperature": 0.2, "top_p": 0.9,
      "logprobs": True, "top_logprobs": 2, "user": "u1", "parallel_tool_calls": False}),
]


@pytest.mark.parametrize(("fields", "expected"), [c[1:] for c in REQUESTS],
                         ids=[c[0] for c in REQUESTS])
def test_a_responses_request_becomes_this_chat_body(fields: dict[str, Any],
                                                    expected: dict[str, Any]) -> None:
    chat = chat_request({"model": "m", **fields})
    for key, value in expected.items():
        assert chat[key] == value, key


def test_fields_chat_has_no_place_for_are_not_sent_and_extras_are() -> None:
    chat = chat_request({"model": "m", "input": "x", "store": True, "metadata": {"a": "b"},
                         "include": ["reasoning.encrypted_content"], "truncation": "auto",
                         "previous_response_id": "resp_1", "stream": True,
                         "stream_options": {"include_obfuscation": False}, "top_k": 5})
    assert set(chat) == {"model", "messages", "top_k"}


def test_allowed_tools_sends_only_the_allowed_tools() -> None:
    chat = chat_request({"model": "m", "input": "x", "tools": [TOOL, {**TOOL, "name": "other"}],
                         "tool_choice": {"type": "allowed_tools", "mode": "auto",
                                         "tools": [{"type": "function", "name": "other"}]}})
    assert [t["function"]["name"] for t in chat["tools"]] == ["other"]
    assert chat["tool_choice"] == "auto"


# --- whole answers -----------------------------------------------------------------------------

def _chat_answer(message: dict[str, Any], finish: str = "stop",
                 usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": "up", "choices": [{"index": 0, "message": message,
                                        "finish_reason": finish}],
            "usage": usage or {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                               "prompt_tokens_details": {"cached_tokens": 6},
                               "completion_tokens_details": {"reasoning_tokens": 2}}}


def test_a_text_answer_is_a_completed_response_with_the_request_echoed() -> None:
    body = {"model": "m", "input": "x", "instructions": "be brief", "tools": [TOOL],
            "temperature": 0.3, "metadata": {"t": "1"}}
    out = responses_answer(_chat_answer({"role": "assistant", "content": "hello"}), body)
    assert out["object"] == "response" and out["status"] == "completed"
    assert out["id"].startswith("resp_") and out["created_at"] == 1700000000
    (item,) = out["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    assert item["id"].startswith("msg_") and item["status"] == "completed"
    assert item["content"] == [{"type": "output_text", "text": "hello", "annotations": [],
                                "logprobs": []}]
    assert out["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 6},
                            "output_tokens": 4,
                            "output_tokens_details": {"reasoning_tokens": 2},
                            "total_tokens": 14}
    assert out["instructions"] == "be brief" and out["tools"] == [TOOL]
    assert out["temperature"] == 0.3 and out["metadata"] == {"t": "1"}
    for field in ("tool_choice", "truncation", "parallel_tool_calls", "text", "top_p",
                  "reasoning", "store", "background", "service_tier", "completed_at"):
        assert out[field] is not None, field


def test_tool_calls_become_function_call_items_with_the_chat_call_id() -> None:
    call = {"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    out = responses_answer(_chat_answer({"role": "assistant", "content": None,
                                         "tool_calls": [call]}, "tool_calls"), {"input": "x"})
    (item,) = out["output"]
    assert item["type"] == "function_call" and item["call_id"] == "call_9"
    assert item["name"] == "get_weather" and item["arguments"] == '{"city":"Oslo"}'
    assert item["id"].startswith("fc_") and out["status"] == "completed"


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"),
                                                ("content_filter", "content_filter")])
def test_a_cut_answer_is_incomplete_with_its_reason(finish: str, reason: str) -> None:
    out = responses_answer(_chat_answer({"role": "assistant", "content": "partial"}, finish),
                           {"input": "x"})
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": reason}
    assert out["output"][0]["status"] == "incomplete"


def test_reasoning_content_becomes_a_reasoning_item_before_the_message() -> None:
    out = responses_answer(_chat_answer({"role": "assistant", "content": "42",
                                         "reasoning_content": "think"}), {"input": "x"})
    assert [i["type"] for i in out["output"]] == ["reasoning", "message"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "think"}]


# --- streams -----------------------------------------------------------------------------------

def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
           usage: dict[str, Any] | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                             "model": "up", "choices": []}
    if delta is not None or finish is not None:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        chunk["usage"] = usage
    return chunk


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def _run(chunks: list[dict[str, Any]], body: dict[str, Any] | None = None
         ) -> list[dict[str, Any]]:
    machine = ChatToResponsesStream(body or {"model": "m", "input": "x"})
    events = [e for c in chunks for e in machine.feed(c)]
    return events + machine.finish()


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].removeprefix("response.") for e in events]


def _check_invariants(events: list[dict[str, Any]]) -> None:
    """What every stream must satisfy, whatever the upstream sent."""
    assert [e["sequence_number"] for e in events] == list(range(1, len(events) + 1))
    assert _types(events)[:2] == ["created", "in_progress"]
    assert _types(events)[-1] in ("completed", "incomplete")
    assert sum(1 for e in events if e["type"] in ("response.completed",
                                                  "response.incomplete")) == 1
    ids = {e["response"]["id"] for e in events if "response" in e}
    assert len(ids) == 1  # one stable response id
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == list(range(len(added)))  # every item closed
    final = events[-1]["response"]
    items = {e["output_index"]: e["item"] for e in events
             if e["type"] == "response.output_item.done"}
    assert final["output"] == [items[i] for i in range(len(items))]
    opened: set[int] = set()
    closed: set[int] = set()
    for e in events:  # a delta only between its item's added and done events
        if e["type"] == "response.output_item.added":
            opened.add(e["output_index"])
        elif e["type"] == "response.output_item.done":
            closed.add(e["output_index"])
        elif e["type"].endswith(".delta"):
            assert e["output_index"] in opened - closed, e


def test_a_text_stream_is_the_full_event_sequence() -> None:
    events = _run([_chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hel"}),
                   _chunk({"content": "lo"}), _chunk(finish="stop"), _chunk(usage=USAGE)])
    _check_invariants(events)
    assert _types(events) == [
        "created", "in_progress", "output_item.added", "content_part.added",
        "output_text.delta", "output_text.delta", "output_text.done", "content_part.done",
        "output_item.done", "completed"]
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == "Hello" and done["logprobs"] == []
    part = next(e for e in events if e["type"] == "response.content_part.done")["part"]
    assert part == {"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"] == [part]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 3
    delta = events[4]
    assert {"item_id", "output_index", "content_index", "delta", "logprobs"} <= set(delta)


def test_a_tool_call_stream_has_arguments_deltas_and_a_done_with_the_name() -> None:
    first = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                             "function": {"name": "get_weather", "arguments": ""}}]}
    events = _run([_chunk(first),
                   _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
                   _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":1}'}}]}),
                   _chunk(finish="tool_calls"), _chunk(usage=USAGE)])
    _check_invariants(events)
    assert _types(events) == [
        "created", "in_progress", "output_item.added", "function_call_arguments.delta",
        "function_call_arguments.delta", "function_call_arguments.done", "output_item.done",
        "completed"]
    added = events[2]["item"]
    assert added["type"] == "function_call" and added["name"] == "get_weather"
    assert added["arguments"] == "" and added["call_id"] == "call_1"
    done = events[5]
    assert done["name"] == "get_weather" and done["arguments"] == '{"city":1}'
    assert events[-1]["response"]["output"][0]["arguments"] == '{"city":1}'


def test_parallel_tool_calls_after_text_are_separate_items_in_order() -> None:
    calls = [{"index": i, "id": f"call_{i}", "type": "function",
              "function": {"name": f"t{i}", "arguments": "{}"}} for i in (0, 1)]
    events = _run([_chunk({"content": "let me check"}), _chunk({"tool_calls": calls}),
                   _chunk(finish="tool_calls")])
    _check_invariants(events)
    final = events[-1]["response"]["output"]
    assert [i["type"] for i in final] == ["message", "function_call", "function_call"]
    assert [i.get("name") for i in final[1:]] == ["t0", "t1"]


def test_reasoning_then_text_closes_the_reasoning_item_first() -> None:
    events = _run([_chunk({"reasoning_content": "hmm"}), _chunk({"reasoning_content": "."}),
                   _chunk({"content": "42"}), _chunk(finish="stop")])
    _check_invariants(events)
    assert _types(events) == [
        "created", "in_progress", "output_item.added", "reasoning_summary_part.added",
        "reasoning_summary_text.delta", "reasoning_summary_text.delta",
        "reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done",
        "output_item.added", "content_part.added", "output_text.delta", "output_text.done",
        "content_part.done", "output_item.done", "completed"]
    assert events[8]["item"]["summary"] == [{"type": "summary_text", "text": "hmm."}]


def test_a_refusal_is_a_refusal_part() -> None:
    events = _run([_chunk({"refusal": "I can't"}), _chunk(finish="stop")])
    _check_invariants(events)
    assert "refusal.delta" in _types(events) and "refusal.done" in _types(events)
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't"}]


@pytest.mark.parametrize("chunks", [
    [_chunk({"content": "no finish"})],  # the upstream ends without finish_reason
    [_chunk({"content": "x"}), _chunk({"tool_calls": [{"index": 0, "id": "c",
                                                       "function": {"name": "f"}}]})],
    [],  # nothing but [DONE]
], ids=["text", "tool call", "empty"])
def test_open_items_are_closed_when_the_stream_ends_without_finish_reason(
        chunks: list[dict[str, Any]]) -> None:
    events = _run(chunks)
    _check_invariants(events)
    assert events[-1]["type"] == "response.completed"


def test_length_makes_the_stream_incomplete() -> None:
    events = _run([_chunk({"content": "cut"}), _chunk(finish="length"), _chunk(usage=USAGE)])
    _check_invariants(events)
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_usage_is_estimated_and_marked_when_the_upstream_sends_none() -> None:
    events = _run([_chunk({"content": "four words right here"}), _chunk(finish="stop")],
                  {"model": "m", "input": "a prompt of some words"})
    usage = events[-1]["response"]["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] == 4
    assert usage["_gateway_estimated"] is True  # the relay strips it (test_responses_api)


def test_the_event_stream_is_valid_json_for_every_event() -> None:
    events = _run([_chunk({"content": "ok"}), _chunk(finish="stop")])
    for event in events:
        assert json.loads(json.dumps(event)) == event
