"""Hypothesis strategies for the request bodies the gateway accepts, and for hostile edits of
them: a valid body with one field, at any depth, replaced by an arbitrary JSON value (the
shape of bug that made `{"role": {}}` a 500)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

TEXT = st.text(max_size=40)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12)
# Values that have broken validators before: unhashable, wrong-typed, boundary, huge.
TRICKY = st.sampled_from([{}, [], [{}], {"": None}, None, True, 0, -1, 2**63, 1e308, "",
                          "\u0000", "x" * 300, ["none"], {"type": "function"},
                          {"type": "function", "function": {"name": {}}}])
ANY_VALUE = TRICKY | JSON

MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer"]),
     "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"),
                                                        "text": TEXT}), min_size=1,
                                 max_size=2)})
TOOL = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": st.sampled_from(["get_weather", "lookup"])},
    optional={"parameters": st.just({"type": "object", "properties": {}})})})
COMMON = {"stream": st.booleans(), "max_tokens": st.integers(1, 32),
          "temperature": st.floats(0, 2), "n": st.integers(1, 2), "user": TEXT,
          "stop": TEXT | st.lists(TEXT, max_size=4)}

CHAT = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "gpt-4o-mini", "claude-haiku"]),
     # ending with the user's turn: Anthropic refuses a conversation without one (a clear 400)
     "messages": st.lists(MESSAGE, max_size=3).map(
         lambda ms: [*ms, {"role": "user", "content": "hi"}])},
    optional={**COMMON, "tools": st.lists(TOOL, min_size=1, max_size=2),
              "tool_choice": st.sampled_from(["none", "auto", "required"])
              | st.fixed_dictionaries({"type": st.just("function"), "function":
                                       st.fixed_dictionaries({"name": st.sampled_from(
                                           ["get_weather", "lookup", "missing"])})}),
              "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
              "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
              "template": st.fixed_dictionaries(
                  {"name": st.just("fz-seed"), "variables": st.fixed_dictionaries(
                      {"topic": TEXT}, optional={"count": st.integers(0, 5),
                                                 "tier": st.sampled_from(["free", "pro"])})})})
COMPLETION = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "gpt-3.5-turbo-instruct"]),
     "prompt": TEXT | st.lists(TEXT, min_size=1, max_size=3)
     | st.lists(st.integers(0, 50_000), min_size=1, max_size=20)
     | st.lists(st.lists(st.integers(0, 50_000), min_size=1, max_size=5), min_size=1,
                max_size=3)},
    optional={**COMMON, "echo": st.booleans(), "suffix": TEXT})
EMBEDDINGS = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo-embed", "text-embedding-3-small"]),
     "input": TEXT | st.lists(TEXT, min_size=1, max_size=3)
     | st.lists(st.integers(0, 50_000), min_size=1, max_size=20)},
    optional={"encoding_format": st.sampled_from(["float", "base64"]),
              "dimensions": st.integers(1, 64), "user": TEXT})

ITEM = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer"]),
     "content": TEXT | st.lists(st.fixed_dictionaries({"type": st.just("input_text"),
                                                        "text": TEXT}), min_size=1,
                                 max_size=2)},
    optional={"type": st.just("message")})
FLAT_TOOL = st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.sampled_from(["get_weather", "lookup"])},
    optional={"parameters": st.just({"type": "object", "properties": {}})})
RESPONSES = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "gpt-4o-mini", "claude-haiku"]),
     "input": TEXT | st.lists(ITEM, max_size=3).map(
         lambda items: [*items, {"role": "user", "content": "hi"}])},
    optional={"stream": st.booleans(), "store": st.booleans(), "instructions": TEXT,
              "max_output_tokens": st.integers(1, 32), "temperature": st.floats(0, 2),
              "user": TEXT, "tools": st.lists(FLAT_TOOL, min_size=1, max_size=2),
              "tool_choice": st.sampled_from(["none", "auto", "required"])
              | st.fixed_dictionaries({"type": st.just("function"), "name": st.sampled_from(
                  ["get_weather", "lookup", "missing"])}),
              "text": st.sampled_from([{"format": {"type": "text"}},
                                       {"format": {"type": "json_object"}}]),
              "metadata": st.dictionaries(TEXT, TEXT, max_size=3),
              "prompt": st.fixed_dictionaries({"id": st.just("fz-seed"), "variables":
                                               st.fixed_dictionaries({"topic": TEXT})})})

# Anthropic Messages: turns alternate and end with the user's; blocks of text
A_TEXT = st.fixed_dictionaries({"type": st.just("text"), "text": TEXT},
                               optional={"cache_control": st.just({"type": "ephemeral"})})
A_TURN = TEXT | st.lists(A_TEXT, min_size=1, max_size=2)
A_TOOL = st.fixed_dictionaries({"name": st.sampled_from(["lookup", "get_weather"]),
                                "input_schema": st.just({"type": "object", "properties": {}})},
                               optional={"description": TEXT})
MESSAGES = st.fixed_dictionaries(
    {"model": st.sampled_from(["demo", "gpt-4o-mini", "claude-haiku"]),
     "max_tokens": st.integers(1, 32),
     "messages": st.lists(st.tuples(A_TURN, A_TURN), max_size=2).map(
         lambda pairs: [m for u, a in pairs for m in ({"role": "user", "content": u},
                                                     {"role": "assistant", "content": a})]
         + [{"role": "user", "content": "hi"}])},
    optional={"stream": st.booleans(), "temperature": st.floats(0, 1),
              "top_p": st.floats(0, 1), "top_k": st.integers(0, 50),
              "system": TEXT | st.lists(A_TEXT, min_size=1, max_size=2),
              "stop_sequences": st.lists(TEXT, max_size=3),
              "tools": st.lists(A_TOOL, min_size=1, max_size=2, unique_by=lambda t: t["name"]),
              "tool_choice": st.sampled_from([{"type": "auto"}, {"type": "none"}]),
              "thinking": st.just({"type": "enabled", "budget_tokens": 1024}),
              "metadata": st.fixed_dictionaries({"user_id": TEXT})})

BODIES = {"/v1/chat/completions": CHAT, "/v1/completions": COMPLETION,
          "/v1/embeddings": EMBEDDINGS, "/v1/responses": RESPONSES,
          "/v1/messages": MESSAGES}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value that an edit may replace (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.append((*prefix, i))
            out.extend(_paths(item, (*prefix, i)))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@st.composite
def edited(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body with one field replaced by any JSON value, or one field added."""
    body = draw(bodies)
    if draw(st.booleans()):
        where = draw(st.sampled_from(_paths(body)))
        return _replace(body, where, draw(ANY_VALUE))
    name = draw(st.sampled_from(["tool_choice", "tools", "response_format", "stream_options",
                                 "template", "n", "logit_bias", "metadata", "functions",
                                 "parallel_tool_calls", "prompt", "input", "messages",
                                 "text", "reasoning", "instructions", "previous_response_id",
                                 "include", "max_output_tokens", "system", "thinking",
                                 "max_tokens", "stop_sequences"]))
    return {**body, name: draw(ANY_VALUE)}
