"""Claude Code through the gateway: its recorded request sequence replayed with the headers it
sends (always), and Claude Code itself (`claude -p`) when it is installed (`make claude-code`,
or `CLAUDE_CODE_BIN`), both on a passthrough model and on a translated one.

The recording (`tests/fakes/claude_code_requests.json`, Claude Code 2.1.197) is what it sent
for `claude -p 'say hello'`: a `HEAD /` probe, then two streamed `POST /v1/messages?beta=true`
turns with its betas, a `system` turn mid-conversation, adaptive thinking,
`context_management`, `output_config`, a tool call and its result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import GATEWAY_ENV
from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import REPO, GatewayProcess

RECORDING = json.loads((Path(__file__).parents[1] / "fakes" / "claude_code_requests.json")
                       .read_text())["requests"]
MODELS = ["claude-agent", "gpt-agent"]  # passthrough, translated


def _claude_bin() -> str | None:
    for candidate in (os.environ.get("CLAUDE_CODE_BIN"),
                      str(REPO / "tests" / "clients" / "node" / "node_modules" / ".bin" / "claude"),
                      str(REPO / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"),
                      shutil.which("claude")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                     FakeUpstream, str]]:
    up = FakeUpstream(name="claude-code").start()
    config = f"""
models:
  - name: claude-agent
    deployments: [{{model: anthropic/claude-agent-1, api_base: "{up.url}",
                    api_key: env:FAKE_ANTHROPIC_KEY}}]
  - name: gpt-agent
    deployments: [{{model: openai/gpt-agent-1, api_base: "{up.url}/v1"}}]
"""
    gw = GatewayProcess(tmp_path_factory.mktemp("claude-code"), config, env=GATEWAY_ENV).start()
    try:
        yield gw, up, gw.create_key(name="claude-code")["key"]
    finally:
        gw.stop()
        up.stop()


def _final_blocks(raw: bytes) -> list[str]:
    """The block types of a streamed message, checking the stream is whole."""
    names, blocks = [], []
    for event in raw.split(b"\n\n"):
        if not event.strip():
            continue
        name, _, data = event.partition(b"\n")
        payload = orjson.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        names.append(payload["type"])
        if payload["type"] == "content_block_start":
            blocks.append(payload["content_block"]["type"])
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    return blocks


def _replay(gw: GatewayProcess, key: str, model: str, session: str) -> list[list[str]]:
    answers = []
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        for recorded in RECORDING:
            headers = {**recorded["headers"], "authorization": f"Bearer {key}",
                       "x-claude-code-session-id": session}
            if recorded["method"] == "HEAD":  # its best-effort probe: any answer but a 5xx
                assert http.head(recorded["path"], headers=headers).status_code < 500
                continue
            body = {**recorded["body"], "model": model}
            r = http.post(recorded["path"], params=recorded["query"], headers=headers,
                          content=orjson.dumps(body))
            assert r.status_code == 200, r.text
            answers.append(_final_blocks(r.content))
    return answers


def test_claude_codes_recorded_requests_are_served_on_both_routes(
        env: tuple[GatewayProcess, FakeUpstream, str]) -> None:
    gw, up, key = env
    up.clear()
    sessions = {model: str(uuid.uuid4()) for model in MODELS}
    answers = {model: _replay(gw, key, model, sessions[model]) for model in MODELS}
    assert answers["claude-agent"] == answers["gpt-agent"] == [["thinking", "tool_use"],
                                                               ["thinking", "text"]]
    native = [r for r in up.requests if r["path"] == "/v1/messages"]
    recorded = RECORDING[1]["headers"]
    assert all(r["headers"]["anthropic-beta"] == recorded["anthropic-beta"] and
               r["headers"]["anthropic-version"] == recorded["anthropic-version"]
               for r in native)
    assert all(key not in orjson.dumps(r).decode() for r in up.requests)
    for model, session in sessions.items():
        events = gw.wait_for_audit("session_id = :s", {"s": session}, count=2)
        assert all(e["status_code"] == 200 and e["model_served"] == model for e in events)


@pytest.mark.skipif(_claude_bin() is None, reason="Claude Code is not installed "
                    "(make node-clients, or set CLAUDE_CODE_BIN)")
@pytest.mark.parametrize("model", MODELS)
def test_claude_code_itself_works_through_the_gateway(
        env: tuple[GatewayProcess, FakeUpstream, str], tmp_path: Path, model: str) -> None:
    gw, _, key = env
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    run_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home),
               "ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_AUTH_TOKEN": key,
               "ANTHROPIC_MODEL": model, "ANTHROPIC_DEFAULT_HAIKU_MODEL": model,
               # no network beyond the gateway: no telemetry, error reports or update checks
               "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
               "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    done = subprocess.run([str(_claude_bin()), "-p", "say hello", "--output-format", "json"],
                          env=run_env, cwd=work, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    assert not result["is_error"] and result["result"].startswith("fake: ")
    events = gw.wait_for_audit("session_id = :s", {"s": result["session_id"]},
                               count=result["num_turns"])
    assert all(e["endpoint"] == "/v1/messages" and e["status_code"] == 200 for e in events)
