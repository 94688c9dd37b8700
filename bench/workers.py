#!/usr/bin/env python3
"""Throughput of `gateway serve --workers N` for several N, in one run, nothing pinned.

Each repeat runs every N (order alternating) against the bench upstream with 64 clients
(bench/load.py), on the same machine as the load generator and the upstream: on a 2-core
machine, 2 workers compete with those for the second core, so the gain shown is a floor of
what a host with spare cores gets. Every N runs with the same Redis (a `redis-server` this
script starts on a free loopback port), since N > 1 needs it for the limits; N = 1 uses it
too, so the variants differ only in the process count. SQLite is the database.

    .venv/bin/python bench/workers.py                      # N = 1, 2; 3 repeats of 5 s
    .venv/bin/python bench/workers.py --workers 1 2 4 --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as bench  # bench/run.py: the processes, the config, the load steps


def start_redis(tmp: Path) -> int:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = bench.free_port()
    bench.PROCS.start([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no", "--dir", str(tmp)], log_path=tmp / "redis.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import redis

            if redis.Redis(port=port).ping():
                return port
        except Exception:  # not up yet
            time.sleep(0.05)
    raise SystemExit(f"redis-server did not start:\n{bench.tail(tmp / 'redis.log')}")


def wait_workers(runner: bench.Bench, workers: int) -> None:
    """`/healthz` answers once one worker is up: wait for the supervisor's 'all ready'."""
    if workers == 1:
        return
    deadline = time.monotonic() + 60
    while '"gateway workers ready"' not in runner.gw_log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready:\n{bench.tail(runner.gw_log)}")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per step (5)")
    ap.add_argument("--clients", type=int, default=64)
    opts = ap.parse_args(argv)

    # --gw-cpu 99: nothing is pinned (the workers must be free to use every core)
    args = bench.parse_args(["--no-wrk", "--duration", str(opts.duration), "--warmup", "1",
                             "--gw-cpu", "99"])
    tmp = Path(tempfile.mkdtemp(prefix="gw-workers-"))
    runner = bench.Bench(args, tmp)
    rps: dict[int, list[float]] = {n: [] for n in opts.workers}
    p50: dict[int, list[float]] = {n: [] for n in opts.workers}
    try:
        redis_port = start_redis(tmp)
        runner.payloads = bench.write_payloads(tmp)
        runner.start_upstream()
        runner.config = bench.write_config(tmp, runner.upstream_port, 1)
        runner.migrate()
        for rep in range(opts.repeats):
            order = opts.workers if rep % 2 == 0 else opts.workers[::-1]
            for n in order:
                args.gateway_env = [f"GATEWAY_REDIS_URL=redis://127.0.0.1:{redis_port}/0",
                                    f"GATEWAY_WORKERS={n}"]
                proc, port, _ = runner.start_gateway()
                wait_workers(runner, n)
                headers = {"authorization": f"Bearer {runner.create_key(port)}"}
                busy = runner.load(port, "chat", opts.clients, False, headers)
                bench.PROCS.stop(proc)
                rps[n].append(busy["rps"])
                p50[n].append(busy["p50_ms"])
                bench.log(f"repeat {rep + 1}, {n} worker(s): {busy['rps']:.0f} req/s, "
                          f"p50 {busy['p50_ms']:.2f} ms")
    finally:
        bench.PROCS.stop_all()
    base = statistics.median(rps[opts.workers[0]])
    print(f"| workers | req/s, {opts.clients} clients (median) | vs. {opts.workers[0]} | "
          f"p50 | each repeat |")
    print("|---:|---:|---:|---:|---|")
    for n in opts.workers:
        med = statistics.median(rps[n])
        print(f"| {n} | {med:,.0f} | {med / base:.2f}x | {statistics.median(p50[n]):.2f} ms | "
              f"{', '.join(f'{v:,.0f}' for v in rps[n])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
