"""Routing through a real `gateway serve` with fault-injecting fake upstreams: which deployment
served (from the audit event), attempts, fallbacks, the weighted split, cooldown timing,
503/502/504 shapes, streams that fail before or after their first byte, client disconnects."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from aiohttp import web

from tests.fakes.upstream import FakeUpstream, Fault
from tests.routing.test_routing_router import ContextLimitedUpstream
from tests.support.gateway_proc import GatewayProcess, free_port

MSG = [{"role": "user", "content": "hello there"}]
SPLIT_WEIGHTS = {"openai/split-a": 1, "openai/split-b": 2, "openai/split-c": 5}


class CancelRecordingUpstream(FakeUpstream):
    """Notes when a stream handler ends without finishing: the gateway closed the connection."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.closed_at: list[float] = []
        self.finished = 0

    async def _stream(self, request: web.Request, fault: Fault,
                      events: list[bytes]) -> web.StreamResponse:
        try:
            response = await super()._stream(request, fault, events)
        except BaseException:
            self.closed_at.append(time.monotonic())
            raise
        self.finished += 1
        return response


FAKES = {
    "ok1": None, "ok2": None, "ok3": None, "bad": "status:500", "flaky": None,
    "drop0": "drop-after:0", "drop3": "drop-after:3", "slowfb": "delay:3000", "rl": None,
}


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, FakeUpstream]]:
    out = {name: FakeUpstream(name=name, fault=fault).start() for name, fault in FAKES.items()}
    out["ctx"] = ContextLimitedUpstream(name="ctx", fault="status:400").start()
    out["recorder"] = CancelRecordingUpstream(name="recorder", fault="chunk-delay:400").start()
    yield out
    for up in out.values():
        up.stop()


def _dep(up: FakeUpstream, model: str, **extra: Any) -> dict[str, Any]:
    return {"model": f"openai/{model}", "api_base": up.url + "/v1", **extra}


def routing_config(ups: dict[str, FakeUpstream]) -> str:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    models = [
        {"name": "split", "deployments": [_dep(ups["ok1"], "split-a", weight=1),
                                          _dep(ups["ok2"], "split-b", weight=2),
                                          _dep(ups["ok3"], "split-c", weight=5)]},
        {"name": "failover", "strategy": "ordered",
         "deployments": [_dep(ups["bad"], "bad"), _dep(ups["ok1"], "good")]},
        {"name": "refused", "strategy": "ordered",
         "deployments": [{"model": "openai/nobody", "api_base": closed, "connect_timeout_s": 1},
                         _dep(ups["ok1"], "good")]},
        {"name": "dropped", "strategy": "ordered",
         "deployments": [_dep(ups["drop0"], "dropper"), _dep(ups["ok1"], "good")]},
        {"name": "slowfirst", "strategy": "ordered",
         "deployments": [_dep(ups["slowfb"], "slow", first_token_timeout_s=0.5),
                         _dep(ups["ok1"], "good")]},
        {"name": "midstream", "strategy": "ordered",
         "deployments": [_dep(ups["drop3"], "cut"), _dep(ups["ok1"], "good")]},
        {"name": "primary", "deployments": [_dep(ups["bad"], "bad")], "fallbacks": ["backup"]},
        {"name": "backup", "deployments": [_dep(ups["ok2"], "backup-model")]},
        {"name": "cool", "strategy": "ordered",
         "deployments": [_dep(ups["flaky"], "flaky"), _dep(ups["ok3"], "steady")]},
        {"name": "lonely", "deployments": [_dep(ups["bad"], "bad")]},
        {"name": "limited", "deployments": [_dep(ups["rl"], "limited")]},
        {"name": "small", "deployments": [_dep(ups["ctx"], "gpt-4")],
         "fallbacks": ["same-size", "large"]},
        {"name": "same-size", "deployments": [_dep(ups["ok1"], "gpt-4-0613")]},
        {"name": "large", "deployments": [_dep(ups["ok2"], "gpt-4o")]},
        {"name": "slowstream", "deployments": [_dep(ups["recorder"], "slow-words")]},
    ]
    router = {"strategy": "weighted", "retries": 2, "total_timeout_s": 15, "cooldown_s": 2,
              "failures_to_cooldown": 3}
    return yaml.safe_dump({"models": models, "router": router})


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       ups: dict[str, FakeUpstream]) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(tmp_path_factory.mktemp("routing"), routing_config(ups)).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def key(gw: GatewayProcess) -> str:
    return gw.create_key(name="routing")["key"]


@pytest.fixture
def sdk(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=60)


def hits(up: FakeUpstream) -> int:
    return len([r for r in up.requests if r["path"].endswith("/chat/completions")])


def audit(gw: GatewayProcess, rid: str) -> dict[str, Any]:
    (event,) = gw.wait_for_audit("request_id = :r", {"r": rid})
    return event


