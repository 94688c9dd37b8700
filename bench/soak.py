"""Soak: mixed traffic through one `gateway serve` for a long time; its memory every minute.

Starts the fake upstream (`bench/upstream.py`) and the real gateway (SQLite, audit on, the
repo's default PII policy, an app key with rpm, tpm and a budget so every limiter path runs),
pinned as in `bench/run.py`, then runs `--clients` closed-loop clients (one keep-alive
connection each) that pick each request from a fixed mix:

    chat 27%          non-stream chat, 200         stream 18%    SSE to [DONE], 200
    cancel 10%        a slow stream the client closes after its second event (own connection)
    translated 8%     chat through litellm (a `mistral/` deployment on the fake upstream)
    translated_stream 4%  the same, streamed
    upstream_500 8%   a model whose upstream answers 500: 502 after retries, or 503 while its
                      deployments cool down
    pii 4%            a chat with an email and a card number (redacted), 200
    embeddings 5%     200                          limited 3%    a key with rpm 60: mostly 429
    bad_json 3%       400                          bad_field 3%  400 (`messages` a string)
    unknown_model 3%  404                          bad_key 4%    401

Each request has its own `x-request-id` and one of 5,000 `user` values. Every `--sample-s`
seconds (60) it records the gateway's VmRSS and VmHWM, requests per kind and status, and the
audit spool's size; at the end the curve and the growth after warm-up (`--warmup-min`, 2)
go to stdout and `--out` (Markdown; the JSON with every sample next to it). It runs
`--minutes` (30) or until `--requests` (0: no cap) are done, whichever comes first.

    .venv/bin/python bench/soak.py --minutes 3           # a try
    .venv/bin/python bench/soak.py                        # 30 minutes (the reference run)
    .venv/bin/python bench/soak.py --minutes 5 --tracemalloc   # where Python memory grows

`--tracemalloc` runs the gateway with `bench/soak_hooks` first on PYTHONPATH: tracemalloc on,
a snapshot after the warm-up and one just before the end; the report lists the 15
allocation sites that grew most between the two (tracing slows the gateway several times;
RSS figures of such a run are not the reference). `--gateway-env NAME=VALUE` passes settings
to the gateway (e.g. `MALLOC_ARENA_MAX=8` for a what-if). Everything binds 127.0.0.1;
every process is stopped by process-group id, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run import (
    PROCS,
    ROOT,
    Pinning,
    _on_signal,
    free_port,
    git_head,
    http_call,
    log,
    log_errors,
    proc_status,
    source_digest,
    tail,
)

BENCH = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH / "results" / "soak.md"
USERS = 5_000
MIX = [("chat", 27), ("stream", 18), ("cancel", 10), ("translated", 8),
       ("translated_stream", 4), ("upstream_500", 8), ("pii", 4), ("embeddings", 5),
       ("bad_json", 3), ("bad_field", 3), ("unknown_model", 3), ("bad_key", 4),
       ("limited", 3)]
EXPECTED = {"chat": {200}, "stream": {200}, "cancel": {200}, "translated": {200},
            "translated_stream": {200}, "upstream_500": {502, 503}, "pii": {200},
            "embeddings": {200}, "bad_json": {400}, "bad_field": {400}, "unknown_model": {404},
            "bad_key": {401}, "limited": {200, 429}}
TEXT = ("The quick brown fox jumps over the lazy dog while the soak measures how the "
        "gateway's memory behaves over a long run. ") * 4


# ---------------------------------------------------------------- requests
def bodies() -> dict[str, tuple[str, bytes]]:
    """kind -> (path, body template with `{user}`): built once, formatted per request."""
    def chat(model: str, content: str, **extra: Any) -> bytes:
        return json.dumps({"model": model, "max_tokens": 32, "user": "USER",
                           "messages": [{"role": "user", "content": content}], **extra},
                          separators=(",", ":")).encode()

    stream = {"stream": True, "stream_options": {"include_usage": True}}
    return {
        "chat": ("/v1/chat/completions", chat("gpt-4o-mini", TEXT)),
        "stream": ("/v1/chat/completions", chat("gpt-4o-mini", TEXT, **stream)),
        "cancel": ("/v1/chat/completions", chat("slow", TEXT, **stream)),
        "translated": ("/v1/chat/completions", chat("translated", TEXT)),
        "translated_stream": ("/v1/chat/completions", chat("translated", TEXT, **stream)),
        "upstream_500": ("/v1/chat/completions", chat("failing", TEXT)),
        "pii": ("/v1/chat/completions", chat("gpt-4o-mini", "Mail jane.doe@example.com, card "
                                             "4111 1111 1111 1111, about the invoice.")),
        "embeddings": ("/v1/embeddings", json.dumps(
            {"model": "text-embedding-3-small", "input": TEXT[:200], "user": "USER"}).encode()),
        "bad_json": ("/v1/chat/completions", b'{"model": "gpt-4o-mini", "messages": [USER'),
        "bad_field": ("/v1/chat/completions", json.dumps(
            {"model": "gpt-4o-mini", "messages": "USER"}).encode()),
        "unknown_model": ("/v1/chat/completions", chat("no-such-model", TEXT)),
        "bad_key": ("/v1/chat/completions", chat("gpt-4o-mini", TEXT)),
        "limited": ("/v1/chat/completions", chat("gpt-4o-mini", TEXT)),
    }


@dataclass
class Tally:
    by_kind: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: Counter[tuple[str, int]] = field(default_factory=Counter)
    io_errors: Counter[str] = field(default_factory=Counter)
    done: int = 0


class Client:
    """One closed-loop client: a keep-alive connection, and a fresh one per cancellation."""

    def __init__(self, port: int, keys: dict[str, str], tally: Tally, rng: random.Random,
                 templates: dict[str, tuple[str, bytes]], ids: itertools.count) -> None:
        self.port = port
        self.keys = keys
        self.tally = tally
        self.rng = rng
        self.templates = templates
        self.ids = ids
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        kinds, weights = zip(*MIX, strict=True)
        self.kinds, self.weights = list(kinds), list(weights)

    def request(self, kind: str) -> bytes:
        path, template = self.templates[kind]
        user = b"user-%d" % self.rng.randrange(USERS)
        body = template.replace(b"USER", user)
        key = self.keys.get(kind) or self.keys["app"]
        head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"authorization: Bearer {key}\r\nx-request-id: soak-{next(self.ids)}\r\n\r\n")
        return head.encode() + body

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    async def run(self, until: float, cap: int) -> None:
        while time.monotonic() < until and (not cap or self.tally.done < cap):
            await self.one(self.rng.choices(self.kinds, self.weights)[0])

    async def one(self, kind: str) -> None:
        """Send one request of `kind` and count its status."""
        try:
            if kind == "cancel":
                status = await self.cancel(self.request(kind))
            else:
                if self.conn is None:
                    self.conn = await self.connect()
                status = await exchange(*self.conn, self.request(kind))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.tally.io_errors[type(exc).__name__] += 1
            await self.drop()
            await asyncio.sleep(0.05)
            return
        self.tally.done += 1
        self.tally.by_kind[(kind, status)] += 1
        if status not in EXPECTED[kind]:
            self.tally.unexpected[(kind, status)] += 1

    async def cancel(self, request: bytes) -> int:
        reader, writer = await self.connect()
        try:
            writer.write(request)
            status, headers = await read_head(reader)
            if status == 200 and headers.get("transfer-encoding") == "chunked":
                events = 0
                while events < 2:
                    piece = await read_chunk(reader)
                    if piece is None:
                        break
                    events += piece.count(b"data:")
            return status
        finally:
            writer.transport.abort()  # the client leaves mid-stream

    async def drop(self) -> None:
        if self.conn is not None:
            self.conn[1].transport.abort()
            self.conn = None


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip().lower()
    return status, headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
    if size == 0:
        await reader.readuntil(b"\r\n")
        return None
    data = await reader.readexactly(size + 2)
    return data[:-2]


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> int:
    """One request on a keep-alive connection; the status (a stream is read to its end)."""
    writer.write(request)
    status, headers = await read_head(reader)
    if headers.get("transfer-encoding") == "chunked":
        while await read_chunk(reader) is not None:
            pass
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    if headers.get("connection") == "close":
        raise ValueError("server closed the connection")
    return status


# ---------------------------------------------------------------- the gateway
def write_config(tmp: Path, upstream_port: int) -> Path:
    base = f"http://127.0.0.1:{upstream_port}"
    shutil.copytree(ROOT / "policies", tmp / "policies")
    path = tmp / "gateway.yaml"
    path.write_text(f"""
