"""DESIGN.md "Failure answers" through real `gateway serve` processes and the official `openai`
client: a provider's 429 reaches the client as a `RateLimitError` whose `Retry-After` tells the
truth (and the SDK's own retry after it succeeds); a Retry-After holds on every replica that
shares the Redis; a connect that times out is a 504 `upstream_timeout`; a stream whose
deployment hangs falls back like a non-stream request does.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from tests.conftest import GATEWAY_ENV
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess
from tests.support.unaccepting_port import UnacceptingPort

MSG = [{"role": "user", "content": "hello there"}]
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
# Short enough that the windows the fakes ask for (2-3 s) do not fit: the gateway answers at once.
SHORT_DEADLINE = {"strategy": "ordered", "retries": 2, "total_timeout_s": 1.5, "cooldown_s": 30,
                  "failures_to_cooldown": 100}
FAKES = {"busy": "status:429:retry=3", "recovering": "status:429:retry=2",
         "shared": "status:429:retry=3", "stalled": "stall", "steady": None}


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, FakeUpstream]]:
    out = {name: FakeUpstream(name=name, fault=fault).start() for name, fault in FAKES.items()}
    yield out
    for up in out.values():
        up.stop()


@pytest.fixture(scope="module")
def unaccepting() -> Iterator[UnacceptingPort]:
    with UnacceptingPort() as port:
        yield port


def _model(name: str, up: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {"name": name, "deployments": [{"model": f"openai/{name}",
                                           "api_base": up.url + "/v1", **extra}]}


def _start(workdir: Path, models: list[dict[str, Any]], router: dict[str, Any],
           env: dict[str, str] | None = None) -> GatewayProcess:
    config = yaml.safe_dump({"models": models, "router": router})
    return GatewayProcess(workdir, config, env={**GATEWAY_ENV, **(env or {})}).start()


@pytest.fixture(scope="module")
def gw_limited(tmp_path_factory: pytest.TempPathFactory,
               ups: dict[str, FakeUpstream]) -> Iterator[GatewayProcess]:
    proc = _start(tmp_path_factory.mktemp("limited"),
                  [_model("busy", ups["busy"]), _model("recovering", ups["recovering"])],
                  SHORT_DEADLINE)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, ups: dict[str, FakeUpstream],
       unaccepting: UnacceptingPort) -> Iterator[GatewayProcess]:
    models = [
        {"name": "unreachable", "deployments": [
            {"model": "openai/nowhere", "api_base": unaccepting.url + "/v1",
             "connect_timeout_s": 0.5}]},
        {"name": "unreachable-claude", "deployments": [
            {"model": "anthropic/claude-3-5-haiku-20241022", "api_base": unaccepting.url,
             "api_key": "env:FAKE_ANTHROPIC_KEY", "connect_timeout_s": 0.5, "timeout_s": 1}]},
        # a non-stream try ends after 0.5 s; first_token_timeout_s keeps its default (30 s)
        {**_model("hangs", ups["stalled"], timeout_s=0.5), "fallbacks": ["steady"]},
        _model("steady", ups["steady"]),
    ]
    proc = _start(tmp_path_factory.mktemp("faults"), models,
                  {"retries": 2, "total_timeout_s": 20, "cooldown_s": 30,
                   "failures_to_cooldown": 100})
    yield proc
    proc.stop()


def sdk(proc: GatewayProcess, *, max_retries: int = 0) -> openai.OpenAI:
    key = proc.create_key(name="faults")["key"]
    return openai.OpenAI(base_url=proc.base_url, api_key=key, max_retries=max_retries,
                         timeout=60)


def hit_times(up: FakeUpstream) -> list[float]:
    return [r["time"] for r in up.requests if r["path"].endswith("/chat/completions")]


def audit(proc: GatewayProcess, rid: str) -> dict[str, Any]:
    (event,) = proc.wait_for_audit("request_id = :r", {"r": rid})
    return event


def clear_fault_after_first_hit(up: FakeUpstream) -> None:
    def watch() -> None:
        deadline = time.monotonic() + 20
        while not hit_times(up) and time.monotonic() < deadline:
            time.sleep(0.002)
        up.set_fault(None)

    threading.Thread(target=watch, daemon=True).start()


def ask(client: openai.OpenAI, model: str, rid: str) -> str:
    reply = client.chat.completions.create(model=model, messages=MSG,
                                           extra_headers={"x-request-id": rid})
    return reply.choices[0].message.content or ""


# ------------------------------------------------------------------ the providers' rate limits

def test_a_provider_429_is_a_rate_limit_error_whose_retry_after_tells_the_truth(
        gw_limited: GatewayProcess, ups: dict[str, FakeUpstream]) -> None:
    busy = ups["busy"]
    client = sdk(gw_limited)
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as first:
        ask(client, "busy", "rl-first")
    assert time.monotonic() - started < 1.0  # a 3 s window past the deadline: not waited for
    assert first.value.status_code == 429
    assert first.value.response.headers["retry-after"] == "3"
    assert first.value.body["type"] == "rate_limit_error"
    assert first.value.body["code"] == "rate_limit_exceeded"
    assert set(first.value.body) == {"message", "type", "param", "code"}
    (asked_at,) = hit_times(busy)

    # while the rest of the window is longer than the deadline: answered at once, counting
    # down, and nothing reaches the provider
    counted: list[int] = []
    i = 0
    while time.time() < asked_at + 1.2:
        with pytest.raises(openai.RateLimitError) as again:
            ask(client, "busy", f"rl-again-{i}")
        counted.append(int(again.value.response.headers["retry-after"]))
        i += 1
        time.sleep(0.1)
    assert hit_times(busy) == [asked_at]
    assert counted == sorted(counted, reverse=True) and set(counted) == {3, 2}
    # once the rest fits in the deadline, the gateway waits for the end and asks again
    time.sleep(max(0.0, asked_at + 2.0 - time.time()))
    with pytest.raises(openai.RateLimitError) as last:
        ask(client, "busy", "rl-waited")
    assert last.value.response.headers["retry-after"] == "3"  # the provider's new window
    first, second = hit_times(busy)
    assert second >= first + 3.0

    event = audit(gw_limited, "rl-first")
    assert (event["status_code"], event["error_code"], event["attempts"]) == \
        (429, "rate_limit_exceeded", 1)
    event = audit(gw_limited, "rl-again-0")
    assert (event["status_code"], event["error_code"], event["attempts"]) == \
        (429, "rate_limit_exceeded", 0)
    assert audit(gw_limited, "rl-waited")["attempts"] == 1


def test_the_sdk_retries_after_retry_after_and_gets_the_answer(
        gw_limited: GatewayProcess, ups: dict[str, FakeUpstream]) -> None:
    recovering = ups["recovering"]  # 429 with Retry-After: 2, then well once asked
    clear_fault_after_first_hit(recovering)
    client = sdk(gw_limited, max_retries=1)
    started = time.monotonic()
    assert ask(client, "recovering", "rl-sdk-retry") == "fake: hello there"
    assert 2.0 <= time.monotonic() - started < 6
    first, second = hit_times(recovering)
    assert second - first >= 2.0
    rows = gw_limited.wait_for_audit("request_id = 'rl-sdk-retry'", count=2)
    assert [r["status_code"] for r in rows] == [429, 200]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory,
             ups: dict[str, FakeUpstream]) -> Iterator[list[GatewayProcess]]:
    if not REDIS_URL:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set: run the suite with `make test`, which "
                    "starts Redis on loopback")
    procs: list[GatewayProcess] = []
    try:
        for i in range(2):
            procs.append(_start(tmp_path_factory.mktemp(f"replica{i}"),
                                [_model("shared", ups["shared"])], SHORT_DEADLINE,
                                env={"GATEWAY_REDIS_URL": REDIS_URL}))
        yield procs
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.redis
def test_a_retry_after_seen_by_one_replica_holds_on_the_others(
        replicas: list[GatewayProcess], ups: dict[str, FakeUpstream]) -> None:
    shared = ups["shared"]  # 429 with Retry-After: 3
    a, b = (sdk(proc) for proc in replicas)
    with pytest.raises(openai.RateLimitError) as seen_by_a:
        ask(a, "shared", "replica-a")
    assert seen_by_a.value.response.headers["retry-after"] == "3"
    (asked_at,) = hit_times(shared)
    i = 0
    while time.time() < asked_at + 1.2:  # the rest of A's window is longer than B's deadline
        with pytest.raises(openai.RateLimitError) as seen_by_b:
            ask(b, "shared", f"replica-b-{i}")
        assert seen_by_b.value.response.headers["retry-after"] in ("3", "2")
        i += 1
        time.sleep(0.1)
    assert hit_times(shared) == [asked_at]  # replica B sent nothing inside A's window
    shared.set_fault(None)
    time.sleep(max(0.0, asked_at + 2.0 - time.time()))
    assert ask(b, "shared", "replica-b-after") == "fake: hello there"  # B waited for the end
    assert hit_times(shared)[1] >= asked_at + 3.0


# ------------------------------------------------------------------ timeouts

@pytest.mark.parametrize("model,stream", [
    ("unreachable", False), ("unreachable", True), ("unreachable-claude", False),
])
def test_a_connect_timeout_is_a_504_upstream_timeout(gw: GatewayProcess, model: str,
                                                     stream: bool) -> None:
    client = sdk(gw)
    rid = f"connect-timeout-{model}-{stream}"
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        if stream:
            list(client.chat.completions.create(model=model, messages=MSG, stream=True,
                                                extra_headers={"x-request-id": rid}))
        else:
            ask(client, model, rid)
    assert time.monotonic() - started < 15
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"
    event = audit(gw, rid)
    assert (event["status_code"], event["error_code"], event["attempts"]) == \
        (504, "upstream_timeout", 3)


@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_deployment_falls_back_with_or_without_stream(
        gw: GatewayProcess, ups: dict[str, FakeUpstream], stream: bool) -> None:
    client = sdk(gw)
    rid = f"hangs-{stream}"
    started = time.monotonic()
    if stream:
        chunks = list(client.chat.completions.create(model="hangs", messages=MSG, stream=True,
                                                     extra_headers={"x-request-id": rid}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert {c.model for c in chunks} == {"steady"}  # chunks name the model that served
    else:
        reply = client.chat.completions.create(model="hangs", messages=MSG,
                                               extra_headers={"x-request-id": rid})
        text = reply.choices[0].message.content or ""
        assert reply.model == "steady"
    assert text == "fake: hello there"
    assert time.monotonic() - started < 10  # three 0.5 s tries and backoff, not 3 x 30 s
    event = audit(gw, rid)
    assert event["status_code"] == 200 and event["stream"] == stream
    assert event["model_served"] == "steady" and event["fallback_used"]
    assert event["attempts"] == 4  # 1 + router.retries on `hangs`, then `steady`
