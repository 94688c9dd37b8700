"""`GATEWAY_PRELOAD` (on by default): a gateway starts at its working size. The tokenizers its
models count with and litellm (for a model served through it) are loaded before it answers,
not by the first request that needs them (which made RSS jump by 100-250 MB after a warm-up
and made that request wait seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import openai

from tests.conftest import GATEWAY_ENV, standard_config
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

HI = [{"role": "user", "content": "hi"}]


def rss_mb(gw: GatewayProcess) -> float:
    assert gw.proc is not None
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_first_requests_of_every_kind_do_not_grow_a_preloaded_gateway(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    gw = GatewayProcess(tmp_path, standard_config(upstream.url),
                        env={**GATEWAY_ENV, "GATEWAY_PRELOAD": "true"}).start(timeout_s=60)
    try:
        lines = [json.loads(line) for line in gw.log().splitlines() if line.startswith("{")]
        loaded = [line["loaded"] for line in lines if line.get("msg") == "preloaded"]
        assert loaded == [["cl100k_base", "o200k_base", "litellm"]]
        before = rss_mb(gw)
        sdk = openai.OpenAI(base_url=gw.base_url, api_key=gw.admin_key, max_retries=0)
        for model in ("demo", "gpt-4o-mini", "claude-haiku"):  # demo, direct, litellm
            sdk.chat.completions.create(model=model, messages=HI)
            list(sdk.chat.completions.create(model=model, messages=HI, stream=True))
        sdk.embeddings.create(model="text-embedding-3-small", input="hi")
        grown = rss_mb(gw) - before
        # ~20 MB of first-call state remains (litellm's provider modules, clients); without
        # the preload it was ~210 MB
        assert grown < 60, f"RSS grew {grown:.1f} MB with the first requests"
    finally:
        gw.stop()
