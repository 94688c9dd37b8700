#!/usr/bin/env python3
"""The response cache's cost and gain: p50 of a miss and of a hit, against the cache off.

One gateway, two models on the same fake upstream: the chat model with the cache off and a
copy of it with the cache on. Three variants take turns in short steps (order alternating),
at 1 and at 64 clients, so a busy shared VM slows them alike:

    off     the cache off; every request different (a counter in the prompt)
    miss    the cache on; every request different: each one a lookup, an upstream call and
            a write (the in-process LRU, or Redis with GATEWAY_REDIS_URL)
    hit     the cache on; the same request again: answered from the cache

    .venv/bin/python bench/cache.py [--repeats 2] [--rounds 3] [--duration 2] [--redis URL]

It prints the medians and, for each client count, what a miss adds over the cache off (the
issue's bar: under 0.05 ms) and what a hit saves. The fake upstream answers at once, so a
hit's saving here is only the upstream hop; against a real model it is the model's time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: the processes, the config, the load steps

MARK = "@@unique@@@@"  # 12 characters: load.py --unique puts a 12-digit counter there
CLIENTS = (1, 64)
VARIANTS = ("off", "miss", "hit")
CACHED = "gpt-4o-mini-cached"  # the same upstream as the chat model, with the cache on


def in_process(rounds: int = 20_000) -> dict[str, float]:
    """The cache stages' own work per request in microseconds, without the noise of a
    shared machine: the same two stages around a terminal that answers at once, the cache
    off, then on with every request new (a miss: key, lookup, write), then the same again
    (a hit). The gateway's real stage objects and in-process store."""
    import asyncio

    from gateway.cache.keys import KeyMaker
    from gateway.cache.rules import RulesBook
    from gateway.cache.store import MemoryCache
    from gateway.config import CacheRules
    from gateway.context import Principal
    from gateway.core.audit_event import AuditEvent
    from gateway.core.request import Reply, RequestContext
    from gateway.core.stages import compose
    from gateway.pipeline.stages.cache import CacheFill, CacheLookup
    from gateway.protocols.openai import CHAT

    text = ("The quick brown fox jumps over the lazy dog while the benchmark harness "
            "measures how much time the gateway adds to every request. " * 8)[:800]
    answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": text[:300]},
                           "logprobs": None, "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 200, "completion_tokens": 64, "total_tokens": 264}}
    principal = Principal("key1", "bench", "app", team="team1")

    class Book(RulesBook):
        def __init__(self, on: bool) -> None:
            self.rules = CacheRules(enabled=True) if on else None

        def of(self, model: str | None, policy: object) -> CacheRules | None:
            return self.rules

    async def terminal(ctx: RequestContext) -> Reply:
        return Reply(body=dict(answer))

    def pipeline(on: bool) -> object:
        store = MemoryCache(256 << 20, 1 << 20)
        lookup = CacheLookup(Book(on), KeyMaker(b"k" * 32, {"m": "route"}), store)
        return compose([CacheFill(store), lookup], terminal)

    async def measure(handler: object, same: bool) -> float:
        ctxs = []
        for i in range(rounds):
            body = {"model": "m", "max_tokens": 64, "temperature": 0, "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": text if same else f"{i} {text}"}]}
            ctxs.append(RequestContext(endpoint="chat", protocol=CHAT,
                                       event=AuditEvent(str(i), "/v1/chat/completions"),
                                       headers={}, read_body=None, transport=None,  # type: ignore[arg-type]
                                       principal=principal, body=body, model="m"))
        t0 = time.perf_counter()
        for ctx in ctxs:
            await handler(ctx)  # type: ignore[operator]
        return (time.perf_counter() - t0) / rounds * 1e6

    async def run() -> dict[str, float]:
        off = pipeline(False)
        await measure(off, False)  # warm
        return {"off": await measure(off, False), "miss": await measure(pipeline(True), False),
                "hit": await measure(pipeline(True), True)}

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help="gateway starts (2)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per step (2)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the three variants per gateway (3)")
    ap.add_argument("--redis", default=None, help="GATEWAY_REDIS_URL for the gateway")
    ap.add_argument("--in-process-only", action="store_true",
                    help="only the stages' own work (no gateway process)")
    opts = ap.parse_args(argv)
    micro = in_process()
    print(f"in process, per request: cache off {micro['off']:.1f} us, miss "
          f"{micro['miss']:.1f} us (+{micro['miss'] - micro['off']:.1f} us), hit "
          f"{micro['hit']:.1f} us (the terminal answering at once)")
    if opts.in_process_only:
        return 0
    args = bench.parse_args(["--no-wrk", "--duration", str(opts.duration), "--warmup", "0.5"])
    if opts.redis:
        args.gateway_env = [f"GATEWAY_REDIS_URL={opts.redis}"]
    tmp = Path(tempfile.mkdtemp(prefix="gw-cache-"))
    runner = bench.Bench(args, tmp)
    runner.payloads = bench.write_payloads(tmp)
    chat = json.loads(runner.payloads["chat"].read_text())
    unique = {**chat, "messages": [*chat["messages"][:-1], {
        **chat["messages"][-1], "content": f"{MARK} {chat['messages'][-1]['content']}"}]}
    for name, body in (("off", unique), ("miss", {**unique, "model": CACHED}),
                       ("hit", {**chat, "model": CACHED})):
        runner.payloads[name] = tmp / f"payload_{name}.json"
        runner.payloads[name].write_text(json.dumps(body, separators=(",", ":")))
    p50: dict[tuple[str, int], list[float]] = {(v, c): [] for v in VARIANTS for c in CLIENTS}
    rps: dict[tuple[str, int], list[float]] = {(v, c): [] for v in VARIANTS for c in CLIENTS}
    cpu: dict[tuple[str, int], list[float]] = {(v, c): [] for v in VARIANTS for c in CLIENTS}
    try:
        runner.start_upstream()
        config = bench.write_config(tmp, runner.upstream_port, 1)
        text = config.read_text()
        base = f"http://127.0.0.1:{runner.upstream_port}/v1"
        config.write_text(text + f"  - name: {CACHED}\n    cache: {{enabled: true, ttl_s: 3600}}\n"
                          f"    deployments:\n      - model: openai/{bench.CHAT_MODEL}\n"
                          f"        api_base: {base}\n")
        runner.config = config
        runner.migrate()
        for rep in range(opts.repeats):
            proc, port, _ = runner.start_gateway()
            headers = {"authorization": f"Bearer {runner.create_key(port)}"}
            for rnd in range(opts.rounds):
                for clients in CLIENTS:
                    turn = (rep * opts.rounds + rnd) % len(VARIANTS)  # each goes first in turn
                    for name in VARIANTS[turn:] + VARIANTS[:turn]:
                        extra = ("--unique", MARK) if name != "hit" else ()
                        got = runner.load(port, name, clients, False, headers, extra=extra,
                                          cpu_pid=proc.pid)
                        p50[(name, clients)].append(got["p50_ms"])
                        rps[(name, clients)].append(got["rps"])
                        cpu[(name, clients)].append(got.get("cpu_us_per_req") or 0.0)
                        bench.log(f"repeat {rep + 1} round {rnd + 1} {name} c={clients}: p50 "
                                  f"{got['p50_ms']:.3f} ms, {got['rps']:.0f} req/s")
                    time.sleep(2)  # the audit shipper catches up before the next step
            bench.PROCS.stop(proc)
    finally:
        bench.PROCS.stop_all()
    med = {k: statistics.median(v) for k, v in p50.items()}
    rmed = {k: statistics.median(v) for k, v in rps.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    for clients in CLIENTS:
        off, miss, hit = (med[(v, clients)] for v in VARIANTS)
        print(f"c={clients:<3d} p50: off {off:.3f} ms, miss {miss:.3f} ms, hit {hit:.3f} ms; "
              f"a miss adds {miss - off:+.3f} ms, a hit saves {off - hit:.3f} ms; req/s: off "
              f"{rmed[('off', clients)]:.0f}, miss {rmed[('miss', clients)]:.0f} "
              f"({rmed[('miss', clients)] / rmed[('off', clients)]:.2f}x), hit "
              f"{rmed[('hit', clients)]:.0f}; gateway CPU/request: off "
              f"{cmed[('off', clients)]:.0f} us, miss {cmed[('miss', clients)]:.0f} us "
              f"({cmed[('miss', clients)] - cmed[('off', clients)]:+.0f} us), hit "
              f"{cmed[('hit', clients)]:.0f} us ({len(p50[('off', clients)])} steps each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
