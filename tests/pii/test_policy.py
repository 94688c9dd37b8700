"""The `pii` policy section, the text fields of OpenAI bodies, request/response redaction."""

from __future__ import annotations

import copy

import pytest

from gateway.pii import presidio
from gateway.pii.actions import PiiBlockedError, Redactor
from gateway.pii.policy import (
    PiiPolicy,
    PiiPolicyError,
    parse_pii_policy,
    redact_request,
    redact_response,
    restore_response,
    walk_response_texts,
    walk_texts,
)
from gateway.pii.stream import ChunkFilter

RULES = {"email": "redact", "phone": "redact"}


def test_parse_a_valid_section() -> None:
    policy = parse_pii_policy({"input": {"email": "redact", "credit_card": "block"},
                               "output": {"secret": "mask"}, "restore": True})
    assert policy == PiiPolicy({"email": "redact", "credit_card": "block"}, {"secret": "mask"},
                               True)
    assert policy.active
    assert parse_pii_policy(None) == PiiPolicy() and not PiiPolicy().active
    assert parse_pii_policy({"input": None}).input == {}
    with pytest.raises(TypeError):
        policy.input["email"] = "allow"  # type: ignore[index]


@pytest.mark.parametrize(("section", "lines"), [
    ({"input": {"emial": "redact"}}, ["pii.input.emial: unknown kind"]),
    ({"output": {"email": "erase"}}, ["pii.output.email: unknown action 'erase'"]),
    ({"input": {"email": False}}, ["pii.input.email: unknown action False"]),
    ({"input": ["email"]}, ["pii.input: must be a mapping of kind to action"]),
    ({"restore": "yes"}, ["pii.restore: must be true or false"]),
    ({"inputs": {}}, ["pii.inputs: unknown key"]),
    ("redact everything", ["pii: must be a mapping"]),
    ({"input": {"emial": "redact", "phone": "nope"}, "restore": 1},
     ["pii.input.emial: unknown kind", "pii.input.phone: unknown action 'nope'",
      "pii.restore: must be true or false"]),
])
def test_parse_errors_name_the_key(section: object, lines: list[str]) -> None:
    with pytest.raises(PiiPolicyError) as info:
        parse_pii_policy(section)
    assert len(info.value.lines) == len(lines)
    for got, want in zip(info.value.lines, lines, strict=True):
        assert got.startswith(want)


def test_person_and_location_need_presidio() -> None:
    assert presidio.available() is False  # not installed in this environment
    with pytest.raises(PiiPolicyError, match=r"pii.input.person: needs the optional presidio"):
        parse_pii_policy({"input": {"person": "redact"}})
    assert parse_pii_policy({"output": {"location": "redact"}}, ner_available=True).output == \
        {"location": "redact"}


