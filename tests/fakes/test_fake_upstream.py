"""Self-tests for the fake upstream provider (tests/fakes/upstream.py)."""

from __future__ import annotations

import base64
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .upstream import FakeUpstream, parse_fault

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(name="up-a").start()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "upstream" in request.fixturenames:
        up = request.getfixturevalue("upstream")
        up.clear()
        up.set_fault(None)


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    c = openai.OpenAI(base_url=upstream.url + "/v1", api_key="x", max_retries=0, timeout=10)
    try:
        yield c
    finally:
        c.close()


def fault(spec: str) -> dict[str, str]:
    return {"x-fake-fault": spec}


# --------------------------------------------------------------------------- OpenAI protocol


def test_chat_plain(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "you are terse"},
            {"role": "user", "content": "hello there world"},
        ],
    )
    assert raw.headers["x-fake-name"] == "up-a"
    resp = raw.parse()
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == "gpt-4o-mini"
    assert isinstance(resp.created, int)
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "fake: hello there world"
    # 3 + 3 words + 1 per message; reply has 4 words
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 8
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == 12


def test_chat_content_parts_and_n(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="m",
        n=3,
        messages=[
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert {c.message.content for c in resp.choices} == {"fake: second question"}
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 1 + 1 + 2 + 3
    assert resp.usage.completion_tokens == 3 * 3


@pytest.mark.parametrize(
    "tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
def test_chat_forced_tool_call(client: openai.OpenAI, tool_choice: object) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {}}},
        {"type": "function", "function": {"name": "other", "parameters": {}}},
    ]
    resp = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice=tool_choice,  # type: ignore[arg-type]
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert call.function.arguments == "{}"

    # tools without forcing -> plain text
    resp = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    assert resp.choices[0].message.content == "fake: weather?"


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "tell me  a story"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content == ""
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    reply = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert reply == "fake: tell me  a story"
    assert len(content_chunks) == 5  # one per word
    finish = chunks[-2]
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 5
    assert last.usage.completion_tokens == 5
    assert last.usage.total_tokens == 10


def test_chat_stream_without_usage_raw_sse(upstream: FakeUpstream) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a b"}]}
    r = httpx.post(upstream.url + "/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = r.text.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    assert '"usage"' not in r.text
    # role chunk + 3 words + finish chunk + [DONE]
    assert len(events) - 1 == 6


def test_completions(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert resp.object == "text_completion"
    assert resp.id.startswith("cmpl-")
    assert resp.choices[0].text == "fake: say hi"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (2, 3)

    resp = client.completions.create(model="m", prompt=["one", "two three"])
    assert [c.text for c in resp.choices] == ["fake: one", "fake: two three"]

    stream = client.completions.create(
        model="m", prompt="stream me", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "fake: stream me"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    # SDK default: asks for base64 and decodes it into floats
    resp = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert upstream.requests[-1]["body"]["encoding_format"] == "base64"
    assert [d.index for d in resp.data] == [0, 1]
    vec_a = resp.data[0].embedding
    assert len(vec_a) == 8
    assert all(isinstance(v, float) for v in vec_a)
    assert abs(sum(v * v for v in vec_a) - 1.0) < 1e-4
    assert vec_a != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 2
    assert resp.usage.total_tokens == 2

    # explicit float format gives identical numbers, deterministic across calls
    again = client.embeddings.create(model="m", input="alpha", encoding_format="float")
    assert again.data[0].embedding == vec_a

    wide = client.embeddings.create(model="m", input="alpha", dimensions=16)
    assert len(wide.data[0].embedding) == 16

    tokens = client.embeddings.create(model="m", input=[1, 2, 3])
    assert len(tokens.data) == 1
    assert tokens.usage.prompt_tokens == 3

    # raw base64 payload is little-endian float32
    r = httpx.post(
        upstream.url + "/v1/embeddings",
        json={"model": "m", "input": "alpha", "encoding_format": "base64"},
    )
    blob = base64.b64decode(r.json()["data"][0]["embedding"])
    assert list(struct.unpack("<8f", blob)) == vec_a


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert "gpt-4o-mini" in ids
    assert all(m.owned_by == "up-a" for m in models.data)


# --------------------------------------------------------------------------- faults


def test_status_500(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers=fault("status:500"),
        )
    assert exc.value.status_code == 500
    assert exc.value.response.headers["x-fake-name"] == "up-a"
    body = exc.value.response.json()
    assert body["error"]["type"] == "server_error"
    assert "message" in body["error"]


def test_status_429_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers=fault("status:429"),
        )
    assert exc.value.response.headers["retry-after"] == "1"
    assert exc.value.response.json()["error"]["code"] == "rate_limit_exceeded"

    r = httpx.post(
        str(client.base_url) + "chat/completions",
        json={"model": "m", "messages": []},
        headers=fault("status:429:retry=2"),
    )
    assert r.status_code == 429
    assert r.headers["retry-after"] == "2"


def test_drop_after_cuts_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "one two three four five"}],
        stream=True,
        extra_headers=fault("drop-after:2"),
    )
    received = []
    # The connection is aborted mid chunked body. The SDK yields exactly the 2 chunks that
    # were sent, then raises APIConnectionError (wrapping the HTTP client's
    # RemoteProtocolError "incomplete chunked read"); no finish chunk, no [DONE].
    with pytest.raises(openai.APIConnectionError) as exc:
        for chunk in stream:
            received.append(chunk)
    cause = exc.value.__cause__
    assert type(cause).__name__ == "RemoteProtocolError"
    assert "incomplete chunked read" in str(cause)
    assert len(received) == 2
    assert received[0].choices[0].delta.role == "assistant"
    assert received[1].choices[0].delta.content == "fake:"
    assert all(c.choices[0].finish_reason is None for c in received)


