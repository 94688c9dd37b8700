"""The Messages <-> Chat translator and the usage rules, case by case (no server needed: the
end-to-end tests cover the same through the SDKs; these pin each mapping)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.pricing import Price, usage_cost_nanos
from gateway.protocols.anthropic import ESTIMATED, merge_usage, usage_from_anthropic
from gateway.protocols.anthropic_translate import from_chat, stream_from_chat, to_chat
from gateway.providers.anthropic_native import beta_header

TOOL = {"name": "Read", "description": "read", "input_schema": {"type": "object"}}

REQUESTS = [
    ("system blocks -> one system message, cache_control dropped",
     {"system": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                 {"type": "text", "text": "b"}],
      "messages": [{"role": "user", "content": "hi"}]},
     {"messages": [{"role": "system", "content": "a\nb"}, {"role": "user", "content": "hi"}]}),
    ("tool results first, then the user's text; tool_use -> tool_calls",
     {"messages": [
         {"role": "user", "content": "go"},
         {"role": "assistant", "content": [
             {"type": "thinking", "thinking": "t", "signature": "s"},
             {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"q": 1}}]},
         {"role": "user", "content": [{"type": "text", "text": "and"},
                                      {"type": "tool_result", "tool_use_id": "toolu_1",
                                       "content": [{"type": "text", "text": "r"}]}]}]},
     {"messages": [
         {"role": "user", "content": "go"},
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "toolu_1", "type": "function",
              "function": {"name": "Read", "arguments": '{"q":1}'}}]},
         {"role": "tool", "tool_call_id": "toolu_1", "content": "r"},
         {"role": "user", "content": "and"}]}),
    ("a system turn mid-conversation stays in place",
     {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "note"},
                   {"role": "user", "content": "b"}]},
     {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "note"},
                   {"role": "user", "content": "b"}]}),
    ("images: base64 -> data URL",
     {"messages": [{"role": "user", "content": [
         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                      "data": "iVBO"}},
         {"type": "text", "text": "what?"}]}]},
     {"messages": [{"role": "user", "content": [
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
         {"type": "text", "text": "what?"}]}]}),
    ("tools, tool_choice any, no parallel calls; sampling and stops; Anthropic-only dropped",
     {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL],
      "tool_choice": {"type": "any", "disable_parallel_tool_use": True}, "max_tokens": 9,
      "temperature": 0.5, "top_k": 3, "stop_sequences": ["END"], "thinking": {
          "type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u"}},
     {"messages": [{"role": "user", "content": "x"}], "max_tokens": 9, "temperature": 0.5,
      "stop": ["END"], "tool_choice": "required", "parallel_tool_calls": False,
      "tools": [{"type": "function", "function": {"name": "Read", "description": "read",
                                                  "parameters": {"type": "object"}}}]}),
]


@pytest.mark.parametrize(("case", "body", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_a_messages_request_becomes_this_chat_request(case: str, body: dict[str, Any],
                                                      expected: dict[str, Any]) -> None:
    assert to_chat({"model": "m", **body}) == {"model": "m", **expected}


@pytest.mark.parametrize("tool", [{"type": "web_search_20250305", "name": "web_search"},
                                  {"type": "bash_20250124", "name": "bash"}])
def test_anthropics_own_tools_cannot_be_translated(tool: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest, match=tool["name"]):
        to_chat({"model": "m", "tools": [tool], "messages": [{"role": "user", "content": "x"}]})


ANSWERS = [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"),
           ("content_filter", "refusal"), (None, "end_turn")]


@pytest.mark.parametrize(("finish", "stop"), ANSWERS)
def test_finish_reasons_map_to_stop_reasons(finish: str | None, stop: str) -> None:
    answer = from_chat({"id": "chatcmpl-1", "choices": [
        {"message": {"role": "assistant", "content": "x"}, "finish_reason": finish}]})
    assert answer["stop_reason"] == stop and answer["id"] == "msg_1"


def test_usage_never_counts_cache_reads_twice_either_way() -> None:
    openai_usage = {"prompt_tokens": 100, "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 60}}
    usage = from_chat({"choices": [{"message": {"content": "x"}}], "usage": openai_usage}
                      )["usage"]
    assert usage == {"input_tokens": 40, "output_tokens": 7, "cache_read_input_tokens": 60,
                     "cache_creation_input_tokens": 0}
    ours = usage_from_anthropic({"input_tokens": 40, "cache_read_input_tokens": 60,
                                 "cache_creation_input_tokens": 5, "output_tokens": 7})
    assert ours is not None and ours.input_tokens == 105 and ours.total_tokens == 112


def test_cache_reads_and_5m_and_1h_writes_have_the_price_maps_rates() -> None:
    """claude-sonnet-4-5 in litellm's map: input $3, cache read $0.30, 5m write $3.75,
    1h write $6, output $15 per million tokens."""
    price = Price(3_000_000, 15_000_000, cached_input_pico_per_token=300_000,
                  cache_write_pico_per_token=3_750_000,
                  cache_write_1h_pico_per_token=6_000_000)
    usage = usage_from_anthropic({"input_tokens": 1000, "cache_read_input_tokens": 2000,
                                  "cache_creation_input_tokens": 3000, "output_tokens": 100,
                                  "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                     "ephemeral_1h_input_tokens": 2000}})
    assert usage is not None and usage.details is not None
    expected_pico = (1000 * 3_000_000 + 2000 * 300_000 + 1000 * 3_750_000
                     + 2000 * 6_000_000 + 100 * 15_000_000)
    assert usage_cost_nanos(usage.details, price) == expected_pico // 1000


def test_a_streams_usage_merges_message_start_and_message_delta() -> None:
    start = {"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 1}
    merged = merge_usage(merge_usage(None, start), {"output_tokens": 25})
    assert merged == {"input_tokens": 40, "cache_read_input_tokens": 60, "output_tokens": 25}


async def _chunks(chunks: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk


async def test_an_upstream_that_ends_without_finish_reason_still_closes_every_block() -> None:
    chunks = [{"id": "c", "choices": [{"index": 0, "delta": {"content": "he"}}]},
              {"id": "c", "choices": [{"index": 0, "delta": {"content": "llo"}}]}]
    events = [e async for e in stream_from_chat(_chunks(chunks), "m")]
    kinds = [e["type"] for e in events]
    assert kinds == ["message_start", "content_block_start", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta",
                     "message_stop"]
    assert events[-2][ESTIMATED] and events[-2]["usage"]["output_tokens"] > 0  # no usage
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


@pytest.mark.parametrize(("sent", "allowed", "forwarded"), [
    ("a,b", None, "a,b"),  # no allowlist: unchanged, byte for byte
    ("a, b ,c", frozenset({"b", "c"}), "b,c"),
    ("x", frozenset({"b"}), None),  # nothing left: no header at all
])
def test_a_beta_allowlist_keeps_only_its_flags(sent: str, allowed: frozenset[str] | None,
                                               forwarded: str | None) -> None:
    assert beta_header(sent, allowed) == forwarded