CHAT = {
    "model": "gpt-4o-mini",
    "user": "bob@example.com",
    "metadata": {"ticket": "call 555-123-4567", "n": 3},
    "messages": [
        {"role": "system", "content": "You help bob@example.com."},
        {"role": "user", "name": "bob@example.com", "content": [
            {"type": "text", "text": "My number is 555-123-4567"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "thanks"},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"email\": \"eve@example.com\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "eve@example.com is at 555-987-6543"},
        {"role": "assistant", "content": "ok", "function_call": {
            "name": "f", "arguments": "{\"to\": \"bob@example.com\"}"}},
    ],
    "prediction": {"type": "content", "content": "to bob@example.com"},
}


def test_walk_texts_finds_every_text_of_a_chat_request_in_body_order() -> None:
    assert [f.path for f in walk_texts(CHAT, "chat")] == [
        "user",
        "metadata.ticket#name",
        "metadata.ticket",
        "metadata.n#name",
        "messages[0].content",
        "messages[1].name",
        "messages[1].content[0].text",
        "messages[1].content[1].image_url.url",
        "messages[1].content[2].text",
        "messages[2].tool_calls[0].function.arguments",
        "messages[3].content",
        "messages[4].content",
        "messages[4].function_call.arguments",
        "prediction.content",
    ]


@pytest.mark.parametrize(("body", "endpoint", "paths"), [
    ({"prompt": "hi bob@example.com", "suffix": "end"}, "completions", ["prompt", "suffix"]),
    ({"prompt": ["a", "b", [1, 2]]}, "completions", ["prompt[0]", "prompt[1]"]),
    ({"prompt": [1, 2, 3]}, "completions", []),
    ({"input": "one"}, "embeddings", ["input"]),
    ({"input": ["one", "two"], "user": "u"}, "embeddings", ["input[0]", "input[1]", "user"]),
    ({"input": [[1, 2]]}, "embeddings", []),
    # Shapes the schema does not expect are still text: every string leaf is scanned.
    ({"messages": "not a list"}, "chat", ["messages"]),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ["nested"]}]}]},
     "chat", ["messages[0].content[0].text[0]"]),
    ({"model": "m", "new_field": {"deep": ["x", 1, {"k": "y"}]}}, "chat",
     ["new_field.deep#name", "new_field.deep[0]", "new_field.deep[2].k#name",
      "new_field.deep[2].k"]),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "chat", []),
])
def test_walk_texts_other_shapes(body: dict, endpoint: str, paths: list[str]) -> None:
    assert [f.path for f in walk_texts(body, endpoint)] == paths


def test_walk_texts_rejects_an_unknown_endpoint() -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        list(walk_texts({}, "images"))


def test_redact_request_returns_a_new_body_and_never_mutates() -> None:
    before = copy.deepcopy(CHAT)
    redactor = Redactor()
    new, findings = redact_request(CHAT, "chat", RULES, redactor)
    assert before == CHAT
    assert new["user"] == "[EMAIL_1]"
    assert new["messages"][0]["content"] == "You help [EMAIL_1]."
    assert new["messages"][1]["name"] == "[EMAIL_1]"
    assert new["messages"][1]["content"][0]["text"] == "My number is [PHONE_1]"
    assert new["messages"][1]["content"][1] == CHAT["messages"][1]["content"][1]
    assert new["messages"][2]["tool_calls"][0]["function"]["arguments"] == \
        "{\"email\": \"[EMAIL_2]\"}"
    assert new["messages"][3]["content"] == "[EMAIL_2] is at [PHONE_2]"
    assert new["metadata"] == {"ticket": "call [PHONE_1]", "n": 3}
    assert "@example.com" not in repr(new)
    assert {(f.path, f.kind) for f in findings} >= {("user", "email"),
                                                    ("messages[3].content", "phone")}
    assert redactor.summary() == {"email": {"count": 7, "action": "redact"},
                                  "phone": {"count": 3, "action": "redact"}}


def test_redact_request_blocks() -> None:
    with pytest.raises(PiiBlockedError):
        redact_request(CHAT, "chat", {"phone": "block"}, Redactor())


