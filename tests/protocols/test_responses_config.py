"""`gateway.yaml` for the Responses API: `native_responses` per deployment (OpenAI-compatible
providers only, refused elsewhere with a `FILE: key.path: reason` line), `responses:
{retention_days}`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from gateway.routing.deployments import build_slots, native_problems
from tests.support.gateway_proc import GATEWAY_BIN


def _load(tmp_path: Path, text: str) -> tuple[Path, object]:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return path, load_config(path, environ={})


@pytest.mark.parametrize(("model", "native"), [
    ("openai/gpt-4.1", True), ("hosted_vllm/qwen", True), ("openai/gpt-4o-mini", False),
])
def test_native_responses_is_what_the_deployment_serves_as_it_comes(
        tmp_path: Path, model: str, native: bool) -> None:
    _, cfg = _load(tmp_path, f"models: [{{name: m, deployments: [{{model: {model}, "
                             f"api_base: 'http://127.0.0.1:9/v1', "
                             f"native_responses: {str(native).lower()}}}]}}]")
    (slot,) = build_slots(cfg)["m"]  # type: ignore[arg-type]
    assert ("responses" in slot.target.native) is native
    assert native_problems(cfg) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["anthropic/claude-3-5-haiku-20241022", "demo/demo-1",
                                   "bedrock/anthropic.claude-v2"])
def test_native_responses_on_a_translated_provider_is_a_config_error(
        tmp_path: Path, model: str) -> None:
    path, cfg = _load(tmp_path, f"models: [{{name: m, deployments: [{{model: {model}, "
                                "native_responses: true}]}]")
    assert native_problems(cfg) == [  # type: ignore[arg-type]
        f"{path}: models[0].deployments[0].native_responses: needs an OpenAI-compatible "
        f"provider ({model.split('/')[0]!r} is served by translation)"]
    done = subprocess.run([str(GATEWAY_BIN), "check-config"], capture_output=True, text=True,
                          env={"GATEWAY_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
                          check=False, timeout=60)
    assert done.returncode == 1
    assert "models[0].deployments[0].native_responses: needs an OpenAI-compatible" \
        in done.stderr


def test_retention_days_defaults_to_30_and_is_checked(tmp_path: Path) -> None:
    _, cfg = _load(tmp_path, "models: []")
    assert cfg.responses.retention_days == 30  # type: ignore[attr-defined]
    for bad, why in (("responses: {retention_days: 0}", "responses.retention_days: "),
                     ("responses: {keep: 3}", "responses.keep: unknown key")):
        path = tmp_path / "bad.yaml"
        path.write_text(bad)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert any(why in line for line in info.value.lines), info.value.lines
