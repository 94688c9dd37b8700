"""The official `openai` SDK against a real gateway: demo model, direct upstream, litellm path."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

MSG = [{"role": "user", "content": "hello gateway"}]


def test_demo_chat_is_deterministic_with_real_usage(client: openai.OpenAI) -> None:
    a = client.chat.completions.create(model="demo", messages=MSG)
    b = client.chat.completions.create(model="demo", messages=MSG)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert "hello gateway" in a.choices[0].message.content
    assert a.model == "demo"
    assert a.usage.prompt_tokens > 0 and a.usage.completion_tokens > 0
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


def test_demo_stream_with_usage(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="demo", messages=MSG)
    chunks = list(client.chat.completions.create(
        model="demo", messages=MSG, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="demo", messages=MSG, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_demo_n_tools_and_json_format(client: openai.OpenAI) -> None:
    two = client.chat.completions.create(model="demo", messages=MSG, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    called = client.chat.completions.create(model="demo", messages=MSG, tools=tools,
                                            tool_choice="required")
    assert called.choices[0].message.tool_calls[0].function.name == "lookup"
    js = client.chat.completions.create(model="demo", messages=MSG,
                                        response_format={"type": "json_object"})
    import json

    assert json.loads(js.choices[0].message.content) == {"echo": "hello gateway"}


def test_demo_max_tokens_truncates(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="demo", messages=MSG, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3


def test_demo_completions_and_embeddings(client: openai.OpenAI) -> None:
    c = client.completions.create(model="demo", prompt="say hi")
    assert c.choices[0].text.endswith("say hi") and c.usage.prompt_tokens > 0
    streamed = list(client.completions.create(model="demo", prompt="say hi", stream=True))
    assert "".join(x.choices[0].text for x in streamed if x.choices) == c.choices[0].text
    e = client.embeddings.create(model="demo-embed", input=["one", "two"])  # base64 by default
    assert len(e.data) == 2 and len(e.data[0].embedding) == 256
    again = client.embeddings.create(model="demo-embed", input="one", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(e.data[0].embedding, abs=1e-6)
    short = client.embeddings.create(model="demo-embed", input="one", dimensions=16)
    assert len(short.data[0].embedding) == 16
    assert e.usage.prompt_tokens >= 2


def test_models_list(client: openai.OpenAI) -> None:
    names = {m.id for m in client.models.list()}
    assert {"demo", "gpt-4o-mini", "claude-haiku"} <= names


def test_direct_upstream_gets_config_key_not_virtual_key(
        client: openai.OpenAI, upstream: FakeUpstream, app_key: str) -> None:
    upstream.clear()
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MSG, temperature=0.2,
                                       user="end-user-1")
    assert r.choices[0].message.content == "fake: hello gateway"
    assert r.model == "gpt-4o-mini"
    (seen,) = [q for q in upstream.requests if q["path"] == "/v1/chat/completions"]
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_OPENAI_KEY}"
    assert app_key not in str(seen)
    assert seen["body"]["temperature"] == 0.2 and seen["body"]["user"] == "end-user-1"


def test_direct_upstream_stream_and_embeddings(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=MSG, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "fake: hello gateway"
    assert chunks[-1].usage.total_tokens > 0
    assert all(c.model == "gpt-4o-mini" for c in chunks)
    e = client.embeddings.create(model="text-embedding-3-small", input="abc")
    assert len(e.data[0].embedding) == 8
    c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="xyz")
    assert c.choices[0].text == "fake: xyz"


def test_anthropic_through_litellm(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.clear()
    r = client.chat.completions.create(model="claude-haiku", messages=MSG, max_tokens=50)
    assert r.choices[0].message.content == "fake: hello gateway"
    assert r.model == "claude-haiku"
    assert r.usage.prompt_tokens > 0
    (seen,) = [q for q in upstream.requests if q["path"].endswith("/messages")]
    assert seen["headers"]["x-api-key"] == UPSTREAM_ANTHROPIC_KEY
    chunks = list(client.chat.completions.create(
        model="claude-haiku", messages=MSG, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "fake: hello gateway"
    assert any(c.usage for c in chunks)


async def test_async_client_chat_and_stream(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.chat.completions.create(model="demo", messages=MSG)
    assert "hello gateway" in r.choices[0].message.content
    stream = await aclient.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                                   stream=True)
    text = ""
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "fake: hello gateway"


def test_each_call_leaves_one_audit_event(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    rid = "sdk-audit-check-1"
    client.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                   extra_headers={"x-request-id": rid})
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["endpoint"] == "/v1/chat/completions"
    assert event["status_code"] == 200 and event["error_code"] is None
    assert event["model_requested"] == "gpt-4o-mini" and event["model_served"] == "gpt-4o-mini"
    assert event["deployment"] == "openai/gpt-4o-mini"
    assert event["input_tokens"] > 0 and event["output_tokens"] > 0
    assert event["key_id"].startswith("key_") and not event["stream"]
    assert event["completed_at"] >= event["received_at"]
    assert event["latency_ms"] > 0
    assert event["cost_nanos"] is not None and event["cost_nanos"] > 0


def test_stream_audit_event(client: openai.OpenAI, gateway: GatewayProcess) -> None:
    rid = "sdk-audit-stream-1"
    list(client.chat.completions.create(model="demo", messages=MSG, stream=True,
                                        extra_headers={"x-request-id": rid}))
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert bool(event["stream"]) and not event["partial"] and not event["cancelled"]
    assert event["status_code"] == 200 and event["output_tokens"] > 0
    assert event["first_byte_at"] is not None


def test_upstream_down_is_502_after_retries(client: openai.OpenAI, gateway: GatewayProcess
                                            ) -> None:
    rid = "sdk-broken-1"
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="broken", messages=MSG,
                                       extra_headers={"x-request-id": rid})
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_error"
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["status_code"] == 502 and event["attempts"] == 2
    assert "127.0.0.1" not in info.value.body["message"]
