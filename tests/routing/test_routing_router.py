"""The router in-process against real fake-upstream HTTP servers: retries, backoff,
Retry-After, budgets, cooldowns (on a virtual clock), caps, strategies, context windows."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_config
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NoHealthyDeployment,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.offline_data import price_map_path
from gateway.providers.demo import DemoProvider
from gateway.providers.litellm_adapter import LiteLLMProvider
from gateway.providers.openai_compat import OpenAICompatProvider
from gateway.providers.retry_after import MAX_S as MAX_RETRY_AFTER_S
from gateway.providers.retry_after import retry_after_s
from gateway.routing import router as router_module
from gateway.routing.backoff import BASE_S
from gateway.routing.capacity import MinuteWindow
from gateway.routing.health import MAX_COOLDOWN_S, Breaker
from gateway.routing.retry_budget import RetryBudget
from gateway.routing.router import Attempts, Router
from gateway.routing.shared_pauses import SharedPauses
from gateway.telemetry.metrics import Metrics
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import free_port

BODY = {"messages": [{"role": "user", "content": "hello there"}]}
NAMES = ("a", "b", "c", "d")


class ContextLimitedUpstream(FakeUpstream):
    """Its 400s are OpenAI's context-window error."""

    def _error_body(self, status: int, message: str | None, anthropic: bool) -> dict[str, Any]:
        if status == 400:
            return {"error": {"message": "This model's maximum context length is 8192 tokens. "
                                         "However, your messages resulted in 9000 tokens.",
                              "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"}}
        return super()._error_body(status, message, anthropic)


LEAKED_KEY = "sk-live-0123456789abcdefghij"


class LeakyUpstream(FakeUpstream):
    """Its errors echo a key, a URL with credentials, an internal address and a trace."""

    def _error_body(self, status: int, message: str | None, anthropic: bool) -> dict[str, Any]:
        return {"error": {"message": f"Incorrect API key provided: {LEAKED_KEY} for "
                                     "http://admin:hunter2@10.9.8.7:8080/v1 (Authorization: "
                                     "Bearer abc.def) \nTraceback (most recent call last):\n"
                                     '  File "/srv/app.py", line 3',
                          "type": "server_error", "param": None, "code": None}}


class BareRateLimitUpstream(FakeUpstream):
    """Its 429s say nothing about how long to wait (no `Retry-After`)."""

    def _error(self, status: int, message: str | None, anthropic: bool,
               retry_after: str | None = None) -> Any:
        return super()._error(status, message, anthropic, None)


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    ups = {name: FakeUpstream(name=name).start() for name in NAMES}
    ups["ctx"] = ContextLimitedUpstream(name="ctx", fault="status:400").start()
    ups["leaky"] = LeakyUpstream(name="leaky", fault="status:500").start()
    ups["bare"] = BareRateLimitUpstream(name="bare", fault="status:429").start()
    yield ups
    for up in ups.values():
        up.stop()


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for name, up in fakes.items():
        if name in NAMES:
            up.set_fault(None)
        up.clear()