def test_drop_non_stream_and_stall(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers=fault("drop-after:0"),
        )
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], extra_headers=fault("stall")
        )
    assert 0.4 < time.monotonic() - t0 < 5


def test_delay_and_chunk_delay(upstream: FakeUpstream) -> None:
    url = upstream.url + "/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c"}]}
    t0 = time.monotonic()
    r = httpx.post(url, json=body, headers=fault("delay:300"))
    assert r.status_code == 200
    assert time.monotonic() - t0 >= 0.3

    stamps = []
    with httpx.stream(
        "POST", url, json={**body, "stream": True}, headers=fault("chunk-delay:100")
    ) as r:
        t0 = time.monotonic()
        for line in r.iter_lines():
            if line:
                stamps.append(time.monotonic() - t0)
    # role + 4 words + finish + [DONE] = 7 events, 6 gaps of 100 ms
    assert len(stamps) == 7
    assert stamps[-1] - stamps[0] >= 0.55


def test_default_fault_and_runtime_changes(upstream: FakeUpstream) -> None:
    url = upstream.url + "/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}

    upstream.set_fault("status:503")
    assert httpx.post(url, json=body).status_code == 503
    # the request header wins over the server default; "none" disables the default
    assert httpx.post(url, json=body, headers=fault("none")).status_code == 200
    assert httpx.post(url, json=body, headers=fault("status:502")).status_code == 502

    r = httpx.put(upstream.url + "/_fake/fault", json={"fault": "status:500"})
    assert r.json() == {"fault": "status:500"}
    assert httpx.post(url, json=body).status_code == 500
    assert httpx.get(upstream.url + "/_fake/fault").json() == {"fault": "status:500"}
    httpx.put(upstream.url + "/_fake/fault", json={"fault": None})
    assert httpx.post(url, json=body).status_code == 200

    assert httpx.put(upstream.url + "/_fake/fault", json={"fault": "bogus"}).status_code == 400
    assert httpx.post(url, json=body, headers=fault("bogus")).status_code == 400

    with FakeUpstream(fault="status:500", name="broken") as broken:
        r = httpx.post(broken.url + "/v1/chat/completions", json=body)
        assert r.status_code == 500
        assert r.headers["x-fake-name"] == "broken"


