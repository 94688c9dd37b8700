"""The README's local-model examples (Ollama, vLLM, a generic OpenAI-compatible server), run as
written through a real gateway, each URL answered by a fake upstream of its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
import yaml

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import REPO, GatewayProcess

VLLM_KEY = "vllm-test-secret"
MSG = [{"role": "user", "content": "hello local"}]


def readme_config() -> dict[str, Any]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Local models", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    return yaml.safe_load(block)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[GatewayProcess, dict[str, FakeUpstream], dict[str, Any]]]:
    config = readme_config()
    fakes: dict[str, FakeUpstream] = {}  # the README's host:port -> a fake standing in for it
    for model in config["models"]:
        for dep in model["deployments"]:
            url = urlsplit(dep["api_base"])
            if url.netloc not in fakes:
                fakes[url.netloc] = FakeUpstream(name=url.netloc).start()
            dep["api_base"] = fakes[url.netloc].url + url.path
    proc = GatewayProcess(tmp_path_factory.mktemp("local"), yaml.safe_dump(config),
                          env={"VLLM_API_KEY": VLLM_KEY}).start()
    yield proc, fakes, readme_config()
    proc.stop()
    for up in fakes.values():
        up.stop()


def _requests(up: FakeUpstream) -> list[dict[str, Any]]:
    return [r for r in up.requests if r["path"].endswith("/chat/completions")]


@pytest.mark.parametrize("name,netloc,upstream_model", [
    ("llama3", "127.0.0.1:11434", "llama3.2"),
    ("qwen", "127.0.0.1:8000", "Qwen/Qwen2.5-7B-Instruct"),
    ("local", "127.0.0.1:8080", "my-local-model"),
])
def test_readme_local_model_answers(local: Any, name: str, netloc: str,
                                    upstream_model: str) -> None:
    proc, fakes, original = local
    assert name in {m["name"] for m in original["models"]}
    up = fakes[netloc]
    up.clear()
    sdk = openai.OpenAI(base_url=proc.base_url, api_key=proc.create_key(name=name)["key"],
                        max_retries=0)
    reply = sdk.chat.completions.create(model=name, messages=MSG)
    assert reply.model == name and reply.choices[0].message.content == "fake: hello local"
    text = "".join(c.choices[0].delta.content or ""
                   for c in sdk.chat.completions.create(model=name, messages=MSG, stream=True)
                   if c.choices)
    assert text == "fake: hello local"
    sent = _requests(up)
    assert len(sent) == 2 and {r["body"]["model"] for r in sent} == {upstream_model}
    assert all(r["path"] == "/v1/chat/completions" for r in sent)
    auth = {r["headers"].get("authorization") for r in sent}
    assert auth == ({f"Bearer {VLLM_KEY}"} if name == "qwen" else {None})


def test_readme_local_fallback_and_pool(local: Any) -> None:
    proc, fakes, _ = local
    generic, ollama = fakes["127.0.0.1:8080"], fakes["127.0.0.1:11434"]
    sdk = openai.OpenAI(base_url=proc.base_url, api_key=proc.create_key(name="fb")["key"],
                        max_retries=0)
    generic.set_fault("status:503")
    try:
        reply = sdk.chat.completions.create(model="local", messages=MSG,
                                            extra_headers={"x-request-id": "local-fb"})
    finally:
        generic.set_fault(None)
    assert reply.model == "llama3"
    (event,) = proc.wait_for_audit("request_id = 'local-fb'")
    assert event["fallback_used"] and event["deployment"] == "openai/llama3.2"
    assert _requests(ollama)
    box1, box2 = fakes["10.0.0.11:11434"], fakes["10.0.0.12:11434"]
    for _ in range(20):
        sdk.chat.completions.create(model="llama3-pool", messages=MSG)
    assert len(_requests(box1)) + len(_requests(box2)) == 20
    assert _requests(box1) and _requests(box2)  # least-busy, ties by weight: both are used


def test_readme_config_is_valid_as_written(tmp_path: Path) -> None:
    proc = GatewayProcess(tmp_path, (REPO / "README.md").read_text()
                          .split("\n## Local models", 1)[1].split("```yaml\n", 1)[1]
                          .split("```", 1)[0], env={"VLLM_API_KEY": "x"})
    result = proc.cli("check-config", check=False)
    assert result.returncode == 0, result.stderr