class Clock:
    """The router's clock, which a test can move forward (the HTTP calls stay real)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(router_module, "monotonic", c)
    return c


def dep(up: FakeUpstream, name: str, **extra: Any) -> dict[str, Any]:
    return {"model": f"openai/{name}", "api_base": up.url + "/v1", **extra}


def make_router(tmp_path: Path, models: list[dict[str, Any]], *, metrics: Metrics | None = None,
                rng: random.Random | None = None, price_map: Path | None = None,
                **router: Any) -> Router:
    settings = {"strategy": "weighted", "retries": 2, "total_timeout_s": 20, "cooldown_s": 30,
                "failures_to_cooldown": 100, **router}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": models, "router": settings}))
    providers = {"demo": DemoProvider(), "direct": OpenAICompatProvider(),
                 "litellm": LiteLLMProvider()}
    return Router(load_config(path, environ={}), providers, rng, metrics=metrics,
                  price_map=price_map)


def hits(up: FakeUpstream) -> list[dict[str, Any]]:
    return [r for r in up.requests if r["path"].endswith("/chat/completions")]


async def chat(router: Router, model: str = "m") -> tuple[dict[str, Any], Attempts]:
    attempts = Attempts()
    result = await router.call(model, "chat", dict(BODY), attempts)
    return result, attempts


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


# ------------------------------------------------------------------ retries and failover

async def test_failure_moves_to_another_deployment_and_is_counted(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:500")
    metrics = Metrics()
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}],
                         metrics=metrics)
    try:
        result, attempts = await chat(router)
    finally:
        await router.close()
    assert result["model"] == "b"
    assert attempts.count == 2 and not attempts.fallback_used
    assert attempts.target is not None and attempts.target.deployment == "openai/b"
    assert len(hits(a)) == 1 and len(hits(b)) == 1
    sample = "gateway_deployment_attempts_total"
    assert counter(metrics, sample, model="m", deployment="openai/a", outcome="failure") == 1
    assert counter(metrics, sample, model="m", deployment="openai/b", outcome="success") == 1


async def test_only_deployment_is_retried_with_growing_backoff(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:503")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}], retries=2)
    try:
        with pytest.raises(UpstreamError) as info:
            await chat(router)
    finally:
        await router.close()
    assert info.value.status_code == 502 and "503" in info.value.message
    times = [r["time"] for r in hits(a)]
    assert len(times) == 3  # 1 + retries
    # equal jitter: the n-th retry waits at least half of BASE_S * 2**(n-1)
    assert times[1] - times[0] >= BASE_S / 2 * 0.9
    assert times[2] - times[1] >= BASE_S * 0.9


async def test_retries_rotate_across_deployments(tmp_path: Path,
                                                 fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:502")
    b.set_fault("status:502")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a"), dep(b, "b")]}],
                         retries=3)
    attempts = Attempts()
    try:
        with pytest.raises(UpstreamError):
            await router.call("m", "chat", dict(BODY), attempts)
    finally:
        await router.close()
    assert attempts.count == 4
    # never the same deployment twice in a row while another one is there
    order = sorted([(r["time"], "a") for r in hits(a)] + [(r["time"], "b") for r in hits(b)])
    names = [n for _, n in order]
    assert len(names) == 4 and all(x != y for x, y in itertools.pairwise(names))


async def test_retry_after_is_honoured(tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:429:retry=1")
    cleared = threading.Event()

    def clear_after_first() -> None:
        deadline = time.monotonic() + 10
        while not hits(a) and time.monotonic() < deadline:
            time.sleep(0.002)
        a.set_fault(None)
        cleared.set()

    threading.Thread(target=clear_after_first, daemon=True).start()
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}])
    try:
        result, attempts = await chat(router)
    finally:
        await router.close()
    assert cleared.is_set() and result["model"] == "a" and attempts.count == 2
    first, second = (r["time"] for r in hits(a))
    assert second - first >= 0.95  # Retry-After: 1


async def test_retry_after_past_the_deadline_is_not_waited_for(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:429:retry=30")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}],
                         total_timeout_s=5)
    started = time.monotonic()
    try:
        with pytest.raises(RateLimited) as info:
            await chat(router)
    finally:
        await router.close()
    assert time.monotonic() - started < 4
    assert len(hits(a)) == 1 and info.value.headers == {"retry-after": "30"}


async def test_retry_after_prefers_another_deployment(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:429:retry=20")
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}])
    try:
        started = time.monotonic()
        result, attempts = await chat(router)
        assert result["model"] == "b" and attempts.count == 2
        assert time.monotonic() - started < 5  # no waiting: another deployment was there
        # later requests skip the deployment that asked for time while others can serve
        for _ in range(3):
            result, attempts = await chat(router)
            assert result["model"] == "b" and attempts.count == 1
    finally:
        await router.close()
    assert len(hits(a)) == 1


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_client_errors_are_not_retried(tmp_path: Path, fakes: dict[str, FakeUpstream],
                                             status: int) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault(f"status:{status}")
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}])
    try:
        with pytest.raises(InvalidRequest) as info:
            await chat(router)
    finally:
        await router.close()
    assert info.value.status_code == 400 and info.value.code == "upstream_invalid_request"
    assert len(hits(a)) == 1 and hits(b) == []


async def test_misconfigured_deployment_fails_over_but_is_not_retried(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:401")
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]},
                                    {"name": "solo", "deployments": [dep(a, "a")]}],
                         retries=3)
    try:
        result, attempts = await chat(router)
        assert result["model"] == "b" and attempts.count == 2
        with pytest.raises(UpstreamError):
            await chat(router, "solo")
    finally:
        await router.close()
    assert len(hits(a)) == 2  # once per request, never retried


async def test_timeouts_connection_refused_and_resets_fail_over(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    a.set_fault("delay:3000")
    c.set_fault("drop-after:0")  # non-stream: the connection is cut without an answer
    closed = {"model": "openai/nobody", "api_base": f"http://127.0.0.1:{free_port()}/v1",
              "connect_timeout_s": 1}
    router = make_router(tmp_path, [
        {"name": "slow", "strategy": "ordered",
         "deployments": [dep(a, "a", timeout_s=0.5), dep(b, "b")]},
        {"name": "refused", "strategy": "ordered", "deployments": [closed, dep(b, "b")]},
        {"name": "reset", "strategy": "ordered", "deployments": [dep(c, "c"), dep(b, "b")]},
        {"name": "hopeless", "deployments": [dep(a, "a", timeout_s=0.3)]}], retries=1)
    try:
        for model in ("slow", "refused", "reset"):
            result, attempts = await chat(router, model)
            assert result["model"] == "b" and attempts.count == 2, model
        with pytest.raises(UpstreamTimeout) as info:  # a timed-out try counts as an attempt
            await chat(router, "hopeless")
        assert info.value.status_code == 504
    finally:
        await router.close()
    assert len(hits(c)) == 1


async def test_total_deadline_bounds_every_try(tmp_path: Path,
                                               fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("stall")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a", timeout_s=60)]}],
                         total_timeout_s=1, retries=5)
    started = time.monotonic()
    attempts = Attempts()
    try:
        with pytest.raises(UpstreamTimeout):
            await router.call("m", "chat", dict(BODY), attempts)
    finally:
        await router.close()
    assert time.monotonic() - started < 5
    assert attempts.count == 1


async def test_error_summary_leaks_no_secret(tmp_path: Path,
                                             fakes: dict[str, FakeUpstream]) -> None:
    leaky = fakes["leaky"]
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(leaky, "x")]}],
                         retries=0)
    try:
        with pytest.raises(UpstreamError) as info:
            await chat(router)
    finally:
        await router.close()
    message = info.value.message
    for secret in (LEAKED_KEY, "hunter2", "10.9.8.7", "admin:", "abc.def", "Traceback",
                   "/srv/app.py", leaky.url, "127.0.0.1"):
        assert secret not in message, (secret, message)
    assert message.endswith("(upstream answered 500 (server_error))"), message


# ------------------------------------------------------------------ the final answer

# Faults of deployments `a` then `b` (ordered, router.retries 1: one try each, a deadline
# shorter than any Retry-After here) -> the answer. 429 only when rate limits are all there is.
FINAL_ANSWERS = [
    pytest.param("status:429:retry=5", "status:429:retry=3", RateLimited, "3",
                 id="all rate limited: 429, the shortest wait"),
    pytest.param("status:429:retry=5", "status:500", UpstreamError, None,
                 id="rate limit then 5xx: 502"),
    pytest.param("status:500", "status:429:retry=5", UpstreamError, None,
                 id="5xx then rate limit: 502"),
    pytest.param("status:429:retry=5", "delay:3000", UpstreamTimeout, None,
                 id="rate limit then timeout: 504"),
    pytest.param("status:503:retry=5", "status:503:retry=5", UpstreamError, None,
                 id="overloaded with Retry-After: 502, not a rate limit"),
]


@pytest.mark.parametrize("fault_a,fault_b,answer,retry_after", FINAL_ANSWERS)
async def test_the_final_answer_names_what_stopped_the_request(
        tmp_path: Path, fakes: dict[str, FakeUpstream], fault_a: str, fault_b: str,
        answer: type[Exception], retry_after: str | None) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault(fault_a)
    b.set_fault(fault_b)
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered", "deployments": [
        dep(a, "a"), dep(b, "b", timeout_s=0.3)]}], retries=1, total_timeout_s=2)
    started = time.monotonic()
    try:
        with pytest.raises(GatewayError) as info:
            await chat(router)
    finally:
        await router.close()
    assert type(info.value) is answer
    assert info.value.headers.get("retry-after") == retry_after
    assert len(hits(a)) == 1 and time.monotonic() - started < 1.5  # no wait for a window


async def test_while_every_deployment_waits_out_a_window_nothing_is_sent(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:429:retry=5")
    b.set_fault("status:503:retry=5")
    router = make_router(tmp_path, [{"name": "limited", "deployments": [dep(a, "a")]},
                                    {"name": "overloaded", "deployments": [dep(b, "b")]}],
                         total_timeout_s=2)
    try:
        for model in ("limited", "overloaded"):
            with pytest.raises(GatewayError):
                await chat(router, model)
        attempts = Attempts()
        with pytest.raises(RateLimited) as limited:
            await router.call("limited", "chat", dict(BODY), attempts)
        assert attempts.count == 0 and limited.value.headers["retry-after"] in ("5", "4")
        with pytest.raises(NoHealthyDeployment) as overloaded:  # a 503's wait: no rate limit
            await chat(router, "overloaded")
        assert overloaded.value.headers["retry-after"] in ("5", "4")
    finally:
        await router.close()
    assert len(hits(a)) == 1 and len(hits(b)) == 1


async def test_a_429_without_retry_after_waits_one_second(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    bare = fakes["bare"]
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(bare, "x")]}],
                         total_timeout_s=0.5)
    try:
        with pytest.raises(RateLimited) as first:
            await chat(router)
        with pytest.raises(RateLimited):
            await chat(router)
        assert len(hits(bare)) == 1  # paused
        await asyncio.sleep(1.05)
        with pytest.raises(RateLimited):
            await chat(router)
    finally:
        await router.close()
    assert first.value.headers == {"retry-after": "1"}
    assert len(hits(bare)) == 2


async def test_a_rate_limit_never_trips_the_cooldown(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:429:retry=0.2")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}],
                         failures_to_cooldown=1, cooldown_s=30, total_timeout_s=0.1)
    try:
        for _ in range(3):
            with pytest.raises(RateLimited):
                await chat(router)
            await asyncio.sleep(0.25)
        a.set_fault(None)
        result, attempts = await chat(router)  # a cooldown would keep it out for 30 s
    finally:
        await router.close()
    assert result["model"] == "a" and attempts.count == 1


async def test_a_fallback_cooling_down_leaves_a_rate_limit_a_429(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:429:retry=5")
    b.set_fault("status:500")
    router = make_router(tmp_path, [
        {"name": "p", "deployments": [dep(a, "a")], "fallbacks": ["f"]},
        {"name": "f", "deployments": [dep(b, "b")]}],
        failures_to_cooldown=1, cooldown_s=30, total_timeout_s=2, retries=0)
    try:
        with pytest.raises(UpstreamError):  # a 429, then a 5xx: the 5xx decides
            await chat(router, "p")
        attempts = Attempts()
        with pytest.raises(RateLimited) as info:  # `p` waits 5 s, `f` cools down for 30 s
            await router.call("p", "chat", dict(BODY), attempts)
    finally:
        await router.close()
    assert attempts.count == 0 and info.value.headers["retry-after"] in ("5", "4")


async def test_models_that_reach_the_same_upstream_wait_together(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:429:retry=5")
    router = make_router(tmp_path, [{"name": "x", "deployments": [dep(a, "same")]},
                                    {"name": "y", "deployments": [dep(a, "same")]},
                                    {"name": "z", "deployments": [dep(a, "other")]}],
                         total_timeout_s=2)
    try:
        for model in ("x", "y", "z"):
            with pytest.raises(RateLimited):
                await chat(router, model)
    finally:
        await router.close()
    assert [r["body"]["model"] for r in hits(a)] == ["same", "other"]


RETRY_AFTER_HEADERS = [
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
    ({"retry-after": "-4"}, 0.0),
    ({"retry-after": "86400"}, MAX_RETRY_AFTER_S),
    ({"retry-after": "nan"}, None),
    ({"retry-after": "soon"}, None),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past
    ({}, None),
]


@pytest.mark.parametrize("headers,seconds", RETRY_AFTER_HEADERS)
def test_retry_after_headers_are_read_bounded(headers: dict[str, str],
                                              seconds: float | None) -> None:
    assert retry_after_s(headers.get) == seconds


def test_retry_after_as_an_http_date() -> None:
    soon = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = retry_after_s({"retry-after": soon}.get)
    assert value is not None and 28 <= value <= 30


async def test_litellm_failures_are_timeouts_by_their_cause() -> None:
    import httpx

    provider = LiteLLMProvider()
    lib = await provider._lib()

    def caused_by(cause: BaseException) -> BaseException:
        try:
            try:
                raise cause
            except BaseException as inner:
                raise lib.APIConnectionError(message="Connection error", llm_provider="x",
                                             model="m") from inner
        except BaseException as outer:
            return outer

    request = httpx.Request("POST", "http://upstream.invalid/v1")
    limited = lib.RateLimitError(message="slow down", llm_provider="x", model="m",
                                 response=httpx.Response(429, headers={"retry-after-ms": "2500"},
                                                         request=request))
    cases = [
        (caused_by(httpx.ConnectTimeout("connect", request=request)), "timeout", None),
        (caused_by(httpx.ReadTimeout("read", request=request)), "timeout", None),
        (caused_by(TimeoutError()), "timeout", None),
        (caused_by(httpx.ConnectError("refused", request=request)), "connect", None),
        (lib.Timeout(message="t", model="m", llm_provider="x"), "timeout", None),
        (limited, "http", 2.5),
    ]
    for exc, kind, wait in cases:
        mapped = provider._error(exc)
        assert (mapped.kind, mapped.retry_after_s) == (kind, wait), repr(exc)


@pytest.mark.redis
async def test_shared_windows_are_heard_live_and_caught_up_late_and_only_lengthened() -> None:
    url = os.environ.get("GATEWAY_TEST_REDIS_URL")
    if not url:
        pytest.skip("GATEWAY_TEST_REDIS_URL is not set: run the suite with `make test`")
    teller, late = SharedPauses.from_url(url), SharedPauses.from_url(url)
    first, second = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    heard: dict[str, tuple[float, bool]] = {}
    arrived = asyncio.Event()

    def hear(pause_id: str, seconds: float, rate_limit: bool) -> None:
        if pause_id in (first, second):
            heard[pause_id] = (seconds, rate_limit)
            arrived.set()

    try:
        await teller.publish(first, 5, True)
        await teller.publish(first, 1, False)  # shorter than the window under way: no change
        await late.sync(hear)  # a replica that starts now
        seconds, rate_limit = heard[first]
        assert 4.5 < seconds <= 5 and rate_limit
        late.start(hear)
        await asyncio.sleep(0.3)  # subscribed
        arrived.clear()
        await teller.publish(second, 2, False)
        await asyncio.wait_for(arrived.wait(), 2)
        seconds, rate_limit = heard[second]
        assert 1.5 < seconds <= 2 and not rate_limit
    finally:
        await teller.close()
        await late.close()


# ------------------------------------------------------------------ fallbacks

async def test_fallbacks_in_order_after_every_deployment_failed(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    a.set_fault("status:500")
    b.set_fault("status:500")
    router = make_router(tmp_path, [
        {"name": "m", "deployments": [dep(a, "a")], "fallbacks": ["f1", "f2"]},
        {"name": "f1", "deployments": [dep(b, "b")]},
        {"name": "f2", "deployments": [dep(c, "c")]}], retries=1)
    try:
        result, attempts = await chat(router)
    finally:
        await router.close()
    assert result["model"] == "c"
    assert attempts.count == 5 and attempts.fallback_used
    assert attempts.target is not None and attempts.target.model == "f2"
    assert len(hits(a)) == 2 and len(hits(b)) == 2


async def test_context_window_error_skips_to_a_larger_fallback(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    ctx, b, c = fakes["ctx"], fakes["b"], fakes["c"]
    models = [
        {"name": "small", "deployments": [{"model": "openai/gpt-4", "api_base": ctx.url + "/v1"}],
         "fallbacks": ["same-size", "large"]},
        {"name": "same-size", "deployments": [dep(b, "gpt-4-0613")]},
        {"name": "large", "deployments": [dep(c, "gpt-4o")]},
        {"name": "alone", "deployments": [{"model": "openai/gpt-4",
                                           "api_base": ctx.url + "/v1"}],
         "fallbacks": ["same-size"]}]
    router = make_router(tmp_path, models, price_map=price_map_path())
    try:
        result, attempts = await chat(router, "small")
        assert result["model"] == "gpt-4o"
        assert attempts.count == 2 and attempts.fallback_used
        assert hits(b) == []  # 8192 tokens like the model that overflowed: skipped
        with pytest.raises(InvalidRequest) as info:
            await chat(router, "alone")
        assert info.value.code == "context_length_exceeded"
    finally:
        await router.close()
    assert len(hits(ctx)) == 2  # a context error is never retried on the same model


# ------------------------------------------------------------------ cooldown

async def test_cooldown_trips_probes_half_open_and_doubles(
        tmp_path: Path, fakes: dict[str, FakeUpstream], clock: Clock) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:500")
    metrics = Metrics()
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}],
                         metrics=metrics, failures_to_cooldown=2, cooldown_s=10, retries=1)

    async def served_by() -> tuple[str, int]:
        result, attempts = await chat(router)
        return result["model"], attempts.count

    try:
        assert await served_by() == ("b", 2)
        assert await served_by() == ("b", 2)  # second failure in a row: a is out for 10 s
        assert len(hits(a)) == 2
        assert await served_by() == ("b", 1)
        clock.advance(9)
        assert await served_by() == ("b", 1)
        assert len(hits(a)) == 2
        clock.advance(1.5)  # half-open: one probe, which fails -> out for 20 s
        assert await served_by() == ("b", 2)
        assert len(hits(a)) == 3
        clock.advance(15)
        assert await served_by() == ("b", 1)
        clock.advance(6)  # 21 s after the probe: probe again, fails -> 40 s
        assert await served_by() == ("b", 2)
        assert len(hits(a)) == 4
        a.set_fault(None)
        clock.advance(39)
        assert await served_by() == ("b", 1)
        clock.advance(2)
        assert await served_by() == ("a", 1)  # the probe succeeded: back in rotation
        assert await served_by() == ("a", 1)
    finally:
        await router.close()
    assert counter(metrics, "gateway_deployment_cooldowns_total", model="m",
                   deployment="openai/a") == 3


async def test_half_open_lets_exactly_one_probe_through(
        tmp_path: Path, fakes: dict[str, FakeUpstream], clock: Clock) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:500")
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}],
                         failures_to_cooldown=1, cooldown_s=5, retries=1)
    try:
        assert (await chat(router))[0]["model"] == "b"  # a trips
        a.set_fault("delay:500")  # healthy again, but slow
        a.clear()
        clock.advance(6)
        results = await asyncio.gather(*(chat(router) for _ in range(4)))
    finally:
        await router.close()
    served = sorted(r["model"] for r, _ in results)
    assert served == ["a", "b", "b", "b"]
    assert len(hits(a)) == 1


@pytest.mark.parametrize("count,most_out", [(2, 1), (3, 1), (4, 2), (5, 2)])
async def test_never_more_than_half_of_the_deployments_out(
        tmp_path: Path, fakes: dict[str, FakeUpstream], count: int, most_out: int) -> None:
    ups = [fakes[n] for n in NAMES]
    for up in ups:
        up.set_fault("status:500")
    deployments = [dep(ups[i % len(ups)], f"d{i}") for i in range(count)]
    router = make_router(tmp_path, [{"name": "m", "deployments": deployments}],
                         failures_to_cooldown=1, cooldown_s=60, retries=count)
    try:
        for _ in range(6):
            with pytest.raises(UpstreamError):
                await chat(router)
        out = [s for s in router.slots["m"] if s.breaker.out()]
    finally:
        await router.close()
    assert len(out) == most_out


async def test_a_lone_deployment_in_cooldown_gives_503(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("status:500")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}],
                         failures_to_cooldown=2, cooldown_s=30, retries=3)
    try:
        with pytest.raises(UpstreamError) as first:
            await chat(router)
        attempts = Attempts()
        with pytest.raises(NoHealthyDeployment) as second:
            await router.call("m", "chat", dict(BODY), attempts)
    finally:
        await router.close()
    assert first.value.status_code == 502
    assert len(hits(a)) == 2  # tripped after the second failure: the other retries skipped
    assert second.value.status_code == 503 and second.value.code == "no_healthy_deployment"
    assert attempts.count == 0
    assert 25 <= int(second.value.headers["retry-after"]) <= 30


def test_breaker_doubling_is_capped_at_five_minutes() -> None:
    breaker = Breaker()
    now, lengths = 0.0, []
    breaker.failure(now, False, threshold=1, base_cooldown_s=30, may_trip=True)
    lengths.append(breaker.last_cooldown_s)
    for _ in range(6):
        now = breaker.open_until + 0.1
        assert breaker.begin(now)  # the probe
        breaker.failure(now, True, threshold=1, base_cooldown_s=30, may_trip=True)
        lengths.append(breaker.last_cooldown_s)
    assert lengths == [30, 60, 120, 240, MAX_COOLDOWN_S, MAX_COOLDOWN_S, MAX_COOLDOWN_S]


# ------------------------------------------------------------------ retry budget

async def test_retry_budget_bounds_retries_under_load(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a = fakes["a"]
    a.set_fault("delay:300,status:500")
    router = make_router(tmp_path, [{"name": "m", "deployments": [dep(a, "a")]}], retries=3,
                         total_timeout_s=30)
    try:
        results = await asyncio.gather(*(chat(router) for _ in range(30)),
                                       return_exceptions=True)
    finally:
        await router.close()
    assert all(isinstance(r, UpstreamError) for r in results)
    # without a budget: 30 x 4 = 120 tries; with it, about a fifth of the load retries at a
    # time (measured: 42 tries, 27 retries refused); the bound leaves room for a busy machine
    assert len(hits(a)) <= 60, len(hits(a))
    assert router.budget.denied >= 10
    assert router.budget.requests == 0 and router.budget.retries == 0


def test_retry_budget_ratio_and_floor() -> None:
    budget = RetryBudget()
    for _ in range(3):
        budget.request_started()
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]  # the floor
    for _ in range(27):
        budget.request_started()  # 30 in flight: a fifth is 6
    assert [budget.try_acquire() for _ in range(4)] == [True, True, True, False]
    budget.release()
    assert budget.try_acquire()


# ------------------------------------------------------------------ strategies and caps

async def test_weighted_split_follows_the_weights(tmp_path: Path,
                                                  fakes: dict[str, FakeUpstream]) -> None:
    a, b, c = fakes["a"], fakes["b"], fakes["c"]
    weights = {"a": 1, "b": 2, "c": 5}
    router = make_router(tmp_path, [{"name": "m", "deployments": [
        dep(a, "a", weight=1), dep(b, "b", weight=2), dep(c, "c", weight=5)]}])
    n = 800
    try:
        served = [(await chat(router))[0]["model"] for _ in range(n)]
    finally:
        await router.close()
    total = sum(weights.values())
    chi2 = sum((served.count(k) - n * w / total) ** 2 / (n * w / total)
               for k, w in weights.items())
    # two degrees of freedom: P(X >= chi2) = exp(-chi2 / 2)
    assert math.exp(-chi2 / 2) > 0.001, {k: served.count(k) for k in weights}


async def test_least_busy_spreads_concurrent_requests(tmp_path: Path,
                                                      fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("delay:400")
    b.set_fault("delay:400")
    router = make_router(tmp_path, [{"name": "m", "strategy": "least-busy",
                                     "deployments": [dep(a, "a"), dep(b, "b", weight=10)]}])
    try:
        for _ in range(3):
            results = await asyncio.gather(*(chat(router) for _ in range(4)))
            assert sorted(r["model"] for r, _ in results) == ["a", "a", "b", "b"]
    finally:
        await router.close()


async def test_lowest_latency_prefers_the_faster_deployment(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("delay:250")
    router = make_router(tmp_path, [{"name": "m", "strategy": "lowest-latency",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}])
    try:
        served = [(await chat(router))[0]["model"] for _ in range(20)]
        chunks: list[str] = []
        for _ in range(10):  # streams: by time to the first chunk
            first, iterator, slot = await router.open_stream("m", "chat", dict(BODY),
                                                             Attempts())
            chunks.append(first["model"])
            async for _chunk in iterator:
                pass
            router.stream_finished(slot, True)
    finally:
        await router.close()
    assert served.count("a") <= 2, served  # measured once (unknown counts as fast), then not
    assert chunks.count("a") <= 2, chunks


async def test_lowest_latency_avoids_a_deployment_that_fails_fast(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    a.set_fault("status:500")  # answers in a millisecond, but with an error
    b.set_fault("delay:100")
    router = make_router(tmp_path, [{"name": "m", "strategy": "lowest-latency",
                                     "deployments": [dep(a, "a"), dep(b, "b")]}])
    try:
        served = [(await chat(router))[0]["model"] for _ in range(10)]
    finally:
        await router.close()
    assert served == ["b"] * 10
    assert len(hits(a)) <= 1  # tried once at most, then it counts as slow as its timeout


async def test_rpm_cap_sends_the_overflow_elsewhere_then_503(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    router = make_router(tmp_path, [
        {"name": "m", "strategy": "ordered", "deployments": [dep(a, "a", rpm=3), dep(b, "b")]},
        {"name": "capped", "deployments": [dep(b, "b", rpm=2)]}])
    try:
        served = [(await chat(router))[0]["model"] for _ in range(6)]
        assert served == ["a", "a", "a", "b", "b", "b"]
        for _ in range(2):
            await chat(router, "capped")
        with pytest.raises(NoHealthyDeployment) as info:
            await chat(router, "capped")
    finally:
        await router.close()
    assert "rpm/tpm cap" in info.value.message
    assert 1 <= int(info.value.headers["retry-after"]) <= 60


async def test_tpm_cap_counts_the_usage_of_answers(tmp_path: Path,
                                                   fakes: dict[str, FakeUpstream]) -> None:
    a, b = fakes["a"], fakes["b"]
    # the fake's usage for BODY: prompt 3 + completion 3 ("fake: hello there") = 6 tokens
    router = make_router(tmp_path, [{"name": "m", "strategy": "ordered",
                                     "deployments": [dep(a, "a", tpm=10), dep(b, "b")]}])
    try:
        served = [(await chat(router))[0]["model"] for _ in range(3)]
        _first, iterator, slot = await router.open_stream("m", "chat", dict(BODY), Attempts())
        async for _chunk in iterator:
            pass
        router.stream_finished(slot, True)
    finally:
        await router.close()
    assert served == ["a", "a", "b"]
    assert slot.target.deployment == "openai/b"


def test_minute_window_slides() -> None:
    window = MinuteWindow()
    window.add(2, 100.2)
    window.add(3, 130.7)
    assert window.total(131) == 5
    assert window.free_in(131, 5) == pytest.approx(29)  # whole-second buckets
    assert window.free_in(131, 6) == 0
    assert window.total(160.5) == 3  # the second at 100 has left the minute
    window.add(1, 161)
    assert window.total(189.9) == 4
    assert window.total(190) == 1
    assert window.total(400) == 0


# ------------------------------------------------------------------ streams

async def test_stream_fails_over_only_before_the_first_chunk(
        tmp_path: Path, fakes: dict[str, FakeUpstream]) -> None:
    a, b, c, d = (fakes[n] for n in NAMES)
    a.set_fault("drop-after:0")
    c.set_fault("delay:3000")
    d.set_fault("stall")
    router = make_router(tmp_path, [
        {"name": m, "strategy": "ordered",
         "deployments": [dep(up, m, first_token_timeout_s=0.5), dep(b, "b")]}
        for m, up in (("dropped", a), ("slow", c), ("stalled", d))])
    try:
        for model in ("dropped", "slow", "stalled"):
            attempts = Attempts()
            first, iterator, slot = await router.open_stream(model, "chat", dict(BODY),
                                                             attempts)
            rest = [chunk async for chunk in iterator]
            router.stream_finished(slot, True)
            assert attempts.count == 2 and slot.target.deployment == "openai/b", model
            text = "".join(ch["choices"][0]["delta"].get("content") or ""
                           for ch in [first, *rest] if ch.get("choices"))
            assert text == "fake: hello there"
        a.set_fault("drop-after:3")  # after the first chunk: no failover, an error
        first, iterator, slot = await router.open_stream("dropped", "chat", dict(BODY),
                                                         Attempts())
        assert slot.target.deployment == "openai/dropped"
        with pytest.raises(router_module.ProviderError) as info:
            async for _chunk in iterator:
                pass
        router.stream_finished(slot, False)
    finally:
        await router.close()
    assert "127.0.0.1" not in info.value.message
    assert slot.stats.in_flight == 0 and slot.stats.failures == 2
