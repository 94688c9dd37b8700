"""`gateway.yaml`: strict parsing, `FILE: key.path: reason` lines, exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from tests.support.gateway_proc import GATEWAY_BIN, REPO


def _errors(tmp_path: Path, text: str, env: dict | None = None) -> list[str]:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env or {})
    return info.value.lines


def test_shipped_config_is_valid() -> None:
    cfg = load_config(REPO / "gateway.yaml", environ={})
    assert "demo" in cfg.models
    assert cfg.server.max_body_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize("text,expected", [
    ("models: [{name: a, deployments: [{model: demo/x, wieght: 2}]}]",
     "models[0].deployments[0].wieght: unknown key"),
    ("surprise: 1", "surprise: unknown key"),
    ("models: [{name: a, deployments: []}]", "models[0].deployments: "),
    ("models: [{name: a, deployments: [{model: openai/x, api_key: sk-literal}]}]",
     "models[0].deployments[0].api_key: secrets only by reference"),
    ("models: [{name: a, deployments: [{model: openai/x, api_key: 'env:NOPE_KEY'}]}]",
     "models[0].deployments[0].api_key: environment variable NOPE_KEY is not set"),
    ("models: [{name: a, deployments: [{model: demo/x}, {model: openai/x, api_base: 'ftp://x'}]}]",
     "models[0].deployments[1].api_base: must be an http:// or https:// URL"),
    ("models: [{name: a, deployments: [{model: demo/x}], fallbacks: [zzz]}]",
     "models[0].fallbacks[0]: unknown model 'zzz'"),
    ("router: {strategy: random}", "router.strategy: "),
    ("server: {max_body_bytes: -1}", "server.max_body_bytes: "),
    ("limits: {on_redis_error: maybe}", "limits.on_redis_error: "),
    ("audit: {bodies: all}", "audit.bodies: "),
    ("models: [{name: a, deployments: [{model: demo/x}]},"
     " {name: a, deployments: [{model: demo/y}]}]",
     "models[1].name: duplicate model name 'a'"),
    ("models: [{name: a, deployments: [{model: demo/x}], fallbacks: [b]},"
     " {name: b, deployments: [{model: demo/y}], fallbacks: [a]}]",
     "fallback cycle: a -> b -> a"),
    ("models: [{name: a, deployments: [{model: demo/x, native_messages: true}]}]",
     "models[0].deployments[0].native_messages: the demo provider speaks OpenAI Chat"),
    ("models: [{name: a, deployments: [{model: openai/x, native_messages: true}]}]",
     "models[0].deployments[0].native_messages: needs an api_base that serves /v1/messages"),
    ("models: [{name: a, deployments: [{model: anthropic/x, anthropic_beta_allowlist: b}]}]",
     "models[0].deployments[0].anthropic_beta_allowlist: "),
    ("models: [\n  - name: a\n  bad indent", "not valid YAML"),
    ("- just\n- a list", "(top level): must be a mapping"),
])
def test_bad_config_lines(tmp_path: Path, text: str, expected: str) -> None:
    lines = _errors(tmp_path, text)
    assert any(expected in line for line in lines), lines
    assert all(line.startswith(f"{tmp_path / 'g.yaml'}: ") for line in lines)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    lines = _errors(tmp_path, "router: {retries: -1, strategy: x}\nserver: {max_n: 0}\n")
    assert len(lines) == 3


def test_secret_reference_resolves(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("models: [{name: a, deployments: [{model: openai/x, api_key: 'env:K',"
                    " api_base: 'env:B'}]}]")
    cfg = load_config(path, environ={"K": "sk-123", "B": "http://127.0.0.1:1/v1/"})
    assert cfg.api_key(0, 0) == "sk-123"
    assert cfg.api_base(0, 0) == "http://127.0.0.1:1/v1"


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | env
    return subprocess.run([str(GATEWAY_BIN), *args], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = _cli(["check-config"], {"GATEWAY_CONFIG": str(REPO / "gateway.yaml")}, tmp_path)
    assert good.returncode == 0, good.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, deployments: [{model: demo/x, weight: 0}]}]\nextra: 1\n")
    out = _cli(["check-config"], {"GATEWAY_CONFIG": "bad.yaml"}, tmp_path)
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "bad.yaml: models[0].deployments[0].weight: Input should be greater than 0",
        "bad.yaml: extra: unknown key",
    ]
    missing = _cli(["check-config"], {"GATEWAY_CONFIG": "nope.yaml"}, tmp_path)
    assert missing.returncode == 1 and "nope.yaml: (file): not found" in missing.stderr
    assert _cli(["frobnicate"], {}, tmp_path).returncode == 2


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: 3\n")
    out = _cli(["serve"], {"GATEWAY_CONFIG": str(bad), "GATEWAY_PORT": "1"}, tmp_path)
    assert out.returncode == 1
    assert f"{bad}: models: " in out.stderr
