"""PII output rules and restore over `/v1/responses` events: deltas filtered as they pass,
every event that repeats a text in full repeats exactly what the deltas sent, each finding
counted once."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.pii.actions import Redactor
from gateway.pii.policy import redact_request
from gateway.pii.responses_events import ResponsesEventFilter, filter_answer
from gateway.protocols.responses_stream import ChatToResponsesStream
from gateway.protocols.responses_translate import responses_answer

EMAIL = "ana.lima@example.org"
TEXT = f"Write to {EMAIL} today, or call later."


def _events(pieces: list[str], tool_args: list[str] | None = None) -> list[dict[str, Any]]:
    machine = ChatToResponsesStream({"model": "m", "input": "x"})
    chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": {"content": p},
                                                  "finish_reason": None}]} for p in pieces]
    if tool_args:
        chunks.append({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "function": {"name": "send", "arguments": ""}}]},
            "finish_reason": None}]})
        chunks += [{"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": a}}]}, "finish_reason": None}]}
            for a in tool_args]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return [e for c in chunks for e in machine.feed(c)] + machine.finish()


def _filter(events: list[dict[str, Any]], rules: dict[str, str], redactor: Redactor,
            restore: bool = False) -> list[dict[str, Any]]:
    f = ResponsesEventFilter(rules, redactor, restore)
    return [out for e in events for out in f.feed(e)]


def _texts(events: list[dict[str, Any]]) -> dict[str, str]:
    """The answer's text as each kind of client reads it."""
    final = events[-1]["response"]
    return {
        "deltas": "".join(e["delta"] for e in events
                          if e["type"] == "response.output_text.delta"),
        "text.done": next(e["text"] for e in events
                          if e["type"] == "response.output_text.done"),
        "part.done": next(e["part"]["text"] for e in events
                          if e["type"] == "response.content_part.done"),
        "item.done": next(e["item"]["content"][0]["text"] for e in events
                          if e["type"] == "response.output_item.done"
                          and e["item"]["type"] == "message"),
        "completed": final["output"][0]["content"][0]["text"],
    }


SPLITS = [
    ["Write to ana.lima@exa", "mple.org today, or call later."],
    list(TEXT),  # one character per delta
    [TEXT],
    ["Write to ", "ana.lima", "@", "example.org", " today, or call later."],
]


@pytest.mark.parametrize("pieces", SPLITS, ids=["mid-address", "chars", "whole", "words"])
def test_every_client_reads_the_same_redacted_text_and_it_is_counted_once(
        pieces: list[str]) -> None:
    redactor = Redactor()
    out = _filter(_events(pieces), {"email": "redact"}, redactor)
    texts = _texts(out)
    expected = "Write to [EMAIL_1] today, or call later."
    assert set(texts.values()) == {expected}, texts
    assert EMAIL not in repr(out)
    assert redactor.summary() == {"email": {"count": 1, "action": "redact"}}


def test_tool_call_arguments_are_filtered_in_deltas_done_and_final() -> None:
    redactor = Redactor()
    out = _filter(_events(["ok"], ['{"to": "ana.lima@', 'example.org"}']),
                  {"email": "redact"}, redactor)
    deltas = "".join(e["delta"] for e in out
                     if e["type"] == "response.function_call_arguments.delta")
    done = next(e for e in out if e["type"] == "response.function_call_arguments.done")
    final = out[-1]["response"]["output"][1]
    assert deltas == done["arguments"] == final["arguments"] == '{"to": "[EMAIL_1]"}'
    assert done["name"] == "send"


def test_restore_puts_the_callers_values_back_everywhere_the_text_appears() -> None:
    redactor = Redactor()
    body, _ = redact_request({"model": "m", "input": f"mail {EMAIL}",
                              "instructions": f"sign as {EMAIL}"}, "responses",
                             {"email": "redact"}, redactor)
    assert EMAIL not in repr(body)
    events = _events(["Sure, [EMA", "IL_1] it is."])
    for e in events:  # the upstream echoes the redacted instructions
        if "response" in e:
            e["response"]["instructions"] = body["instructions"]
    out = _filter(events, {}, redactor, restore=True)
    assert set(_texts(out).values()) == {f"Sure, {EMAIL} it is."}
    assert all(e["response"]["instructions"] == f"sign as {EMAIL}" for e in out
               if "response" in e)


def test_a_text_never_streamed_as_deltas_is_filtered_whole() -> None:
    """An upstream that sends only done events (or a snapshot) still gets its text filtered."""
    redactor = Redactor()
    events = [e for e in _events([TEXT]) if e["type"] != "response.output_text.delta"]
    out = _filter(events, {"email": "redact"}, redactor)
    assert EMAIL not in repr(out)
    assert _texts(out)["completed"] == "Write to [EMAIL_1] today, or call later."
    assert redactor.summary()["email"]["count"] == 1


def test_held_text_goes_out_before_the_terminal_event_when_no_done_event_came() -> None:
    redactor = Redactor()
    events = [e for e in _events(["see ana.lima@example.org"])
              if not e["type"].endswith(".done")]
    out = _filter(events, {"email": "redact"}, redactor)
    deltas = "".join(e["delta"] for e in out if e["type"] == "response.output_text.delta")
    assert deltas == "see [EMAIL_1]"
    assert out[-1]["type"] == "response.completed"
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == "see [EMAIL_1]"


def test_a_whole_answer_gets_output_rules_on_its_output_only() -> None:
    redactor = Redactor()
    answer = responses_answer({"choices": [{"message": {"content": TEXT},
                                            "finish_reason": "stop"}]},
                              {"input": "x", "instructions": f"cc {EMAIL}"})
    out = filter_answer(answer, {"email": "redact"}, False, redactor)
    assert out["output"][0]["content"][0]["text"] == "Write to [EMAIL_1] today, or call later."
    assert out["instructions"] == f"cc {EMAIL}"  # the caller's own text, not the model's
    assert redactor.summary() == {"email": {"count": 1, "action": "redact"}}
