"""One audit event per request: under concurrency, on stream failure and cancel, at shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

MSG = [{"role": "user", "content": "count me"}]


async def test_concurrent_mixed_requests_leave_exactly_one_event_each(
        gateway: GatewayProcess, app_key: str) -> None:
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    bad = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="wrong-key", max_retries=0)
    tag = f"mix-{time.time_ns()}"

    async def one(i: int) -> None:
        h = {"x-request-id": f"{tag}-{i}"}
        kind = i % 5
        try:
            if kind == 0:
                await sdk.chat.completions.create(model="demo", messages=MSG, extra_headers=h)
            elif kind == 1:
                stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MSG,
                                                           stream=True, extra_headers=h)
                async for _ in stream:
                    pass
            elif kind == 2:
                await sdk.chat.completions.create(model="missing", messages=MSG, extra_headers=h)
            elif kind == 3:
                await bad.chat.completions.create(model="demo", messages=MSG, extra_headers=h)
            else:
                await sdk.embeddings.create(model="demo-embed", input="x", extra_headers=h)
        except openai.APIStatusError:
            pass

    try:
        await asyncio.gather(*(one(i) for i in range(100)))
    finally:  # a client left open is collected later, closing sockets whose numbers (file
        await sdk.close()  # descriptors) a later test's connections may have by then
        await bad.close()
    rows = await asyncio.to_thread(gateway.wait_for_audit, "request_id LIKE :t", {"t": f"{tag}-%"},
                                   count=100)
    assert sorted(r["request_id"] for r in rows) == sorted(f"{tag}-{i}" for i in range(100))
    codes = {r["request_id"]: r["status_code"] for r in rows}
    assert codes[f"{tag}-2"] == 404 and codes[f"{tag}-3"] == 401 and codes[f"{tag}-1"] == 200


def test_mid_stream_failure_is_an_sse_error_and_partial(
        gateway: GatewayProcess, app_key: str, fault_upstream: FakeUpstream) -> None:
    fault_upstream.set_fault("drop-after:3")
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    got: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in sdk.chat.completions.create(
                model="faulty", messages=[{"role": "user", "content": "a b c d e f g"}],
                stream=True, extra_headers={"x-request-id": "midstream-1"}):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "mid-stream" in str(info.value)
    assert got  # the client saw the first chunks, then an error event, never [DONE]
    (event,) = gateway.wait_for_audit("request_id = 'midstream-1'")
    assert event["status_code"] == 200 and event["partial"]
    assert event["error_code"] == "upstream_error"


def test_client_disconnect_is_audited_as_cancelled(
        gateway: GatewayProcess, app_key: str, fault_upstream: FakeUpstream) -> None:
    fault_upstream.set_fault("chunk-delay:300")
    headers = {"authorization": f"Bearer {app_key}", "x-request-id": "cancel-1"}
    body = {"model": "faulty", "stream": True,
            "messages": [{"role": "user", "content": " ".join(["w"] * 40)}]}
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body,
                      headers=headers, timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # leave after the first chunk
    (event,) = gateway.wait_for_audit("request_id = 'cancel-1'")
    assert event["cancelled"] and event["partial"] and event["stream"]


def test_sigterm_drains_the_audit_queue(tmp_path: Path, upstream: FakeUpstream) -> None:
    proc = GatewayProcess(tmp_path, standard_config(upstream.url), env={
        **GATEWAY_ENV, "GATEWAY_AUDIT_FLUSH_INTERVAL_MS": "60000",
        "GATEWAY_AUDIT_BATCH_SIZE": "100000"}).start()
    try:
        key = proc.create_key(name="drain")["key"]
        sdk = openai.OpenAI(base_url=proc.base_url, api_key=key, max_retries=0)
        for i in range(25):
            sdk.chat.completions.create(model="demo", messages=MSG,
                                        extra_headers={"x-request-id": f"drain-{i}"})
        assert proc.audit_rows("request_id LIKE 'drain-%'") == []  # still queued
    finally:
        assert proc.stop(signal.SIGTERM) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    assert len(proc.audit_rows("request_id LIKE 'drain-%'")) == 25


def test_stalled_stream_times_out_as_partial(
        gateway: GatewayProcess, app_key: str, fault_upstream: FakeUpstream) -> None:
    fault_upstream.set_fault("stall")
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="faulty", messages=MSG, stream=True,
                                    extra_headers={"x-request-id": "stall-1"})
    assert info.value.status_code == 504
    assert info.value.body["code"] == "upstream_timeout"
    (event,) = gateway.wait_for_audit("request_id = 'stall-1'")
    assert event["status_code"] == 504 and event["attempts"] == 2


def test_client_never_sees_upstream_error_details(
        gateway: GatewayProcess, app_key: str, fault_upstream: FakeUpstream) -> None:
    fault_upstream.set_fault("status:503")
    sdk = openai.OpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="faulty", messages=MSG,
                                    extra_headers={"x-request-id": "upstream-503"})
    assert info.value.status_code == 502
    assert fault_upstream_url_hidden(info.value.body["message"], fault_upstream.url)
    assert len([q for q in fault_upstream.requests if q["path"].endswith("/completions")]) == 2


def fault_upstream_url_hidden(message: str, url: str) -> bool:
    return url not in message and "127.0.0.1" not in message
