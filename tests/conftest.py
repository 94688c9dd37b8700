"""Shared fixtures: a fake OpenAI/Anthropic upstream, a real gateway process, SDK clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess, free_port

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

UPSTREAM_OPENAI_KEY = "sk-upstream-openai-secret"
UPSTREAM_ANTHROPIC_KEY = "sk-ant-upstream-secret"


def standard_config(upstream_url: str, fault_url: str | None = None) -> str:
    """The test gateway's models; `faulty` routes to an upstream whose fault a test sets."""
    closed = free_port()
    fault_url = fault_url or upstream_url
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: demo-embed
    deployments: [{{model: demo/demo-embed-1}}]
  - name: gpt-4o-mini
    deployments:
      - model: openai/gpt-4o-mini
        api_base: {upstream_url}/v1
        api_key: env:FAKE_OPENAI_KEY
  - name: gpt-3.5-turbo-instruct
    deployments:
      - model: openai/gpt-3.5-turbo-instruct
        api_base: {upstream_url}/v1
  - name: text-embedding-3-small
    deployments:
      - model: openai/text-embedding-3-small
        api_base: {upstream_url}/v1
  - name: claude-haiku
    deployments:
      - model: anthropic/claude-3-5-haiku-20241022
        api_base: {upstream_url}
        api_key: env:FAKE_ANTHROPIC_KEY
  - name: faulty
    deployments:
      - model: openai/gpt-4o-mini
        api_base: {fault_url}/v1
        first_token_timeout_s: 2
        idle_timeout_s: 2
        timeout_s: 3
  - name: broken
    deployments:
      - model: openai/nothing-listens
        api_base: http://127.0.0.1:{closed}/v1
        connect_timeout_s: 1
router: {{strategy: weighted, retries: 1, total_timeout_s: 20, cooldown_s: 1,
          failures_to_cooldown: 100}}
server: {{max_body_bytes: 65536, max_json_depth: 16, max_messages: 64, max_n: 4}}
"""


GATEWAY_ENV = {"FAKE_OPENAI_KEY": UPSTREAM_OPENAI_KEY, "FAKE_ANTHROPIC_KEY": UPSTREAM_ANTHROPIC_KEY}


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(name="fake-a").start()
    yield up
    up.stop()


@pytest.fixture(scope="session")
def fault_upstream_server() -> Iterator[FakeUpstream]:
    up = FakeUpstream(name="fake-faulty").start()
    yield up
    up.stop()


@pytest.fixture
def fault_upstream(fault_upstream_server: FakeUpstream) -> Iterator[FakeUpstream]:
    """The upstream behind the `faulty` model; its fault is reset after each test."""
    fault_upstream_server.clear()
    yield fault_upstream_server
    fault_upstream_server.set_fault(None)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream,
            fault_upstream_server: FakeUpstream) -> Iterator[GatewayProcess]:
    """One real gateway for the session (SQLite file, fake upstreams, demo provider)."""
    proc = GatewayProcess(tmp_path_factory.mktemp("gw"),
                          standard_config(upstream.url, fault_upstream_server.url),
                          env=GATEWAY_ENV).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def app_key(gateway: GatewayProcess) -> str:
    return gateway.create_key(name="app-session")["key"]


@pytest.fixture
def client(gateway: GatewayProcess, app_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)


@pytest.fixture
async def aclient(gateway: GatewayProcess, app_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    # Closed in the test's own loop: a client collected later closes sockets whose file
    # descriptors a later test's connections may have been given by then (their reads hang).
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=app_key, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