def ask(sdk: openai.OpenAI, model: str, rid: str, *, stream: bool = False) -> str:
    if not stream:
        reply = sdk.chat.completions.create(model=model, messages=MSG,
                                            extra_headers={"x-request-id": rid})
        return reply.choices[0].message.content or ""
    text = ""
    for chunk in sdk.chat.completions.create(model=model, messages=MSG, stream=True,
                                             extra_headers={"x-request-id": rid}):
        text += "".join(c.delta.content or "" for c in chunk.choices)
    return text


# ------------------------------------------------------------------ which deployment served

@pytest.mark.parametrize("model,stream,fault", [
    ("failover", False, "HTTP 500"),
    ("refused", False, "connection refused"),
    ("dropped", True, "connection dropped before the first byte"),
    ("slowfirst", True, "first byte later than first_token_timeout_s"),
])
def test_a_failed_deployment_is_replaced_by_another(
        gw: GatewayProcess, sdk: openai.OpenAI, model: str, stream: bool, fault: str) -> None:
    rid = f"failover-{model}"
    assert ask(sdk, model, rid, stream=stream) == "fake: hello there"
    event = audit(gw, rid)
    assert event["status_code"] == 200, fault
    assert event["deployment"] == "openai/good" and event["attempts"] == 2, fault
    assert event["model_served"] == model and not event["fallback_used"]
    assert not event["partial"]


def test_fallback_model_serves_when_every_deployment_failed(
        gw: GatewayProcess, sdk: openai.OpenAI, ups: dict[str, FakeUpstream]) -> None:
    reply = sdk.chat.completions.create(model="primary", messages=MSG,
                                        extra_headers={"x-request-id": "fallback-1"})
    assert reply.model == "backup"  # the public name of the model that served
    event = audit(gw, "fallback-1")
    assert event["model_requested"] == "primary" and event["model_served"] == "backup"
    assert event["fallback_used"] and event["deployment"] == "openai/backup-model"
    assert event["attempts"] == 4  # 1 + router.retries on `primary`, then `backup`


def test_weighted_split_over_many_requests(gw: GatewayProcess, key: str) -> None:
    n = 320
    with httpx.Client(base_url=gw.base_url, timeout=30,
                      headers={"authorization": f"Bearer {key}"}) as client:
        for i in range(n):
            r = client.post("/chat/completions", json={"model": "split", "messages": MSG},
                            headers={"x-request-id": f"split-{i}"})
            assert r.status_code == 200, r.text
    rows = gw.wait_for_audit("request_id LIKE 'split-%'", count=n, timeout_s=30)
    counts = Counter(r["deployment"] for r in rows)
    assert all(r["attempts"] == 1 for r in rows)
    total = sum(SPLIT_WEIGHTS.values())
    chi2 = sum((counts[d] - n * w / total) ** 2 / (n * w / total)
               for d, w in SPLIT_WEIGHTS.items())
    # chi-square with 2 degrees of freedom: P(X >= chi2) = exp(-chi2 / 2)
    assert math.exp(-chi2 / 2) > 0.001, counts


def test_context_window_error_falls_back_to_the_larger_model(gw: GatewayProcess,
                                                             sdk: openai.OpenAI,
                                                             ups: dict[str, FakeUpstream]
                                                             ) -> None:
    before = hits(ups["ok1"])
    reply = sdk.chat.completions.create(model="small", messages=MSG,
                                        extra_headers={"x-request-id": "ctx-1"})
    assert reply.model == "large"
    event = audit(gw, "ctx-1")
    assert event["model_served"] == "large" and event["fallback_used"]
    assert event["attempts"] == 2 and event["deployment"] == "openai/gpt-4o"
    assert hits(ups["ok1"]) == before  # `same-size` has no larger window: skipped


def test_retry_after_is_waited_for_then_the_retry_succeeds(
        gw: GatewayProcess, sdk: openai.OpenAI, ups: dict[str, FakeUpstream]) -> None:
    rl = ups["rl"]
    rl.clear()
    rl.set_fault("status:429:retry=1")

    def clear_after_first() -> None:
        deadline = time.monotonic() + 20
        while hits(rl) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        rl.set_fault(None)

    threading.Thread(target=clear_after_first, daemon=True).start()
    assert ask(sdk, "limited", "retry-after-1") == "fake: hello there"
    first, second = (r["time"] for r in rl.requests if r["path"].endswith("/completions"))
    assert second - first >= 0.95
    event = audit(gw, "retry-after-1")
    assert event["attempts"] == 2 and event["status_code"] == 200


# ------------------------------------------------------------------ cooldown and 503

