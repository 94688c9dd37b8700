"""A gateway for `/v1/responses` tests: every path a Responses request can take, on fake
upstreams (one plain, one whose faults a test sets)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.fakes.upstream import FakeUpstream
from tests.support.gateway_proc import GatewayProcess

# model -> how /v1/responses reaches it
PATHS = {"demo": "demo model, by translation", "chat": "OpenAI-compatible Chat, by translation",
         "native": "native Responses passthrough"}

TEMPLATE = {"name": "support-bot", "variables": {"product": {"type": "string"}},
            "messages": [{"role": "system", "content": "You support {{ product }}."}]}


def responses_config(up: str, faulty: str) -> str:
    return f"""
models:
  - name: demo
    deployments: [{{model: demo/demo-1}}]
  - name: chat
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{up}/v1"}}]
  - name: native
    deployments: [{{model: openai/gpt-4.1, api_base: "{up}/v1", native_responses: true}}]
  - name: native-2
    deployments: [{{model: openai/gpt-4.1-mini, api_base: "{up}/v1", native_responses: true}}]
  - name: faulty-chat
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{faulty}/v1", idle_timeout_s: 2}}]
  - name: faulty-native
    deployments: [{{model: openai/gpt-4.1, api_base: "{faulty}/v1", native_responses: true,
                   idle_timeout_s: 2}}]
router: {{retries: 0, total_timeout_s: 20, failures_to_cooldown: 100}}
responses: {{retention_days: 7}}
"""


@dataclass
class ResponsesGateway:
    gateway: GatewayProcess
    upstream: FakeUpstream
    faulty: FakeUpstream
    key: str

    def post(self, body: dict[str, Any], key: str | None = None, **headers: str
             ) -> httpx.Response:
        return httpx.post(self.gateway.url + "/v1/responses", json=body, timeout=30,
                          headers={"authorization": f"Bearer {key or self.key}", **headers})

    def request(self, method: str, path: str, key: str | None = None) -> httpx.Response:
        return httpx.request(method, self.gateway.url + path, timeout=30,
                             headers={"authorization": f"Bearer {key or self.key}"})

    def upstream_bodies(self, path: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.upstream.requests if r["path"] == path]


def start_responses_gateway(workdir: Path, *, policies: dict[str, str] | None = None,
                            **gateway_args: Any) -> Iterator[ResponsesGateway]:
    """`policies`: policy files (name -> YAML) in the gateway's `policies/`."""
    (workdir / "policies").mkdir(parents=True, exist_ok=True)
    for name, text in (policies or {}).items():
        (workdir / "policies" / f"{name}.yaml").write_text(text)
    up = FakeUpstream(name="responses-up").start()
    faulty = FakeUpstream(name="responses-faulty").start()
    gw = GatewayProcess(workdir, responses_config(up.url, faulty.url), **gateway_args).start()
    try:
        assert gw.admin("POST", "/admin/templates", TEMPLATE).status_code == 201
        yield ResponsesGateway(gw, up, faulty, gw.create_key(name="responses-a")["key"])
    finally:
        gw.stop()
        up.stop()
        faulty.stop()


def sse_events(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE frame of a whole stream body."""
    out = []
    for frame in response.text.split("\n\n"):
        if not frame.strip():
            continue
        name, data = "", b""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:].encode()
        out.append((name, orjson.loads(data)))
    return out