def test_responses_are_redacted_and_restored_without_mutation() -> None:
    redactor = Redactor()
    redact_request({"messages": [{"role": "user", "content": "I am bob@example.com"}]}, "chat",
                   RULES, redactor)
    resp = {"id": "x", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Hello [EMAIL_1], call 555-000-1111",
        "tool_calls": [{"function": {"name": "f", "arguments": "{\"a\": \"[EMAIL_1]\"}"}}]}}]}
    before = copy.deepcopy(resp)
    redacted, findings = redact_response(resp, "chat", {"phone": "mask"}, redactor)
    assert [f.path for f in findings] == ["choices[0].message.content"]
    restored = restore_response(redacted, "chat", redactor)
    assert resp == before
    assert restored["choices"][0]["message"]["content"] == \
        "Hello bob@example.com, call ********1111"
    assert restored["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == \
        "{\"a\": \"bob@example.com\"}"
    completion = {"choices": [{"index": 0, "text": "to [EMAIL_1]"}]}
    assert [f.path for f in walk_response_texts(completion, "completions")] == ["choices[0].text"]
    assert restore_response(completion, "completions", redactor)["choices"][0]["text"] == \
        "to bob@example.com"


def _chunk(content: str | None = None, finish: str | None = None, **delta: object) -> dict:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {"id": "c", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


def test_chunk_filter_restores_and_redacts_a_chat_stream() -> None:
    redactor = Redactor()
    redact_request({"messages": [{"role": "user", "content": "I am bob@example.com"}]}, "chat",
                   RULES, redactor)
    chunks = ChunkFilter("chat", {"phone": "redact"}, redactor, restore=True)
    upstream = [_chunk("Hi [EMA"), _chunk("IL_1], call 555-"), _chunk("000-1111 now"),
                _chunk(tool_calls=[{"index": 0, "function": {"arguments": "{\"to\": \"[EM"}}]),
                _chunk(tool_calls=[{"index": 0, "function": {"arguments": "AIL_1]\"}"}}]),
                _chunk(finish="stop")]
    before = copy.deepcopy(upstream)
    out = [chunks.feed(c) for c in upstream]
    assert upstream == before
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out)
    args = "".join(call["function"]["arguments"] for c in out
                   for call in c["choices"][0]["delta"].get("tool_calls", []))
    assert text == "Hi bob@example.com, call [PHONE_1] now"
    assert args == "{\"to\": \"bob@example.com\"}"
    assert out[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks.flush() == []


def test_chunk_filter_flushes_a_stream_without_finish_reason() -> None:
    chunks = ChunkFilter("completions", {"email": "redact"}, Redactor())
    first = chunks.feed({"id": "x", "choices": [{"index": 0, "text": "mail bob@example.com"}]})
    assert first["choices"][0]["text"] == "mail "
    rest = chunks.flush()
    assert rest == [{"id": "x", "choices": [{"index": 0, "finish_reason": None,
                                             "text": "[EMAIL_1]"}]}]


def _choice(index: int, finish: str | None = None, **delta: object) -> dict:
    return {"index": index, "delta": dict(delta), "logprobs": None, "finish_reason": finish}


# (chunk the upstream sends while "sk" is held, the choices the client gets; None: nothing)
HELD_CHUNKS = {
    "only held text: nothing is sent": ([_choice(0, content="sk")], None),
    "the first chunk keeps its role": (
        [_choice(0, role="assistant", content="sk")], [_choice(0, role="assistant", content="")]),
    "a tool call keeps its id and name": (
        [_choice(0, tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "f", "arguments": "sk"}}])],
        [_choice(0, tool_calls=[{"index": 0, "id": "call_1", "type": "function",
                                 "function": {"name": "f", "arguments": ""}}])]),
    "a held choice is left out, the other one is sent": (
        [_choice(0, content="sk"), _choice(1, content="Hi")], [_choice(1, content="Hi")]),
    "an empty delta the upstream sent is passed on": (
        [_choice(0, content="")], [_choice(0, content="")]),
}


@pytest.mark.parametrize("case", HELD_CHUNKS.values(), ids=HELD_CHUNKS.keys())
def test_chunk_filter_sends_no_delta_that_became_empty(case: tuple) -> None:
    choices, expected = case
    chunks = ChunkFilter("chat", {"secret": "redact"}, Redactor())
    out = chunks.feed({"id": "c", "object": "chat.completion.chunk", "choices": choices})
    assert (out if out is None else out["choices"]) == expected


def test_chunk_filter_keeps_a_usage_chunk_whose_text_is_held() -> None:
    chunks = ChunkFilter("chat", {"secret": "redact"}, Redactor())
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    out = chunks.feed({"id": "c", "choices": [_choice(0, content="sk")], "usage": usage})
    assert out == {"id": "c", "choices": [], "usage": usage}


def test_chunk_filter_is_a_no_op_without_rules_or_restore() -> None:
    chunks = ChunkFilter("chat", {}, Redactor(), restore=True)  # nothing to restore
    chunk = _chunk("bob@example.com")
    assert chunks.feed(chunk) is chunk
