#!/usr/bin/env python3
"""Stream pacing: how late each chunk of a paced stream reaches the client through the gateway.

A paced upstream (20 chunks 50 ms apart by default: `bench/upstream.py` in this process, so
it records when it wrote each chunk on the same clock as the client) streams the same words
to a client directly and through `gateway serve` with the shipped default policy
(`policies/default.yaml`: output rules credit_card and secret). For every upstream chunk:
the time from the upstream writing it to the client having all of its text. It also counts
empty deltas (a `content: ""` chunk after the first) and chunks that carry more than one
upstream chunk's text.

Variants alternate in one run, as in `bench/ab.py` (a variant is a source tree holding
`gateway/`, put first on PYTHONPATH, plus optional gateway environment):

    git worktree add /tmp/base HEAD
    .venv/bin/python bench/stream_delay.py base=/tmp/base new=.
    .venv/bin/python bench/stream_delay.py now=. --chunks 40 --pace-ms 20 --streams 20

Prints one line per variant: the added delay per chunk (p50, p90, p99, max) over every chunk
of every stream, minus the same figure measured directly (loopback and parsing: ~0.1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ab  # variants NAME=TREE[,NAME=VALUE...]
import run as bench  # the gateway process, the key
import upstream as fake  # the paced upstream, run in this process

SENT: list[float] = []  # when the upstream wrote each content chunk of the current stream


class RecordingUpstream(fake.Upstream):
    """The bench upstream, noting when it writes each chunk (one stream at a time)."""

    async def stream_slowly(self, frames: list[bytes], close: bool) -> None:
        SENT.clear()
        try:
            self.transport.write(fake.head(200, b"text/event-stream", None, close))
            for i, frame in enumerate(frames):
                if self.closed:
                    return
                if i:
                    await asyncio.sleep(fake.Settings.chunk_delay_s)
                self.transport.write(frame)
                SENT.append(time.perf_counter())
            self.send(b"0\r\n\r\n", close)
        finally:
            self.busy = False


async def one_stream(port: int, key: str | None, chunks: int) -> dict:
    """One streamed chat request; per upstream chunk, how late its text arrived (ms)."""
    body = json.dumps({"model": bench.CHAT_MODEL, "stream": True,
                       "messages": [{"role": "user", "content": "pace"}]}).encode()
    auth = f"authorization: Bearer {key}\r\n" if key else ""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\n{auth}"
                 f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                 "connection: close\r\n\r\n".encode() + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"stream answered {head[:200]!r}")
    events: list[tuple[float, str, str | None]] = []  # (arrival, content, finish_reason)
    buf = b""
    while True:
        data = await reader.read(65536)
        now = time.perf_counter()
        if not data:
            break
        buf += data
        while b"\n\n" in buf:  # SSE events (chunk framing lines are skipped below)
            raw, buf = buf.split(b"\n\n", 1)
            line = raw[raw.find(b"data: "):]
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            obj = json.loads(line[6:])
            for choice in obj.get("choices") or ():
                delta = choice.get("delta") or {}
                events.append((now, delta.get("content") or "", choice.get("finish_reason")))
    writer.close()
    words = [fake.WORDS[i % len(fake.WORDS)] for i in range(chunks)]
    ends = [sum(map(len, words[:i + 1])) for i in range(chunks)]  # text offset after chunk i
    late, received, merged, empty = [], 0, 0, 0
    i = 0
    for k, (t, text, finish) in enumerate(events):
        if not text and k and finish is None:
            empty += 1
        received += len(text)
        done = 0
        while i < chunks and ends[i] <= received:
            late.append((t - SENT[i]) * 1000)
            i += 1
            done += 1
        merged += max(0, done - 1)
    if i < chunks:
        raise RuntimeError(f"only {i} of {chunks} chunks arrived")
    return {"late_ms": late, "empty": empty, "merged": merged}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(opts: argparse.Namespace) -> int:
    fake.Settings.chunks = opts.chunks
    fake.Settings.chunk_delay_s = opts.pace_ms / 1000
    loop = asyncio.get_running_loop()
    server = await loop.create_server(RecordingUpstream, "127.0.0.1", 0)
    up_port = server.sockets[0].getsockname()[1]
    args = bench.parse_args(["--no-wrk", "--chunks", str(opts.chunks)])
    tmp = Path(tempfile.mkdtemp(prefix="gw-pace-"))
    runner = bench.Bench(args, tmp)
    runner.pin.pin_self()
    runner.config = tmp / "gateway.yaml"
    runner.config.write_text(
        f"models:\n  - name: {bench.CHAT_MODEL}\n    deployments:\n"
        f"      - {{model: openai/{bench.CHAT_MODEL}, api_base: 'http://127.0.0.1:{up_port}/v1'}}\n"
        f"policies_dir: {opts.policies_dir.resolve()}\n")
    runner.migrate()
    figures = {name: {"late": [], "empty": 0, "merged": 0, "streams": 0}
               for name, _, _ in opts.variants}
    direct: list[float] = []
    try:
        for rep in range(opts.repeats):
            order = opts.variants if rep % 2 == 0 else opts.variants[::-1]
            for name, tree, env in order:
                args.gateway_env = [f"PYTHONPATH={tree}", *env]
                proc, port, _ = await asyncio.to_thread(runner.start_gateway)
                key = await asyncio.to_thread(runner.create_key, port)
                await one_stream(port, key, opts.chunks)  # warm-up
                f = figures[name]
                for _ in range(opts.streams):
                    got = await one_stream(port, key, opts.chunks)
                    f["late"] += got["late_ms"]
                    f["empty"] += got["empty"]
                    f["merged"] += got["merged"]
                    f["streams"] += 1
                await asyncio.to_thread(bench.PROCS.stop, proc)
                bench.log(f"repeat {rep + 1} {name}: p50 {pct(f['late'], 0.5):.2f} ms so far")
            for _ in range(opts.streams):
                direct += (await one_stream(up_port, None, opts.chunks))["late_ms"]
    finally:
        bench.PROCS.stop_all()
        server.close()
    base = statistics.median(direct)
    print(f"{opts.chunks} chunks {opts.pace_ms:g} ms apart; direct (upstream write -> client "
          f"has the text): p50 {base:.3f} ms, p90 {pct(direct, 0.9):.3f}, "
          f"p99 {pct(direct, 0.99):.3f}, max {max(direct):.3f}")
    for name, f in figures.items():
        late = f["late"]
        n = f["streams"]
        print(f"{name:10s} added per chunk p50 {pct(late, 0.5) - base:7.3f} ms, "
              f"p90 {pct(late, 0.9) - base:7.3f}, p99 {pct(late, 0.99) - base:7.3f}, "
              f"max {max(late) - base:7.3f} ({len(late)} chunks, {n} streams); "
              f"empty deltas {f['empty'] / n:.1f}/stream, merged {f['merged'] / n:.1f}/stream")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", type=ab.parse_variant, metavar="NAME=TREE[,ENV...]")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream (20)")
    ap.add_argument("--pace-ms", type=float, default=50.0, help="gap between chunks (50)")
    ap.add_argument("--streams", type=int, default=10, help="streams per variant per repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies-dir", type=Path, default=bench.ROOT / "policies",
                    help="the gateway's policies_dir (the shipped one: default policy)")
    return asyncio.run(main_async(ap.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
