#!/usr/bin/env python3
"""The response cache's cost and gain: p50 of a miss and of a hit, against the cache off.

One run, three variants taking turns (order alternating per repeat) on the same gateway
config but for the chat model's `cache:` block, each at 1 and at 64 clients:

    off     the cache off; every request different (a counter in the prompt)
    miss    the cache on; every request different: each one a lookup, an upstream call and
            a write (the in-process LRU, or Redis with GATEWAY_REDIS_URL)
    hit     the cache on; the same request again: answered from the cache

    .venv/bin/python bench/cache.py [--repeats 3] [--duration 4] [--redis redis://...]

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: the processes, the config, the load steps

MARK = "@@unique@@@@"  # 12 characters: load.py --unique puts a 12-digit counter there
CLIENTS = (1, 64)


def in_process(rounds: int = 20_000) -> dict[str, float]:
    """The cache stages' own work per request in microseconds, without the noise of a
    shared machine: the same two stages around a terminal that answers at once, the cache
    off, then on with every request new (a miss: key, lookup, write), then the same again
    (a hit). The gateway's real stage objects and in-process store."""
    import asyncio
    import time

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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per step (4)")
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
    args = bench.parse_args(["--no-wrk", "--duration", str(opts.duration), "--warmup", "1"])
    if opts.redis:
        args.gateway_env = [f"GATEWAY_REDIS_URL={opts.redis}"]
    tmp = Path(tempfile.mkdtemp(prefix="gw-cache-"))
    runner = bench.Bench(args, tmp)
    runner.payloads = bench.write_payloads(tmp)
    chat = json.loads(runner.payloads["chat"].read_text())
    chat["messages"][-1]["content"] = f"{MARK} {chat['messages'][-1]['content']}"
    runner.payloads["unique"] = tmp / "payload_unique.json"
    runner.payloads["unique"].write_text(json.dumps(chat, separators=(",", ":")))
    p50: dict[tuple[str, int], list[float]] = {(v, c): [] for v in ("off", "miss", "hit")
                                               for c in CLIENTS}
    try:
        runner.start_upstream()
        off = bench.write_config(tmp, runner.upstream_port, 1)
        text = off.read_text()
        on = tmp / "gateway-cache.yaml"
        on.write_text(text.replace(f"  - name: {bench.EMBED_MODEL}\n",
                                   "    cache: {enabled: true, ttl_s: 3600}\n"
                                   f"  - name: {bench.EMBED_MODEL}\n", 1))
        runner.config = off
        runner.migrate()
        steps = [("off", off, "unique"), ("miss", on, "unique"), ("hit", on, "chat")]
        for rep in range(opts.repeats):
            for name, config, payload in steps if rep % 2 == 0 else steps[::-1]:
                runner.config = config
                proc, port, _ = runner.start_gateway()
                headers = {"authorization": f"Bearer {runner.create_key(port)}"}
                extra = ("--unique", MARK) if payload == "unique" else ()
                for clients in CLIENTS:
                    got = runner.load(port, payload, clients, False, headers, extra=extra)
                    p50[(name, clients)].append(got["p50_ms"])
                    bench.log(f"repeat {rep + 1} {name} c={clients}: p50 "
                              f"{got['p50_ms']:.3f} ms, {got['rps']:.0f} req/s")
                bench.PROCS.stop(proc)
    finally:
        bench.PROCS.stop_all()
    med = {k: statistics.median(v) for k, v in p50.items()}
    for clients in CLIENTS:
        print(f"c={clients:<3d} p50: off {med[('off', clients)]:.3f} ms, "
              f"miss {med[('miss', clients)]:.3f} ms, hit {med[('hit', clients)]:.3f} ms; "
              f"a miss adds {med[('miss', clients)] - med[('off', clients)]:+.3f} ms, "
              f"a hit saves {med[('off', clients)] - med[('hit', clients)]:.3f} ms "
              f"(repeats: off {', '.join(f'{v:.3f}' for v in p50[('off', clients)])}; "
              f"miss {', '.join(f'{v:.3f}' for v in p50[('miss', clients)])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
