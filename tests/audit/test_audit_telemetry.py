"""Traces: GenAI semantic-convention attributes (names checked against the semconv package),
a child span per provider attempt, no prompt text unless configured, exported over OTLP/HTTP
to a receiver of the test's own on loopback."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv.attributes import (
    error_attributes,
    http_attributes,
    server_attributes,
    url_attributes,
)

from gateway.telemetry import tracing
from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

SECRET_PROMPT = "the-prompt-text-must-not-leak-4711"


def test_attribute_names_are_the_semantic_conventions() -> None:
    checked = 0
    for name in dir(tracing):
        if name.startswith("GEN_AI_"):
            assert getattr(tracing, name) == getattr(gen_ai_attributes, name), name
            checked += 1
    assert checked >= 15
    assert tracing.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert tracing.SERVER_ADDRESS == server_attributes.SERVER_ADDRESS
    assert tracing.SERVER_PORT == server_attributes.SERVER_PORT
    assert tracing.HTTP_REQUEST_METHOD == http_attributes.HTTP_REQUEST_METHOD
    assert tracing.HTTP_RESPONSE_STATUS_CODE == http_attributes.HTTP_RESPONSE_STATUS_CODE
    assert tracing.URL_PATH == url_attributes.URL_PATH
    operations = {v.value for v in gen_ai_attributes.GenAiOperationNameValues}
    assert set(tracing.OPERATIONS.values()) <= operations
    providers = {v.value for v in gen_ai_attributes.GenAiProviderNameValues}
    assert set(tracing.PROVIDER_NAMES.values()) <= providers


def test_otlp_is_on_only_when_the_standard_variables_ask() -> None:
    assert not tracing.otlp_requested({})
    assert tracing.otlp_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.otlp_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
    assert tracing.otlp_requested({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.otlp_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                       "OTEL_SDK_DISABLED": "true"})
    assert not tracing.otlp_requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x",
                                       "OTEL_TRACES_EXPORTER": "none"})


class Receiver:
    """A minimal OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait(self, predicate: Any, timeout_s: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for s in self.spans if predicate(s)]
            if found:
                time.sleep(0.3)  # siblings exported in the same batch
                return found
            time.sleep(0.1)
        raise AssertionError("no such span arrived")


def attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind == "array_value":
            out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.array_value.values]
        else:
            out[kv.key] = getattr(value, kind)
    return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _gateway(workdir: Path, upstream: FakeUpstream, faulty: FakeUpstream, receiver: Receiver,
             **env: str) -> GatewayProcess:
    return GatewayProcess(workdir, standard_config(upstream.url, faulty.url), env={
        **GATEWAY_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "gateway-under-test", **env})


def _children(receiver: Receiver, parent: Any) -> list[Any]:
    with receiver.lock:
        return [s for s in receiver.spans if s.parent_span_id == parent.span_id
                and s.trace_id == parent.trace_id]


def test_request_and_attempt_spans_carry_genai_attributes(
        tmp_path: Path, upstream: FakeUpstream, fault_upstream: FakeUpstream,
        receiver: Receiver) -> None:
    gw = _gateway(tmp_path, upstream, fault_upstream, receiver).start()
    try:
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        reply = sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": SECRET_PROMPT}],
            max_tokens=50, extra_headers={"x-request-id": "trace-ok"})
        (server,) = receiver.wait(lambda s: attrs(s).get("gateway.request_id") == "trace-ok")
        a = attrs(server)
        assert server.kind == server.SPAN_KIND_SERVER
        assert server.name == "POST /v1/chat/completions"
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "gpt-4o-mini"
        assert a["gen_ai.response.model"] == "gpt-4o-mini"
        assert a["gen_ai.provider.name"] == "openai" and a["gen_ai.system"] == "openai"
        assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
        assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
        assert a["http.response.status_code"] == 200
        (attempt,) = _children(receiver, server)
        b = attrs(attempt)
        assert attempt.kind == attempt.SPAN_KIND_CLIENT
        assert attempt.name == "chat gpt-4o-mini"
        assert b["gen_ai.request.model"] == "gpt-4o-mini"
        assert b["gen_ai.request.max_tokens"] == 50
        assert b["gen_ai.provider.name"] == "openai"
        assert b["server.address"] == "127.0.0.1"
        assert b["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
        assert b["gen_ai.response.finish_reasons"] == ["stop"]

        # two failed attempts (retries: 1): two child spans, each with its error
        fault_upstream.set_fault("status:500")
        with pytest.raises(openai.APIStatusError):
            sdk.chat.completions.create(model="faulty", messages=[{"role": "user",
                                                                   "content": "x"}],
                                        extra_headers={"x-request-id": "trace-fail"})
        (failed,) = receiver.wait(lambda s: attrs(s).get("gateway.request_id") == "trace-fail")
        assert attrs(failed)["error.type"] == "upstream_error"
        assert attrs(failed)["gateway.attempts"] == 2
        assert failed.status.code == failed.status.STATUS_CODE_ERROR
        tries = _children(receiver, failed)
        assert len(tries) == 2
        assert all(attrs(t)["error.type"] == "500" for t in tries)

        # a stream: the attempt span lasts until the stream ends
        fault_upstream.set_fault(None)
        text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "stream it"}], stream=True,
            extra_headers={"x-request-id": "trace-stream"}) if c.choices)
        (streamed,) = receiver.wait(
            lambda s: attrs(s).get("gateway.request_id") == "trace-stream")
        assert attrs(streamed)["gen_ai.request.stream"] is True
        (demo_try,) = _children(receiver, streamed)
        assert demo_try.name == "chat demo-1" and attrs(demo_try)["gen_ai.provider.name"] == \
            "demo"
        assert demo_try.end_time_unix_nano >= demo_try.start_time_unix_nano
        assert text

        # no prompt or answer text anywhere by default
        with receiver.lock:
            everything = [str(v) for s in receiver.spans for v in attrs(s).values()]
        assert not any(SECRET_PROMPT in v for v in everything)
        assert not any("gen_ai.input.messages" in attrs(s) for s in receiver.spans)
    finally:
        gw.stop()


def test_prompt_text_only_when_configured(tmp_path: Path, upstream: FakeUpstream,
                                          fault_upstream: FakeUpstream,
                                          receiver: Receiver) -> None:
    gw = _gateway(tmp_path, upstream, fault_upstream, receiver,
                  GATEWAY_TRACE_CONTENT="true").start()
    try:
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        sdk.chat.completions.create(model="demo",
                                    messages=[{"role": "user", "content": SECRET_PROMPT}],
                                    extra_headers={"x-request-id": "trace-content"})
        (server,) = receiver.wait(
            lambda s: attrs(s).get("gateway.request_id") == "trace-content")
        a = attrs(server)
        assert SECRET_PROMPT in a["gen_ai.input.messages"]
        assert SECRET_PROMPT in a["gen_ai.output.messages"]  # the demo model echoes it
    finally:
        gw.stop()
