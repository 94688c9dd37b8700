#!/usr/bin/env python3
"""A/B runs: alternate gateway variants in one run and compare medians.

On a shared VM one run of the same code varies by several percent; a change worth a few
percent only shows when the variants take turns on the same machine minutes. Each variant is
a gateway source tree (put first on PYTHONPATH, so it shadows the installed `gateway`)
and/or extra gateway environment, with its own SQLite database made by its own migrations.
Every repeat runs each variant (order alternating): 64 clients for throughput and gateway
CPU per request, then 1 client for the added p50 and the p99.

    git worktree add /tmp/base HEAD                # or: git archive HEAD gateway | tar -x -C DIR
    .venv/bin/python bench/ab.py base=/tmp/base new=.
    .venv/bin/python bench/ab.py now=. nofsync=.,GATEWAY_AUDIT_SPOOL_FSYNC=false
    .venv/bin/python bench/ab.py now=. --payloads chat,messages,messages_tr   # protocols

`--payloads` alternates request kinds too (bench/run.py's payloads: `chat`; `messages`,
Anthropic Messages passed through; `messages_tr`, Messages translated to Chat; `responses`,
Responses translated to Chat), each measured right after the others on the same gateway, so
their overheads compare on the same minutes. The stream kinds (`stream`, `responses_stream`,
`messages_tr_stream`) report the time to the first chunk (chat: the first `data:`;
Responses: the first `output_text.delta`) in the p50 column.

A variant is NAME=TREE[,NAME=VALUE...]; TREE is a folder holding `gateway/` ("." is this
checkout). It prints one line per variant: medians, and each repeat's figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: the processes, the config, the load steps

STREAMS = frozenset({"stream", "responses_stream", "messages_tr_stream"})


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"want NAME=TREE[,NAME=VALUE...], got {text!r}")
    tree, *env = spec.split(",")
    root = Path(tree).resolve()
    if not (root / "gateway").is_dir():
        raise argparse.ArgumentTypeError(f"{root} has no gateway/ folder")
    if any("=" not in e for e in env):
        raise argparse.ArgumentTypeError(f"extra environment wants NAME=VALUE: {text!r}")
    return name, root, env


def db_env(tmp: Path, variant: str) -> str:
    return f"GATEWAY_DATABASE_URL=sqlite:///{tmp / f'gw-{variant}.db'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", type=parse_variant, metavar="NAME=TREE[,ENV...]")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per step (4)")
    ap.add_argument("--c1-only", action="store_true",
                    help="only the 1-client step (latency: p50, p99)")
    ap.add_argument("--payloads", default="chat",
                    help="comma-separated request kinds to alternate (chat)")
    opts = ap.parse_args(argv)
    payloads = opts.payloads.split(",")

    args = bench.parse_args(["--no-wrk", "--duration", str(opts.duration), "--warmup", "1"])
    tmp = Path(tempfile.mkdtemp(prefix="gw-ab-"))
    runner = bench.Bench(args, tmp)
    figures: dict[str, dict[str, list[float]]] = {
        f"{name}/{payload}" if len(payloads) > 1 else name:
            {"rps": [], "cpu": [], "p50": [], "p99": []}
        for name, _, _ in opts.variants for payload in payloads}
    direct: dict[str, float] = {}
    try:
        runner.payloads = bench.write_payloads(tmp)
        runner.start_upstream()
        runner.config = bench.write_config(tmp, runner.upstream_port, 1)
        for name, tree, env in opts.variants:  # each its own database, by its own migrations
            args.gateway_env = [f"PYTHONPATH={tree}", *env, db_env(tmp, name)]
            runner.migrate()
        for rep in range(opts.repeats):
            order = opts.variants if rep % 2 == 0 else opts.variants[::-1]
            for name, tree, env in order:
                args.gateway_env = [f"PYTHONPATH={tree}", *env, db_env(tmp, name)]
                proc, port, _ = runner.start_gateway()
                headers = {"authorization": f"Bearer {runner.create_key(port)}"}
                for payload in payloads if rep % 2 == 0 else payloads[::-1]:
                    label = f"{name}/{payload}" if len(payloads) > 1 else name
                    stream = payload in STREAMS
                    busy = {"rps": 0.0} if opts.c1_only else \
                        runner.load(port, payload, 64, stream, headers, cpu_pid=proc.pid)
                    alone = runner.load(port, payload, 1, stream, headers, cpu_pid=proc.pid)
                    figures[label]["rps"].append(busy["rps"])
                    figures[label]["cpu"].append(busy.get("cpu_us_per_req") or 0.0)
                    figures[label]["p50"].append(alone["ttfc_p50_ms" if stream else "p50_ms"])
                    figures[label]["p99"].append(alone["p99_ms"])
                    bench.log(f"repeat {rep + 1} {label}: {busy['rps']:.0f} req/s, "
                              f"c=1 p50 {alone['p50_ms']:.3f} ms, p99 {alone['p99_ms']:.3f} ms")
                bench.PROCS.stop(proc)
        for payload in payloads:
            stream = payload in STREAMS
            direct[payload] = runner.load(runner.upstream_port, payload, 1, stream, {})[
                "ttfc_p50_ms" if stream else "p50_ms"]
    finally:
        bench.PROCS.stop_all()
    print("direct c=1 p50 " + ", ".join(f"{p} {v:.3f} ms" for p, v in direct.items()))
    for label, f in figures.items():
        name = label
        base = direct[label.rsplit("/", 1)[1] if "/" in label else payloads[0]]
        print(f"{name:12s} c=64 {statistics.median(f['rps']):6.0f} req/s "
              f"({', '.join(f'{v:.0f}' for v in f['rps'])}), "
              f"CPU {statistics.median(f['cpu']):4.0f} us/req, "
              f"c=1 added p50 {statistics.median(f['p50']) - base:.3f} ms "
              f"({', '.join(f'{v - base:.3f}' for v in f['p50'])}), "
              f"c=1 p99 {statistics.median(f['p99']):.3f} ms "
              f"({', '.join(f'{v:.3f}' for v in f['p99'])}), p99/p50 "
              f"{statistics.median(f['p99']) / statistics.median(f['p50']):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
