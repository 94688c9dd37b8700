"""A paced stream keeps its pace through the gateway: with the shipped default policy (output
rules credit_card and secret), each word reaches the official `openai` client with the
upstream chunk that carried it, not one chunk later, and no empty delta is sent mid-stream."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import REPO, GatewayProcess

PACE_MS = 300
BOUND_MS = 100
WORDS = ["fake:", " Hello", " from", " the", " gateway"]  # the fake's reply, one per chunk


@pytest.fixture(scope="module")
def paced_upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(name="paced", fault=f"chunk-delay:{PACE_MS}").start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def paced_gw(tmp_path_factory: pytest.TempPathFactory, paced_upstream: FakeUpstream
             ) -> Iterator[GatewayProcess]:
    config = f"""
models:
  - name: paced
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{paced_upstream.url}/v1"}}]
policies_dir: {REPO / "policies"}
"""
    gw = GatewayProcess(tmp_path_factory.mktemp("paced"), config).start()
    yield gw
    gw.stop()


def test_each_word_arrives_with_its_upstream_chunk_under_the_default_policy(
        paced_gw: GatewayProcess) -> None:
    created = paced_gw.create_key(name="paced-app")
    effective = paced_gw.admin("GET", f"/admin/policies/effective?key_id={created['id']}")
    assert effective.json()["pii"]["output"] == {"credit_card": "redact", "secret": "redact"}
    client = openai.OpenAI(base_url=paced_gw.base_url, api_key=created["key"], max_retries=0)
    arrivals: list[tuple[float, str | None, str | None]] = []
    stream = client.chat.completions.create(
        model="paced", stream=True,
        messages=[{"role": "user", "content": "Hello from the gateway"}])
    for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            arrivals.append((time.monotonic(), choice.delta.content, choice.finish_reason))
    start = arrivals[0][0]  # the role chunk: the upstream's first event, sent at once
    assert arrivals[0][1] == ""
    words = [(t, text) for t, text, finish in arrivals[1:] if finish is None]
    assert [text for _, text in words] == WORDS  # one word per chunk: none merged, none empty
    for k, (t, text) in enumerate(words, start=1):
        late_ms = (t - start) * 1000 - k * PACE_MS  # the upstream sends event k at k * pace
        assert -BOUND_MS < late_ms < BOUND_MS, (text, round(late_ms))
    assert arrivals[-1][2] == "stop"
