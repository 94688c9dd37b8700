"""Clients whose default is the Responses API, against a real gateway: a Codex-style client
that reads only the terminal events, the OpenAI Agents SDK's default model with a function
tool, and the Vercel AI SDK's `openai(model)` from Node. Each must show the right final text.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.responses import PATHS, ResponsesGateway, start_responses_gateway

NODE_CLIENTS = Path(__file__).parents[1] / "clients" / "node"


@pytest.fixture(scope="module")
def rg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResponsesGateway]:
    yield from start_responses_gateway(tmp_path_factory.mktemp("responses-clients"))


@pytest.fixture
def tools_on_auto(rg: ResponsesGateway) -> Iterator[None]:
    """The upstream's model decides to call a tool (as a real one asked about the weather)."""
    rg.upstream.set_fault("tool-on-auto")
    yield
    rg.upstream.set_fault(None)


def _expected(model: str, said: str) -> str:
    prefix = "This is the offline demo model. You said: " if model == "demo" else "fake: "
    return prefix + said


# --- a Codex-style client: terminal events only ---------------------------------------------

def codex_style_turn(rg: ResponsesGateway, body: dict[str, Any]) -> dict[str, Any]:
    """What Codex-like agents do: stream, ignore every delta, and build the turn from
    `response.output_item.done` items, checked against `response.completed`'s output."""
    items: dict[int, dict[str, Any]] = {}
    final: dict[str, Any] | None = None
    with httpx.stream("POST", rg.gateway.url + "/v1/responses", timeout=30,
                      json={**body, "stream": True},
                      headers={"authorization": f"Bearer {rg.key}"}) as r:
        assert r.status_code == 200
        event_name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event_name = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if event_name == "response.output_item.done":
                    items[data["output_index"]] = data["item"]
                elif event_name in ("response.completed", "response.incomplete",
                                    "response.failed"):
                    final = data["response"]
    assert final is not None, "no terminal event"
    assert final["output"] == [items[i] for i in sorted(items)]
    return final


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"] if part["type"] == "output_text")


@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_a_client_reading_only_terminal_events_gets_the_whole_answer(
        rg: ResponsesGateway, model: str) -> None:
    first = codex_style_turn(rg, {"model": model, "input": "refactor this"})
    assert _text(first) == _expected(model, "refactor this")
    assert first["status"] == "completed" and first["usage"]["output_tokens"] > 0
    weather = {"type": "function", "name": "shell", "parameters": {"type": "object"}}
    call_turn = codex_style_turn(rg, {"model": model, "input": "list files", "tools": [weather],
                                      "tool_choice": "required",
                                      "previous_response_id": first["id"]})
    (call,) = call_turn["output"]
    assert call["type"] == "function_call" and call["name"] == "shell"
    last = codex_style_turn(rg, {"model": model, "previous_response_id": call_turn["id"],
                                 "tools": [weather],
                                 "input": [{"type": "function_call_output",
                                            "call_id": call["call_id"], "output": "a.py"}]})
    assert last["status"] == "completed" and last["previous_response_id"] == call_turn["id"]


# --- the OpenAI Agents SDK --------------------------------------------------------------------

def _run_agent(rg: ResponsesGateway, model: str, streamed: bool) -> tuple[str, list[str]]:
    from agents import Agent, Runner, function_tool, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel

    set_tracing_disabled(True)
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"sunny in {city}"

    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=rg.gateway.base_url, api_key=rg.key,
                                    max_retries=0)
        try:
            # the SDK's default model class: the Responses API
            agent = Agent(name="weather", instructions="Answer with the tool.",
                          tools=[get_weather],
                          model=OpenAIResponsesModel(model=model, openai_client=client))
            if not streamed:
                result = await Runner.run(agent, "What is the weather in Oslo?")
                return str(result.final_output)
            run = Runner.run_streamed(agent, "What is the weather in Oslo?")
            async for _ in run.stream_events():
                pass
            return str(run.final_output)
        finally:
            await client.close()

    return asyncio.run(run()), calls


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("model", ["chat", "native"], ids=[PATHS["chat"], PATHS["native"]])
def test_the_agents_sdk_default_model_calls_its_tool_and_answers(
        rg: ResponsesGateway, tools_on_auto: None, model: str, streamed: bool) -> None:
    answer, calls = _run_agent(rg, model, streamed)
    assert len(calls) == 1  # the model asked, the SDK ran the tool, sent its output back
    assert answer == "fake: What is the weather in Oslo?"


def test_the_agents_sdk_default_model_on_the_demo_model(rg: ResponsesGateway) -> None:
    """The demo model uses an offered tool once (string arguments filled with "demo"), then
    answers the user's question in text."""
    answer, calls = _run_agent(rg, "demo", streamed=True)
    assert calls == ["demo"]
    assert answer == _expected("demo", "What is the weather in Oslo?")


# --- the Vercel AI SDK (Node) -----------------------------------------------------------------

@pytest.mark.parametrize("model", list(PATHS), ids=list(PATHS.values()))
def test_the_ai_sdk_default_openai_model_generates_and_streams(rg: ResponsesGateway,
                                                              model: str) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_CLIENTS / "node_modules" / "ai").is_dir():
        pytest.skip("the AI SDK is not installed: run `make node-clients` (npm ci in "
                    "tests/clients/node)")
    done = subprocess.run([node, str(NODE_CLIENTS / "ai_sdk.mjs"), rg.gateway.base_url,
                           rg.key, model], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["generate"] == _expected(model, "hello from the AI SDK")
    assert out["generateResponseId"].startswith("resp_")
    assert out["stream"] == out["deltas"] == _expected(model, "streamed from the AI SDK")
    assert out["finishReason"] == "stop"
    assert out["usage"]["outputTokens"] > 0 and out["usage"]["inputTokens"] > 0
