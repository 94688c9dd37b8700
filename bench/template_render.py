"""Template expansion cost per request, for a cached template of a few KB (target < 50 µs).

Times what the `/v1` template stage adds to a request once the version is compiled (it is
compiled once per version and kept): resolve name + label, check the variables against the
schema, render every message in the sandbox (loops, conditionals, filters), merge model,
params and messages into the body. Three cases: a ~4 KB support prompt with loops and
conditionals, the shipped `support-triage` prompt, and a constant (no Jinja) prompt.
Also reports the one-time compile cost per version. Best of several runs, per operation.

With `--e2e` it also runs the real thing: `bench/upstream.py` (fake OpenAI) and `gateway
serve` (SQLite, audit on), and sends the same chat request as plain messages and as the
few-KB template (identical rendered messages), interleaved one by one on one keep-alive
connection so both see the same machine state: the difference in latency is what templates
add end to end (request parsing of the variables, expansion, nothing else).

    .venv/bin/python bench/template_render.py            # about 10 s
    .venv/bin/python bench/template_render.py --n 50000 --repeat 7
    .venv/bin/python bench/template_render.py --e2e --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.config import ServerConfig
from gateway.pipeline.stages.template import TemplateStage
from gateway.templates.files import load_prompt_files
from gateway.templates.registry import Label, Snapshot, TemplateRegistry
from gateway.templates.sandbox import make_environment
from gateway.templates.spec import canonical, content_hash, parse_spec
from gateway.templates.versions import TemplateVersion, compile_messages
from tests.support.contexts import make_ctx

TARGET_US = 50.0
ROOT = Path(__file__).resolve().parents[1]

_POLICY = "\n".join(
    f"- Rule {i}: when the customer mentions topic {i}, answer in a calm, precise tone, cite "
    f"the relevant help-centre article, and never promise dates, refunds or fixes." for i in
    range(1, 21))

FEW_KB = {
    "name": "bench-support",
    "model": "demo",
    "params": {"temperature": 0.2, "max_tokens": 400},
    "variables": {
        "customer": {"type": "object", "required": True},
        "ticket": {"type": "string", "required": True, "max_length": 20000},
        "tier": {"type": "string", "enum": ["free", "pro", "enterprise"], "default": "free"},
        "history": {"type": "array", "default": [], "max_length": 20},
        "products": {"type": "array", "default": []},
        "language": {"type": "string", "default": "English"},
        "escalate": {"type": "boolean", "default": False},
        "max_words": {"type": "integer", "default": 120},
    },
    "messages": [
        {"role": "system", "content":
            "You are the support assistant of Acme. Answer in {{ language }}, in at most "
            "{{ max_words }} words.\n" + _POLICY + "\n"
            "{% if tier == 'enterprise' %}This customer has an enterprise contract: offer a "
            "call with their account manager.{% elif tier == 'pro' %}This is a paying customer."
            "{% endif %}\n"
            "{% if escalate %}Escalate: tell the customer a human will follow up.{% endif %}\n"
            "Products the customer owns:\n"
            "{% for p in products %}- {{ p.name }} (plan {{ p.plan | upper }}, since "
            "{{ p.since }})\n{% endfor %}"},
        {"role": "user", "content":
            "Customer: {{ customer.name }} <{{ customer.email }}>, id {{ customer.id }}.\n"
            "{% if history %}Earlier messages:\n{% for h in history %}"
            "{{ loop.index }}. [{{ h.role }}] {{ h.text | truncate(200) }}\n{% endfor %}"
            "{% endif %}New ticket:\n<ticket>\n{{ ticket | trim }}\n</ticket>"},
    ],
}
FEW_KB_VARS = {
    "customer": {"name": "Dana Smith", "email": "dana@example.com", "id": "C-10042"},
    "ticket": "I was charged twice for my March invoice. Please refund the duplicate charge "
              "and confirm by email. " * 3,
    "tier": "enterprise",
    "history": [{"role": "customer", "text": "Hello, my invoice looks wrong."},
                {"role": "agent", "text": "Thanks, could you send the invoice number?"},
                {"role": "customer", "text": "It is INV-2026-0042."}],
    "products": [{"name": "Acme Cloud", "plan": "pro", "since": "2024-03"},
                 {"name": "Acme Backup", "plan": "basic", "since": "2025-01"}],
    "escalate": True,
}
CONSTANT = {"name": "bench-constant", "model": "demo",
            "messages": [{"role": "system", "content": _POLICY}]}


def build_registry(docs: list[dict[str, Any]]) -> TemplateRegistry:
    """A registry holding these templates (label `production` -> v1), without a database."""
    reg = TemplateRegistry(store=None)  # type: ignore[arg-type]  # never touched here
    versions: dict[str, dict[int, TemplateVersion]] = {}
    labels: dict[str, dict[str, Label]] = {}
    for doc in docs:
        v = TemplateVersion(doc, version=1, content_hash=content_hash(doc), source="api",
                            author_key_id=None, created_at=None)
        v.compiled(reg.env)
        versions[doc["name"]] = {1: v}
        labels[doc["name"]] = {"production": Label(doc["name"], "production", 1, None, None,
                                                    None, None)}
    reg.snapshot = Snapshot(versions, labels, {n: 1 for n in versions})
    return reg


def time_stage(stage: TemplateStage, name: str, variables: dict[str, Any], n: int,
               repeat: int) -> float:
    """Best per-call µs of `stage.expand` (a fresh body each call, as a request has)."""

    async def run() -> float:
        best = float("inf")
        for _ in range(repeat):
            contexts = [make_ctx("chat", {
                "messages": [{"role": "user", "content": "and one more thing"}],
                "template": {"name": name, "label": "production", "variables": variables},
                "user": "end-user-1"}) for _ in range(n)]
            t0 = time.perf_counter()
            for ctx in contexts:
                await stage.expand(ctx)
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        return best

    return asyncio.run(run())


def time_compile(doc: dict[str, Any], repeat: int) -> float:
    env = make_environment()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        compile_messages(env, doc)
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(port: int, method: str, path: str, body: Any, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(argv, start_new_session=True, **kw)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def e2e(args: argparse.Namespace) -> int:
    """Plain messages vs the same messages from a template, through a real gateway."""
    bench = Path(__file__).resolve().parent
    gateway = str(Path(sys.executable).parent / "gateway")
    admin = "bench-template-admin"
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        try:
            up = _spawn([sys.executable, str(bench / "upstream.py"), "--port", "0"],
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            procs.append(up)
            assert up.stdout is not None
            up_port = int(up.stdout.readline().decode().split()[1])
            (tmp / "gateway.yaml").write_text(
                "models:\n  - name: gpt-4o-mini\n    deployments:\n"
                f"      - {{model: openai/gpt-4o-mini, api_base: 'http://127.0.0.1:{up_port}/v1'}}\n")
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
            env.update({"GATEWAY_CONFIG": str(tmp / "gateway.yaml"), "GATEWAY_ADMIN_KEY": admin,
                        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/gw.db",
                        "GATEWAY_PORT": str(port), "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
            subprocess.run([gateway, "migrate"], env=env, cwd=tmp, check=True,
                           capture_output=True)
            log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 - owned by the child
            procs.append(_spawn([gateway, "serve"], env=env, cwd=tmp, stdout=log,
                                stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _call(port, "GET", "/healthz", None, admin)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError((tmp / "gateway.log").read_text()[-2000:])
                time.sleep(0.05)
            key = json.loads(_call(port, "POST", "/admin/keys", {"name": "bench"}, admin)[1])["key"]
            doc = {**FEW_KB, "model": "gpt-4o-mini"}
            assert _call(port, "POST", "/admin/templates", doc, admin)[0] == 201
            _call(port, "PUT", f"/admin/templates/{doc['name']}/labels/production",
                  {"version": 1}, admin)
            rendered = json.loads(_call(port, "POST", f"/admin/templates/{doc['name']}/render",
                                        {"variables": FEW_KB_VARS}, admin)[1])
            plain = {"model": "gpt-4o-mini", **rendered["params"],
                     "messages": rendered["messages"]}
            templated = {"template": {"name": doc["name"], "label": "production",
                                      "variables": FEW_KB_VARS}}
            bodies = {"plain": plain, "template": templated}
            for name, body in bodies.items():
                (tmp / f"{name}.json").write_text(json.dumps(body))
            times: dict[str, list[float]] = {name: [] for name in bodies}
            raw = {name: json.dumps(body) for name, body in bodies.items()}
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for i in range(2 * (args.requests + 100)):
                name = "plain" if i % 2 else "template"  # interleaved: same machine state
                t0 = time.perf_counter()
                conn.request("POST", "/v1/chat/completions", raw[name], headers)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status}")
                if i >= 200:  # warm-up
                    times[name].append((time.perf_counter() - t0) * 1e6)
            conn.close()
        finally:
            for p in reversed(procs):
                _stop(p)
    print(f"end to end through `gateway serve` (fake upstream, SQLite, audit on): "
          f"{args.requests:,} requests of each, interleaved, one client")
    print(f"{'body':>9} {'p10 µs':>8} {'p50 µs':>8} {'p90 µs':>8}")
    q: dict[str, list[float]] = {}
    for name, values in times.items():
        q[name] = statistics.quantiles(values, n=10)
        print(f"{name:>9} {q[name][0]:>8.0f} {q[name][4]:>8.0f} {q[name][8]:>8.0f}")
    print(f"template - plain: p10 {q['template'][0] - q['plain'][0]:+.0f} µs, "
          f"p50 {q['template'][4] - q['plain'][4]:+.0f} µs")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    parser.add_argument("--e2e", action="store_true", help="also measure through a gateway")
    parser.add_argument("--requests", type=int, default=2000,
                        help="--e2e: requests of each kind")
    args = parser.parse_args()

    few_kb = canonical(parse_spec(FEW_KB))
    constant = canonical(parse_spec(CONSTANT))
    (triage,) = [f.doc for f in load_prompt_files(ROOT / "prompts")
                 if f.doc["name"] == "support-triage"]
    reg = build_registry([few_kb, constant, triage])
    stage = TemplateStage(reg, ServerConfig())
    source_kb = sum(len(m["content"]) for m in few_kb["messages"]) / 1024
    rendered = asyncio.run(reg.render(reg.resolve("bench-support", label="production"),
                                      FEW_KB_VARS))
    out_kb = sum(len(m["content"]) for m in rendered) / 1024
    cases = [
        (f"few-KB prompt ({source_kb:.1f} KB source -> {out_kb:.1f} KB, loops + ifs)",
         "bench-support", FEW_KB_VARS, few_kb),
        ("shipped support-triage", "support-triage",
         {"ticket": FEW_KB_VARS["ticket"], "customer_name": "Dana", "tier": "pro"}, triage),
        ("constant prompt (no Jinja)", "bench-constant", {}, constant),
    ]
    print(f"template expansion per request (best of {args.repeat} x {args.n:,} calls; "
          f"target < {TARGET_US:g} µs for the few-KB prompt)")
    print(f"{'case':<62} {'stage µs':>9} {'compile ms (once)':>18}")
    verdict = 0
    for title, name, variables, doc in cases:
        us = time_stage(stage, name, variables, args.n, args.repeat)
        ms = time_compile(doc, 5)
        print(f"{title:<62} {us:>9.1f} {ms:>18.2f}")
        if name == "bench-support" and us >= TARGET_US:
            verdict = 1
    print("ok: under target" if verdict == 0 else "over target")
    if args.e2e:
        e2e(args)
    return verdict


if __name__ == "__main__":
    raise SystemExit(main())
