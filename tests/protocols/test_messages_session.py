"""A Claude-Code-shaped session through the gateway: a system prompt with `cache_control`,
tools, thinking enabled, several streamed tool-use / tool-result turns, with the headers
Claude Code sends, once through a passthrough deployment (the fake's Anthropic API, which
checks thinking signatures as Anthropic does) and once through translation (the fake's
OpenAI Chat). Both give equivalent blocks; every request's audit event carries the session;
PII rules reach tool calls and results but never signed thinking; the audit chain verifies
and covers the session column."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anthropic
import pytest

from gateway.audit.chain import HASHED_COLUMNS, LATE_COLUMNS, canonical
from tests.conftest import GATEWAY_ENV
from tests.fakes.upstream import FakeUpstream, signature
from tests.support.gateway_proc import GatewayProcess, run_in_thread

EMAIL = "ana.lima@example.org"
TOOLS = [{"name": "Read", "description": "Read a file from the workspace",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}},
                           "required": ["query"]}},
         {"name": "Bash", "description": "Run a command",
          "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}}}]
# What Claude Code sends besides the body (recorded from its requests to a gateway).
CLAUDE_CODE_HEADERS = {"anthropic-version": "2023-06-01",
                       "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,"
                                         "fine-grained-tool-streaming-2025-05-14",
                       "anthropic-dangerous-direct-browser-access": "true",
                       "x-app": "cli", "user-agent": "claude-cli/2.1.0 (external, cli)"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                         FakeUpstream]]:
    up = FakeUpstream(name="session").start()
    work: Path = tmp_path_factory.mktemp("session")
    (work / "policies").mkdir()
    (work / "policies" / "pii.yaml").write_text(
        "name: pii\napplies_to: {teams: [pii]}\npii: {input: {email: redact}}\n")
    config = f"""
models:
  - name: claude-agent
    deployments: [{{model: anthropic/claude-agent-1, api_base: "{up.url}",
                    api_key: env:FAKE_ANTHROPIC_KEY}}]
  - name: gpt-agent
    deployments: [{{model: openai/gpt-agent-1, api_base: "{up.url}/v1"}}]
