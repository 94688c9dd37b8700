"""An operator's `api_base` is a destination the gateway validates at start (issue 14)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config
from tests.support.gateway_proc import GATEWAY_BIN

ACCEPTED = [
    "http://127.0.0.1:11434/v1",
    "http://localhost:8000/v1/",
    "https://api.example.com",
    "http://[::1]:8080/v1",
    "http://vllm_service:8000/v1",  # a container service name
    "https://my-resource.openai.azure.com/openai",
]

REFUSED = [
    ("credentials", "http://admin:hunter2@10.0.0.5:8000/v1", "must not carry credentials"),
    ("user-only", "https://token@api.example.com/v1", "must not carry credentials"),
    ("fragment", "http://10.0.0.5:8000/v1#steal", "must not have a query string or a frag"),
    ("query", "http://10.0.0.5:8000/v1?api-version=1", "must not have a query string or a frag"),
    ("other-scheme", "ftp://10.0.0.5/v1", "must be an http:// or https:// URL"),
    ("no-host", "http:///v1", "must be an http:// or https:// URL"),
    ("empty-host", "http://:8000/v1", "must have a valid host name"),
    ("bad-host", "http://-evil-.example/v1", "must have a valid host name"),
    ("empty-label", "http://api..example.com/v1", "must have a valid host name"),
    ("bad-port", "http://10.0.0.5:99999/v1", "valid host and port"),
    ("port-zero", "http://10.0.0.5:0/v1", "port between 1 and 65535"),
    ("bad-ipv6", "http://[zz::1]/v1", "valid host and port"),
    ("space", "http://10.0.0.5/v1 /x", "without spaces or control characters"),
    ("newline", "http://10.0.0.5/v1\nHost: evil", "without spaces or control characters"),
    ("non-ascii", "http://exämple.com/v1", "IDN hosts in punycode"),
]


def _write(tmp_path: Path) -> Path:
    """A config whose one `api_base` comes from the environment variable BASE."""
    path = tmp_path / "g.yaml"
    path.write_text("models: [{name: a, deployments: [{model: openai/x, "
                    "api_base: 'env:BASE'}]}]\n")
    return path


@pytest.mark.parametrize("url", ACCEPTED)
def test_usable_destinations_are_accepted(tmp_path: Path, url: str) -> None:
    cfg = load_config(_write(tmp_path), environ={"BASE": url})
    assert cfg.api_base(0, 0) == url.rstrip("/")


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_unusable_destinations_fail_the_start_without_repeating_the_url(
        tmp_path: Path, case: tuple[str, str, str]) -> None:
    _, url, reason = case
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path), environ={"BASE": url})
    (line,) = info.value.lines
    assert line.startswith(f"{tmp_path / 'g.yaml'}: models[0].deployments[0].api_base: ")
    assert reason in line, line
    assert "hunter2" not in line and "steal" not in line and "evil" not in line


def test_check_config_exits_1_naming_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_CONFIG": str(path), "BASE": "http://admin:hunter2@10.0.0.5/v1"})
    out = subprocess.run([str(GATEWAY_BIN), "check-config"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "models[0].deployments[0].api_base: must not carry credentials" in out.stderr
    assert "hunter2" not in out.stderr + out.stdout
