"""What every `/v1` answer carries: `x-ratelimit-*` for a limited key whatever the status, and
a usage chunk for a stream that asked for one even when the upstream sent none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

LIMITED = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
           "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
           "x-ratelimit-remaining-tokens")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    up = FakeUpstream(name="every-answer").start()
    # `faulty` goes to a server that ignores stream_options, as some do
    quiet = FakeUpstream(name="no-usage", fault="no-usage").start()
    work: Path = tmp_path_factory.mktemp("every-answer")
    gw = GatewayProcess(work, standard_config(up.url, quiet.url), env=GATEWAY_ENV).start()
    try:
        yield gw
    finally:
        gw.stop()
        up.stop()
        quiet.stop()


@pytest.fixture(scope="module")
def limited(gateway: GatewayProcess) -> str:
    gateway.create_team(name="metered", rpm=1000)
    return gateway.create_key(name="metered-app", team="metered", tpm=100000,
                              models=["gpt-4o-mini", "broken", "demo"])["key"]


CASES = [
    ("200 chat", "POST", "/v1/chat/completions",
     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, 200),
    ("400 bad body", "POST", "/v1/chat/completions", {"model": "gpt-4o-mini"}, 400),
    ("400 invalid json", "POST", "/v1/chat/completions", b"{nope", 400),
    ("404 unknown model", "POST", "/v1/chat/completions",
     {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ("403 model not allowed", "POST", "/v1/embeddings",
     {"model": "demo-embed", "input": "hi"}, 403),
    ("502 upstream down", "POST", "/v1/chat/completions",
     {"model": "broken", "messages": [{"role": "user", "content": "hi"}]}, 502),
    ("200 model list", "GET", "/v1/models", None, 200),
    ("200 one model", "GET", "/v1/models/demo", None, 200),
    ("404 one model", "GET", "/v1/models/nothing", None, 404),
]


@pytest.mark.parametrize("name,method,path,body,status", CASES, ids=[c[0] for c in CASES])
def test_every_answer_to_a_limited_key_has_the_ratelimit_headers(
        gateway: GatewayProcess, limited: str, name: str, method: str, path: str,
        body: object, status: int) -> None:
    headers = {"authorization": f"Bearer {limited}"}
    content = body if isinstance(body, bytes) else None
    r = httpx.request(method, gateway.url + path, headers=headers, timeout=60,
                      json=None if content is not None else body, content=content)
    assert r.status_code == status, r.text
    for header in LIMITED:
        assert header in r.headers, (header, dict(r.headers))
    assert int(r.headers["x-ratelimit-limit-requests"]) == 1000
    assert int(r.headers["x-ratelimit-limit-tokens"]) == 100000


def test_a_429_has_them_too(gateway: GatewayProcess) -> None:
    key = gateway.create_key(name="one-a-minute", rpm=1)["key"]
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers,
                      timeout=30).status_code == 200
    refused = httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=headers,
                         timeout=30)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["retry-after"]


def test_an_unlimited_key_gets_none(gateway: GatewayProcess) -> None:
    key = gateway.create_key(name="free")["key"]
    r = httpx.post(gateway.url + "/v1/chat/completions", json={"model": "nope"},
                   headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 400 and not any(h.startswith("x-ratelimit") for h in r.headers)


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_a_stream_that_asked_for_usage_gets_it_when_the_upstream_sends_none(
        gateway: GatewayProcess, kind: str) -> None:
    rid = "usage-" + uuid.uuid4().hex[:12]
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.admin_key,
                           max_retries=0, default_headers={"x-request-id": rid})
    if kind == "chat":
        chunks = list(client.chat.completions.create(
            model="faulty", messages=[{"role": "user", "content": "count these words"}],
            stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        chunks = list(client.completions.create(
            model="faulty", prompt="count these words", stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert text.startswith("fake: count these words")
    (event,) = gateway.wait_for_audit("request_id = :r", {"r": rid})
    assert event["usage_source"] == "estimated"
    assert (event["input_tokens"], event["output_tokens"]) == (usage.prompt_tokens,
                                                               usage.completion_tokens)