policies_dir: policies
"""
    gw = GatewayProcess(work, config, env=GATEWAY_ENV).start()
    try:
        gw.create_team(name="pii")
        yield gw, up
    finally:
        gw.stop()
        up.stop()


def _sdk(gw: GatewayProcess, key: str, session: str) -> anthropic.Anthropic:
    # Claude Code authenticates with ANTHROPIC_AUTH_TOKEN: a bearer token.
    return anthropic.Anthropic(base_url=gw.url, auth_token=key, max_retries=0, timeout=30,
                               _strict_response_validation=True,
                               default_headers={**CLAUDE_CODE_HEADERS,
                                                "x-claude-code-session-id": session})


def _session(sdk: anthropic.Anthropic, model: str, asks: list[str]) -> list[Any]:
    """Plays the agent loop: each ask is a user turn; each tool call gets a tool result."""
    system = [{"type": "text", "text": "You are Claude Code, a coding agent.",
               "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Workspace: /repo"}]
    messages: list[dict[str, Any]] = []
    replies = []
    for ask in asks:
        messages.append({"role": "user", "content": [{"type": "text", "text": ask}]})
        while True:
            with sdk.messages.stream(model=model, max_tokens=2048, system=system, tools=TOOLS,
                                     thinking={"type": "enabled", "budget_tokens": 1024},
                                     metadata={"user_id": "user_abc_account__session_x"},
                                     messages=messages) as stream:
                reply = stream.get_final_message()
            replies.append(reply)
            messages.append({"role": "assistant",
                             "content": [b.model_dump(exclude_none=True) for b in reply.content
                                         if b.type != "text" or b.text]})
            calls = [b for b in reply.content if b.type == "tool_use"]
            if not calls:
                break
            messages.append({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": c.id,
                 "content": [{"type": "text", "text": f"result of {c.input['query']}"}]}
                for c in calls]})
    return replies


def _blocks(reply: Any) -> list[tuple[str, Any]]:
    out = []
    for b in reply.content:
        value = {"thinking": getattr(b, "thinking", None), "text": getattr(b, "text", None),
                 "tool_use": (getattr(b, "name", None), getattr(b, "input", None))}[b.type]
        out.append((b.type, value))
    return out


def test_a_claude_code_session_gives_equivalent_blocks_through_passthrough_and_translation(
        gateway: tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, up = gateway
    key = gw.create_key(name="claude-code")["key"]
    asks = ["open README.md", "now list the tests"]
    sessions = {model: "sess-" + uuid.uuid4().hex for model in ("claude-agent", "gpt-agent")}
    up.clear()
    results = {model: _session(_sdk(gw, key, session), model, asks)
               for model, session in sessions.items()}
    native, translated = results["claude-agent"], results["gpt-agent"]
    assert [_blocks(r) for r in native] == [_blocks(r) for r in translated]
    assert [r.stop_reason for r in native] == ["tool_use", "end_turn", "tool_use", "end_turn"]
    # signed thinking came back to Anthropic as it was signed (the fake checks each signature),
    # never with cache_control; the unsigned thinking of the translated route never went there
    anthropic_bodies = [r["body"] for r in up.requests if r["path"] == "/v1/messages"]
    sent_thinking = [b for body in anthropic_bodies for m in body["messages"]
                     if isinstance(m["content"], list) for b in m["content"]
                     if b["type"] == "thinking"]
    assert sent_thinking and all(b["signature"] == signature(b["thinking"]) and
                                 "cache_control" not in b for b in sent_thinking)
    assert anthropic_bodies[0]["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert all(r["headers"]["anthropic-beta"] == CLAUDE_CODE_HEADERS["anthropic-beta"]
               for r in up.requests if r["path"] == "/v1/messages")
    # the session in every event, and a session filter to read it back
    for model, session in sessions.items():
        events = gw.wait_for_audit("session_id = :s", {"s": session}, count=4)
        assert {e["endpoint"] for e in events} == {"/v1/messages"}
        assert all(e["model_served"] == model and e["stream"] for e in events)
        listed = gw.admin("GET", f"/audit/events?session_id={session}").json()["data"]
        assert [e["session_id"] for e in listed] == [session] * 4
    assert gw.cli("audit", "verify", check=False).returncode == 0


def test_pii_rules_reach_tool_calls_and_results_but_never_signed_thinking(
        gateway: tuple[GatewayProcess, FakeUpstream]) -> None:
    gw, up = gateway
    plain = gw.create_key(name="cc-plain")["key"]
    guarded = gw.create_key(name="cc-pii", team="pii")["key"]
    # a first turn without rules: the model's signed thinking mentions the address
    first = _sdk(gw, plain, "s1").messages.create(
        model="claude-agent", max_tokens=500, tools=TOOLS,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": f"mail {EMAIL}"}])
    assert EMAIL in first.content[0].thinking  # type: ignore[union-attr]
    call = first.content[1]
    history = [{"role": "user", "content": f"mail {EMAIL}"},
               {"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                 for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                             "content": f"sent to {EMAIL}"}]}]
    up.clear()
    rid = "cc-pii-" + uuid.uuid4().hex[:8]
    reply = _sdk(gw, guarded, "s2").messages.create(
        model="claude-agent", max_tokens=500, tools=TOOLS, extra_headers={"x-request-id": rid},
        thinking={"type": "enabled", "budget_tokens": 1024}, messages=history)
    assert reply.stop_reason == "end_turn"  # the fake accepted the thinking's signature
    sent = up.requests[-1]["body"]["messages"]
    assert EMAIL in sent[1]["content"][0]["thinking"]  # signed: untouched
    assert EMAIL not in str(sent[1]["content"][1]["input"])  # tool_use.input: redacted
    assert EMAIL not in str(sent[2]["content"]) and "[EMAIL_1]" in str(sent[2]["content"])
    gw.wait_for_audit("request_id = :r", {"r": rid})
    (event,) = gw.admin("GET", f"/audit/events?request_id={rid}").json()["data"]
    assert EMAIL not in str(event["request_body"])  # what is stored scans thinking too
    assert event["pii"]["email"]["action"] == "redact"


def test_rows_without_a_session_hash_exactly_as_before_the_column_existed() -> None:
    """Old chains still verify: the encoding only grows when a late column is set."""
    assert "session_id" not in HASHED_COLUMNS and "session_id" in LATE_COLUMNS
    assert HASHED_COLUMNS[-5:] == ("usage_source", "cost_estimated", "replica", "seq",
                                   "prev_hash")  # the columns of the chain's first version
    row = {name: None for name in HASHED_COLUMNS} | {
        "id": "e1", "request_id": "r1", "received_at": datetime(2026, 1, 1), "endpoint": "/v1",
        "status_code": 200}
    before = canonical(row, None, "{}")
    assert canonical({**row, "session_id": None}, None, "{}") == before
    assert before.startswith(b'["e1","r1","2026-01-01T00:00:00.000000"')
    assert canonical({**row, "session_id": "s"}, None, "{}") != before


def test_a_changed_session_id_breaks_the_chain(gateway: tuple[GatewayProcess, FakeUpstream]
                                               ) -> None:
    gw, _ = gateway
    key = gw.create_key(name="cc-chain")["key"]
    session = "sess-" + uuid.uuid4().hex
    _sdk(gw, key, session).messages.create(model="gpt-agent", max_tokens=50,
                                           messages=[{"role": "user", "content": "hi"}])
    (event,) = gw.wait_for_audit("session_id = :s", {"s": session})
    assert gw.cli("audit", "verify", check=False).returncode == 0

    async def tamper() -> None:
        from sqlalchemy import text

        from gateway.storage.engine import create_engine
        engine = create_engine(gw.database_url, pool_size=1)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE audit_events SET session_id = 'other' "
                                        "WHERE id = :i"), {"i": event["id"]})
        finally:
            await engine.dispose()

    run_in_thread(tamper)
    assert gw.cli("audit", "verify", check=False).returncode == 1