models:
  - name: gpt-4o-mini
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{base}/v1"}}]
  - name: slow
    deployments: [{{model: openai/gpt-4o-mini, api_base: "{base}/slow/v1"}}]
  - name: failing
    deployments:
      - {{model: openai/gpt-4o-mini, api_base: "{base}/fail/v1"}}
      - {{model: openai/gpt-4o, api_base: "{base}/fail/v1"}}
  - name: translated
    deployments: [{{model: mistral/mistral-small-latest, api_base: "{base}/v1",
                   api_key: "env:SOAK_UPSTREAM_KEY"}}]
  - name: text-embedding-3-small
    deployments: [{{model: openai/text-embedding-3-small, api_base: "{base}/v1"}}]
router: {{retries: 1, cooldown_s: 5, failures_to_cooldown: 20}}
""")
    return path


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pin = Pinning(args.gw_cpu, args.load_cpu)
        exe = Path(sys.executable).parent / "gateway"
        self.gateway_exe = str(exe if exe.exists() else ROOT / ".venv" / "bin" / "gateway")
        self.admin_key = "soak-admin-" + secrets.token_urlsafe(24)
        self.snap_dir = tmp / "tracemalloc"
        self.gw_log = tmp / "gateway.log"

    def env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({"GATEWAY_CONFIG": str(self.tmp / "gateway.yaml"),
                    "GATEWAY_DATABASE_URL": f"sqlite:///{self.tmp / 'gw.db'}",
                    "GATEWAY_ADMIN_KEY": self.admin_key, "GATEWAY_PORT": str(port),
                    "GATEWAY_HOST": "127.0.0.1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "SOAK_UPSTREAM_KEY": "sk-soak-upstream"})
        if self.args.tracemalloc:
            self.snap_dir.mkdir(exist_ok=True)
            env["PYTHONPATH"] = os.pathsep.join(
                [str(BENCH / "soak_hooks"), *filter(None, [env.get("PYTHONPATH")])])
            env["SOAK_TRACEMALLOC_DIR"] = str(self.snap_dir)
            # after the warm-up, and shortly before the end (the start-up is a few seconds)
            env["SOAK_TRACEMALLOC_AT_S"] = f"{self.args.warmup_min * 60 + 5}," \
                                           f"{max(self.args.minutes * 60 - 5, 10)}"
        for item in self.args.gateway_env:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def start(self) -> tuple[Any, int]:
        argv, preexec = self.pin.wrap(self.pin.load_cpu, [
            sys.executable, str(BENCH / "upstream.py"), "--port", "0"])
        up = PROCS.start(argv, stdout=-1, log_path=self.tmp / "upstream.log", preexec=preexec)
        line = up.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"upstream did not start: {line!r}")
        write_config(self.tmp, int(line.split()[1]))
        port = free_port()
        out = PROCS.start([self.gateway_exe, "migrate"], env=self.env(port), cwd=self.tmp,
                          log_path=self.tmp / "migrate.log")
        if out.wait(120) != 0:
            raise RuntimeError(f"migrate failed:\n{tail(self.tmp / 'migrate.log')}")
        argv, preexec = self.pin.wrap(self.pin.gw_cpu, [self.gateway_exe, "serve"])
        gw = PROCS.start(argv, log_path=self.gw_log, env=self.env(port), cwd=self.tmp,
                         preexec=preexec)
        deadline = time.monotonic() + 120
        while True:
            if gw.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start:\n{tail(self.gw_log)}")
            try:
                if http_call(port, "GET", "/healthz", timeout=2)[0] == 200:
                    return gw, port
            except OSError:
                pass
            time.sleep(0.05)

    def create_keys(self, port: int) -> dict[str, str]:
        """The app key (limits that never bind: every limiter path runs), one whose rpm
        binds (`limited`: mostly 429), and a key that does not exist (`bad_key`)."""
        keys = {"bad_key": "sk-gw-not-a-key-0123456789abcdef"}
        for kind, fields in (("app", {"rpm": 10_000_000, "tpm": 1_000_000_000,
                                      "budget_usd": 1_000_000}), ("limited", {"rpm": 60})):
            status, raw = http_call(port, "POST", "/admin/keys", json.dumps(
                {"name": f"soak-{kind}", **fields}).encode(),
                {"authorization": f"Bearer {self.admin_key}"})
            if status != 201:
                raise RuntimeError(f"POST /admin/keys answered {status}: {raw[:300]!r}")
            keys[kind] = json.loads(raw)["key"]
        return keys

    def spool_bytes(self) -> int:
        spool = self.tmp / "data" / "spool"
        return sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) \
            if spool.exists() else 0

    async def drive(self, gw_pid: int, port: int, keys: dict[str, str]
                    ) -> list[dict[str, Any]]:
        ids = itertools.count()
        templates = bodies()
        self.rss_started = proc_status(gw_pid).get("VmRSS", 0) / 1024
        primer = Client(port, keys, Tally(), random.Random(-1), templates, ids)
        for kind, _ in MIX:  # each path once (lazy loads: tiktoken, the first stream...)
            await primer.one(kind)
        await primer.drop()
        self.rss_primed = proc_status(gw_pid).get("VmRSS", 0) / 1024
        tally = Tally()
        start = time.monotonic()
        until = start + self.args.minutes * 60
        clients = [Client(port, keys, tally, random.Random(i), templates, ids)
                   for i in range(self.args.clients)]
        tasks = [asyncio.ensure_future(c.run(until, self.args.requests)) for c in clients]
        samples: list[dict[str, Any]] = []
        last_done, last_t = 0, start

        def sample() -> None:
            nonlocal last_done, last_t
            now = time.monotonic()
            st = proc_status(gw_pid)
            s = {"minute": round((now - start) / 60, 2), "requests": tally.done,
                 "rps": round((tally.done - last_done) / max(now - last_t, 1e-9), 1),
                 "rss_mb": round(st.get("VmRSS", 0) / 1024, 1),
                 "hwm_mb": round(st.get("VmHWM", 0) / 1024, 1),
                 "threads": st.get("Threads"), "spool_mb": round(self.spool_bytes() / 2**20, 1),
                 "unexpected": sum(tally.unexpected.values()),
                 "io_errors": sum(tally.io_errors.values())}
            last_done, last_t = tally.done, now
            samples.append(s)
            log(f"minute {s['minute']:6.2f}: {s['requests']:>9} requests ({s['rps']:7.1f}/s), "
                f"RSS {s['rss_mb']:7.1f} MB (peak {s['hwm_mb']:.1f}), spool {s['spool_mb']} "
                f"MB, unexpected {s['unexpected']}, io errors {s['io_errors']}")

        sample()
        pending = set(tasks)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=self.args.sample_s)
            if pending or time.monotonic() - last_t > self.args.sample_s / 2:
                sample()
        self.tally = tally
        return samples


# ---------------------------------------------------------------- report
def growth(samples: list[dict[str, Any]], warmup_min: float) -> dict[str, Any]:
    after = [s for s in samples if s["minute"] >= warmup_min]
    if len(after) < 2:
        return {}
    base, end = after[0], after[-1]
    half = after[len(after) // 2:]
    span = max(half[-1]["minute"] - half[0]["minute"], 1e-9)
    return {"warm_rss_mb": base["rss_mb"], "end_rss_mb": end["rss_mb"],
            "max_rss_mb": max(s["rss_mb"] for s in after),
            "growth_pct": round(100 * (end["rss_mb"] - base["rss_mb"]) / base["rss_mb"], 1),
            "last_half_mb_per_10min": round(10 * (half[-1]["rss_mb"] - half[0]["rss_mb"])
                                            / span, 2)}


def tracemalloc_top(snap_dir: Path) -> list[str]:
    """The 15 allocation sites that grew most from the first snapshot to the last."""
    import tracemalloc

    snaps = sorted(snap_dir.glob("snap-*.pickle"))
    if len(snaps) < 2:
        return ["(fewer than two snapshots were taken)"]
    old = tracemalloc.Snapshot.load(str(snaps[0]))
    new = tracemalloc.Snapshot.load(str(snaps[-1]))
    out = [f"traced: {sum(s.size for s in old.statistics('filename')) / 2**20:.1f} MiB after "
           f"the warm-up, {sum(s.size for s in new.statistics('filename')) / 2**20:.1f} MiB "
           "at the end"]
    for stat in new.compare_to(old, "traceback")[:15]:
        frames = [f"{f.filename.split('site-packages/')[-1].replace(str(ROOT) + '/', '')}"
                  f":{f.lineno}" for f in stat.traceback[-4:]]
        out.append(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} objects  "
                   + " <- ".join(reversed(frames)))
    return out


def report(args: argparse.Namespace, soak: Soak, samples: list[dict[str, Any]],
           stopped: dict[str, Any]) -> str:
    g = growth(samples, args.warmup_min)
    tally = soak.tally
    lines = ["# Gateway soak", "",
             f"{time.strftime('%Y-%m-%d %H:%M')} - git {git_head()}, sources "
             f"{source_digest()} - {args.clients} clients, {args.minutes} min planned, "
             f"pinning: {soak.pin.describe()}"
             + (f" - gateway env: {' '.join(args.gateway_env)}" if args.gateway_env else "")
             + (" - TRACEMALLOC ON (slow)" if args.tracemalloc else ""), ""]
    lines += [f"RSS at start {soak.rss_started:.1f} MB; after one request of each kind "
              f"{soak.rss_primed:.1f} MB.", ""]
    if g:
        lines += [f"RSS after the {args.warmup_min}-minute warm-up {g['warm_rss_mb']} MB, at the "
                  f"end {g['end_rss_mb']} MB ({g['growth_pct']:+}%), highest "
                  f"{g['max_rss_mb']} MB; over the second half "
                  f"{g['last_half_mb_per_10min']:+} MB per 10 minutes.", ""]
    lines += [f"{tally.done:,} requests; unexpected statuses: "
              f"{dict(tally.unexpected) or 'none'}; client I/O errors: "
              f"{dict(tally.io_errors) or 'none'}; gateway error lines: "
              f"{stopped['log_errors']['total']} {stopped['log_errors']['top'][:3]}; "
              f"exit {stopped['exit']}.", "",
              "| minute | requests | req/s | RSS MB | peak MB | spool MB |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {s['minute']} | {s['requests']:,} | {s['rps']} | {s['rss_mb']} | "
              f"{s['hwm_mb']} | {s['spool_mb']} |" for s in samples]
    mix = Counter({k: 0 for k, _ in MIX})
    for (kind, _), n in tally.by_kind.items():
        mix[kind] += n
    lines += ["", "Requests by kind (status: count): " + "; ".join(
        f"{kind} " + ", ".join(f"{st}: {n:,}" for (k, st), n in sorted(tally.by_kind.items())
                               if k == kind) for kind in mix)]
    if args.tracemalloc:
        top = tracemalloc_top(soak.snap_dir)
        lines += ["", "Python allocations that grew most after the warm-up (tracemalloc):",
                  "", "```", *top, "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--requests", type=int, default=0, help="stop after this many (0: none)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--sample-s", type=float, default=60.0)
    ap.add_argument("--warmup-min", type=float, default=2.0)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--gw-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(PROCS.stop_all)
    tmp = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    soak = Soak(args, tmp)
    try:
        soak.pin.pin_self()
        gw, port = soak.start()
        keys = soak.create_keys(port)
        log(f"gateway pid {gw.pid} on port {port}; {args.clients} clients for "
            f"{args.minutes} min (tmp {tmp})")
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            loop = asyncio.new_event_loop()
        try:
            samples = loop.run_until_complete(soak.drive(gw.pid, port, keys))
        finally:
            loop.close()
        t0 = time.monotonic()
        PROCS.stop(gw, timeout=120)
        stopped = {"exit": gw.returncode, "stop_s": round(time.monotonic() - t0, 1),
                   "log_errors": log_errors(soak.gw_log)}
        text = report(args, soak, samples, stopped)
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(
            {"samples": samples, "growth": growth(samples, args.warmup_min),
             "stopped": stopped, "by_kind": {f"{k}:{s}": n for (k, s), n
                                             in soak.tally.by_kind.items()}}, indent=1))
        log(f"wrote {args.out}")
        return 0
    finally:
        PROCS.stop_all()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