def test_cooldown_timing_half_open_probe_and_doubling(
        gw: GatewayProcess, sdk: openai.OpenAI, ups: dict[str, FakeUpstream]) -> None:
    flaky = ups["flaky"]
    flaky.clear()
    flaky.set_fault("status:500")
    answered: dict[str, float] = {}

    def served(rid: str) -> tuple[str, int]:
        ask(sdk, "cool", rid)
        answered[rid] = time.monotonic()
        event = audit(gw, rid)
        return event["deployment"], event["attempts"]

    def sleep_until(when: float) -> None:
        time.sleep(max(0.0, when - time.monotonic()))

    for i in range(3):  # failures_to_cooldown: 3 -> out for cooldown_s (2 s)
        assert served(f"cool-trip-{i}") == ("openai/steady", 2)
    assert served("cool-out") == ("openai/steady", 1)
    assert hits(flaky) == 3
    sleep_until(answered["cool-trip-2"] + 2.5)
    probe_start = time.monotonic()
    assert served("cool-probe-1") == ("openai/steady", 2)  # one probe, it fails: 4 s now
    assert hits(flaky) == 4
    sleep_until(probe_start + 2.5)
    assert served("cool-doubled") == ("openai/steady", 1)  # a 2 s cooldown would have ended
    assert hits(flaky) == 4
    flaky.set_fault(None)
    sleep_until(answered["cool-probe-1"] + 4.5)
    assert served("cool-probe-2") == ("openai/flaky", 1)  # probe succeeds: back in rotation
    assert served("cool-back") == ("openai/flaky", 1)


def test_all_deployments_cooling_down_is_503(gw: GatewayProcess, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as first:
        sdk.chat.completions.create(model="lonely", messages=MSG,
                                    extra_headers={"x-request-id": "lonely-1"})
    assert first.value.status_code == 502
    assert first.value.body["code"] == "upstream_error"
    with pytest.raises(openai.APIStatusError) as second:
        sdk.chat.completions.create(model="lonely", messages=MSG,
                                    extra_headers={"x-request-id": "lonely-2"})
    assert second.value.status_code == 503
    assert second.value.body["code"] == "no_healthy_deployment"
    assert set(second.value.body) == {"message", "type", "param", "code"}
    assert 1 <= int(second.value.response.headers["retry-after"]) <= 2
    assert audit(gw, "lonely-1")["attempts"] == 3
    event = audit(gw, "lonely-2")
    assert event["status_code"] == 503 and event["attempts"] == 0
    assert event["error_code"] == "no_healthy_deployment"


# ------------------------------------------------------------------ streams after the first byte

def test_mid_stream_failure_reaches_the_openai_client_as_an_error(
        gw: GatewayProcess, sdk: openai.OpenAI, ups: dict[str, FakeUpstream]) -> None:
    before = hits(ups["ok1"])
    seen: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk.chat.completions.create(model="midstream", messages=MSG, stream=True,
                                                 extra_headers={"x-request-id": "mid-1"}):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "mid-stream" in str(info.value) and "127.0.0.1" not in str(info.value)
    assert "".join(seen).startswith("fake:")  # the first chunks arrived, then the error
    assert hits(ups["ok1"]) == before  # no failover once bytes reached the client
    event = audit(gw, "mid-1")
    assert event["status_code"] == 200 and event["partial"] and not event["cancelled"]
    assert event["error_code"] == "upstream_error"
    assert event["deployment"] == "openai/cut" and event["attempts"] == 1


def test_client_disconnect_cancels_the_upstream_and_records_usage(
        gw: GatewayProcess, key: str, ups: dict[str, FakeUpstream]) -> None:
    recorder = ups["recorder"]
    assert isinstance(recorder, CancelRecordingUpstream)
    recorder.closed_at.clear()
    body = {"model": "slowstream", "stream": True,
            "messages": [{"role": "user", "content": " ".join(["word"] * 40)}]}
    headers = {"authorization": f"Bearer {key}", "x-request-id": "disconnect-1"}
    data_lines = 0
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, headers=headers,
                      timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                data_lines += 1
                if data_lines == 3:
                    break
    left = time.monotonic()
    deadline = left + 10
    while not recorder.closed_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.closed_at, "the upstream never saw the connection close"
    assert recorder.closed_at[0] - left < 2.0
    assert recorder.finished == 0
    event = audit(gw, "disconnect-1")
    assert event["cancelled"] and event["partial"] and event["stream"]
    assert event["input_tokens"] > 0 and event["output_tokens"] > 0  # partial usage
    assert event["usage_source"] == "estimated"


# ------------------------------------------------------------------ config errors

@pytest.mark.parametrize("models,expected", [
    ("[{name: a, deployments: [{model: demo/x}], fallbacks: [nope]}]",
     "models[0].fallbacks[0]: unknown model 'nope'"),
    ("[{name: a, deployments: [{model: demo/x}], fallbacks: [b]},"
     " {name: b, deployments: [{model: demo/y}], fallbacks: [c]},"
     " {name: c, deployments: [{model: demo/z}], fallbacks: [a]}]",
     "fallback cycle: a -> b -> c -> a"),
    ("[{name: a, deployments: [{model: demo/x}], strategy: fastest}]",
     "models[0].strategy: "),
])
def test_bad_fallbacks_fail_check_config(tmp_path: Path, models: str, expected: str) -> None:
    proc = GatewayProcess(tmp_path, f"models: {models}\n")
    result = proc.cli("check-config", check=False)
    assert result.returncode == 1
    assert expected in result.stderr, result.stderr