def test_parse_fault() -> None:
    f = parse_fault("delay:5, chunk-delay:7,drop-after:3")
    assert (f.delay_ms, f.chunk_delay_ms, f.drop_after, f.status) == (5, 7, 3, None)
    assert parse_fault("status:429").retry_after == "1"
    assert parse_fault("status:500").retry_after is None
    assert parse_fault("status:503:retry=9").retry_after == "9"
    assert not parse_fault(None).active
    assert not parse_fault("none").active
    for bad in ("status:abc", "delay:-1", "explode", "status:429:wait=1"):
        with pytest.raises(ValueError):
            parse_fault(bad)


# --------------------------------------------------------------------------- recording


def test_recording(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "rec"}], extra_headers={"X-Trace": "t1"}
    )
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers=fault("status:500"),
        )
    httpx.get(upstream.url + "/nope")

    reqs = upstream.requests
    assert [(r["method"], r["path"]) for r in reqs] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/nope"),
    ]
    first = reqs[0]
    assert first["headers"]["x-trace"] == "t1"
    assert first["headers"]["authorization"] == "Bearer x"
    assert all(k == k.lower() for k in first["headers"])
    assert first["body"] == {"model": "m", "messages": [{"role": "user", "content": "rec"}]}
    assert reqs[1]["headers"]["x-fake-fault"] == "status:500"

    over_http = httpx.get(upstream.url + "/_fake/requests").json()["data"]
    assert over_http == reqs  # control endpoints are not recorded themselves
    assert httpx.delete(upstream.url + "/_fake/requests").status_code == 200
    assert upstream.requests == []
    client.models.list()
    assert len(upstream.requests) == 1
    upstream.clear()
    assert upstream.requests == []


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_raw(upstream: FakeUpstream) -> None:
    body = {
        "model": "claude-3-5-haiku-20241022",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    }
    for path in ("/v1/messages", "/messages"):
        r = httpx.post(upstream.url + path, json=body)
        msg = r.json()
        assert msg["id"].startswith("msg_")
        assert msg["type"] == "message"
        assert msg["content"] == [{"type": "text", "text": "fake: hi there"}]
        assert msg["stop_reason"] == "end_turn"
        assert msg["stop_sequence"] is None
        assert msg["usage"] == {"input_tokens": 2 + 1 + 2 + 1, "output_tokens": 3}

    r = httpx.post(upstream.url + "/v1/messages", json={**body, "stream": True})
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    r = httpx.post(upstream.url + "/v1/messages", json=body, headers=fault("status:529"))
    assert r.status_code == 529
    assert r.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "fake upstream 'up-a': injected HTTP 529"},
    }


async def test_litellm_anthropic(upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hello there"},
    ]
    resp = await litellm.acompletion(
        model="anthropic/claude-3-5-haiku-20241022",
        api_base=upstream.url,
        api_key="x",
        messages=messages,
    )
    assert resp.choices[0].message.content == "fake: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 2 + 1 + 2 + 1
    assert resp.usage.completion_tokens == 3

    req = upstream.requests[-1]
    assert req["path"] == "/v1/messages"
    assert req["headers"]["x-api-key"] == "x"
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert req["body"]["system"] == [{"type": "text", "text": "be nice"}]

    stream = await litellm.acompletion(
        model="anthropic/claude-3-5-haiku-20241022",
        api_base=upstream.url,
        api_key="x",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        usage = getattr(chunk, "usage", None) or usage
    assert "".join(parts) == "fake: hello there"
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == 3
    assert upstream.requests[-1]["body"]["stream"] is True


# --------------------------------------------------------------------------- as a process


def test_cli_process() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.upstream",
            "--port",
            "0",
            "--name",
            "proc",
            "--fault",
            "status:418",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        r = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.status_code == 418
        assert r.headers["x-fake-name"] == "proc"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()
