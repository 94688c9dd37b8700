"""Gateway overhead benchmark: the gateway's own added cost against calling the upstream directly.

One run starts the fake upstream (`bench/upstream.py`) and, several times, the real gateway
(`gateway serve`, SQLite, audit on, an app virtual key created through `/admin/keys`). Each
repeat measures the same load steps against the upstream directly and through the gateway,
back to back, with `bench/load.py` (closed loop, keep-alive): non-stream chat at 1 and 32
clients (p50/p99), time to the first streamed chunk at 1 client, throughput at 64 clients
(plus `wrk` when installed). Then peak RSS (VmHWM) and, in a separate phase, start-up time
(spawn -> `/healthz` 200). Medians over the repeats go to a Markdown table (stdout and
`--out`) and a JSON file next to it.

Pinning: the gateway runs on CPU 1; the upstream, the load generator and this driver on
CPU 0 (`--gw-cpu` / `--load-cpu`). Every process is started in its own session and stopped
by process-group id, also on Ctrl-C, SIGTERM or an error. Everything binds 127.0.0.1.

    .venv/bin/python bench/run.py            # or: make bench BENCH_ARGS="--quick"
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import hashlib
import http.client
import importlib.metadata
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_OUT = BENCH / "results" / "latest.md"
CHAT_MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FOREIGN_WARN_PCT = 5.0

# (step name, payload, clients, stream): run against the upstream and the gateway each repeat.
STEPS = [
    ("chat_c1", "chat", 1, False),
    ("chat_c32", "chat", 32, False),
    ("stream_c1", "stream", 1, True),
    ("chat_c64", "chat", 64, False),
    # /v1/responses translated to the upstream's Chat Completions (store: false: the
    # translation's cost alone); `direct` is the same Chat call straight to the upstream
    ("responses_c1", "responses", 1, False),
    ("responses_stream_c1", "responses_stream", 1, True),
    ("responses_c64", "responses", 64, False),
    # Anthropic Messages, beside chat: passed through to an Anthropic-shaped upstream, and
    # translated to the upstream's OpenAI Chat (the direct figure: the upstream's Messages)
    ("messages_c1", "messages", 1, False),
    ("messages_tr_c1", "messages_tr", 1, False),
    ("messages_tr_stream_c1", "messages_tr_stream", 1, True),
    ("messages_c64", "messages", 64, False),
    ("messages_tr_c64", "messages_tr", 64, False),
]
MESSAGES_MODEL = "claude-bench"  # an anthropic/ deployment on the fake upstream
# payload -> (gateway path, the payload `direct` sends to the upstream instead, what a
# whole answer holds, the first-chunk and end markers of a stream)
ROUTES = {
    "chat": ("/v1/chat/completions", "chat", '"choices"', "data:", "[DONE]"),
    "stream": ("/v1/chat/completions", "stream", '"choices"', "data:", "[DONE]"),
    "responses": ("/v1/responses", "chat", '"output"', "data:", "[DONE]"),
    "responses_stream": ("/v1/responses", "stream", '"output"',
                         "response.output_text.delta", "response.completed"),
    # Messages: `direct` sends the same body to the upstream's own /v1/messages
    "messages": ("/v1/messages", "messages", '"content"', "data:", "message_stop"),
    "messages_tr": ("/v1/messages", "messages_tr", '"content"', "data:", "message_stop"),
    "messages_tr_stream": ("/v1/messages", "messages_tr_stream", '"content"', "data:",
                           "message_stop"),
}


def log(*parts: object) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes
class Procs:
    """Every process we start leads its own process group; stop() kills that group by id."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, log_path: Path | None = None,
              stdout: int | None = None, env: dict | None = None, cwd: Path | None = None,
              preexec: Any = None) -> subprocess.Popen:
        """stdout to `stdout` (e.g. PIPE) or the log; stderr to the log, else a pipe."""
        logf = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
        try:
            p = subprocess.Popen(argv, stdout=stdout if stdout is not None else logf,
                                 stderr=logf if logf is not None else subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                                 start_new_session=True, preexec_fn=preexec)
        finally:
            if logf is not None:
                logf.close()
        self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen | None, timeout: float = 20.0) -> None:
        if p is None:
            return
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        # anything left in the group (children that ignored SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()
        if p in self.live:
            self.live.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.live)):
            self.stop(p, timeout=5)


PROCS = Procs()


def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


class Pinning:
    def __init__(self, gw_cpu: int, load_cpu: int) -> None:
        self.cpus = sorted(os.sched_getaffinity(0))
        self.enabled = len(self.cpus) >= 2 and gw_cpu in self.cpus and load_cpu in self.cpus
        self.gw_cpu = gw_cpu
        self.load_cpu = load_cpu
        self.taskset = shutil.which("taskset")

    def wrap(self, cpu: int, argv: list[str]) -> tuple[list[str], Any]:
        """(argv, preexec_fn) that run `argv` on `cpu`: taskset when installed."""
        if not self.enabled:
            return argv, None
        if self.taskset:
            return [self.taskset, "-c", str(cpu), *argv], None
        return argv, lambda: os.sched_setaffinity(0, {cpu})

    def pin_self(self) -> None:
        if self.enabled:
            os.sched_setaffinity(0, {self.load_cpu})

    def describe(self) -> str:
        if not self.enabled:
            return f"none (CPUs available: {self.cpus}; need 2 for pinning)"
        how = "taskset -c" if self.taskset else "sched_setaffinity"
        return (f"gateway on CPU {self.gw_cpu}; upstream + load generator + driver on CPU "
                f"{self.load_cpu} ({how})")


# ---------------------------------------------------------------- small helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_call(port: int, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"content-type": "application/json"} if body is not None else {}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def source_digest() -> str:
    """A short digest of gateway/ and migrations/ sources: ties a result to a code state."""
    h = hashlib.sha256()
    for sub in ("gateway", "migrations"):
        for path in sorted((ROOT / sub).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".ini", ".yaml", ".sql", ".mako"):
                h.update(str(path.relative_to(ROOT)).encode())
                with contextlib.suppress(OSError):
                    h.update(path.read_bytes())
    return h.hexdigest()[:12]


def git_head() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return out.stdout.strip() if out.returncode == 0 else "no commit"


def log_errors(path: Path) -> dict[str, Any]:
    """Error/critical lines in a gateway log (JSON lines or plain text), by message."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError), open(path, errors="replace") as f:
        for line in f:
            msg = None
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = {}
                if str(rec.get("level", "")).lower() in ("error", "critical"):
                    msg = str(rec.get("msg", "?"))
                    if rec.get("error"):
                        msg += f" ({rec['error']})"
            elif "ERROR" in line or "Traceback" in line:
                msg = line.strip()[:160]
            if msg is not None:
                counts[msg] = counts.get(msg, 0) + 1
    return {"total": sum(counts.values()),
            "top": sorted(counts.items(), key=lambda kv: -kv[1])[:5]}


class ForeignCpu:
    """CPU used on this machine by anything but this run (other jobs, steal), start to end."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0 = self._busy()
        self.ours0 = self._ours()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal. irq/softirq are left out: loopback
        # traffic of this very run is processed there and is not charged to any process.
        return (v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)) / CLK_TCK

    @staticmethod
    def _ours() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def finish(self, live_pids: list[int]) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        ours = self._ours() - self.ours0 + sum(proc_cpu(pid) for pid in live_pids)
        foreign = max(0.0, self._busy() - self.busy0 - ours)
        ncpu = os.cpu_count() or 1
        return {"wall_s": round(wall, 1), "ours_cpu_s": round(ours, 1),
                "foreign_cpu_s": round(foreign, 1),
                "foreign_pct": round(100 * foreign / max(wall * ncpu, 1e-9), 1)}


def proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------- setup files
def write_payloads(tmp: Path) -> dict[str, Path]:
    # ~200 tokens of prompt: a system message plus ~800 characters of English
    text = ("The quick brown fox jumps over the lazy dog while the benchmark harness measures "
            "how much time the gateway adds to every request. " * 8)[:800]
    chat = {"model": CHAT_MODEL, "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": text}]}
    responses = {"model": CHAT_MODEL, "max_output_tokens": 64, "temperature": 0,
                 "instructions": "You are a helpful assistant.", "input": text, "store": False}
    messages = {"model": MESSAGES_MODEL, "max_tokens": 64, "temperature": 0,
                "system": "You are a helpful assistant.",
                "messages": [{"role": "user", "content": text}]}
    bodies = {
        "chat": chat,
        "stream": {**chat, "stream": True, "stream_options": {"include_usage": True}},
        "embed": {"model": EMBED_MODEL, "input": text[:200]},
        "responses": responses,
        "responses_stream": {**responses, "stream": True},
        "messages": messages,
        "messages_tr": {**messages, "model": CHAT_MODEL},
        "messages_tr_stream": {**messages, "model": CHAT_MODEL, "stream": True},
    }
    paths = {}
    for name, obj in bodies.items():
        paths[name] = tmp / f"payload_{name}.json"
        paths[name].write_text(json.dumps(obj, separators=(",", ":")))
    return paths


def write_config(tmp: Path, upstream_port: int, deployments: int) -> Path:
    base = f"http://127.0.0.1:{upstream_port}/v1"
    chat_deps = "".join(f"      - model: openai/{CHAT_MODEL}\n        api_base: {base}\n"
                        for _ in range(deployments))
    path = tmp / "gateway.yaml"
    path.write_text(
        "models:\n"
        f"  - name: {CHAT_MODEL}\n    deployments:\n{chat_deps}"
        f"  - name: {EMBED_MODEL}\n    deployments:\n"
        f"      - model: openai/{EMBED_MODEL}\n        api_base: {base}\n"
        f"  - name: {MESSAGES_MODEL}\n    deployments:\n"
        f"      - model: anthropic/{MESSAGES_MODEL}\n        api_base: {base[:-3]}\n")
    return path


def write_wrk_script(tmp: Path, body: bytes, headers: dict[str, str]) -> Path:
    lua_headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    path = tmp / "wrk_post.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{lua_headers}"
        "function done(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,'
        '\\"p50_us\\":%.1f,\\"p99_us\\":%.1f,\\"errors\\":%d}\\n",'
        " summary.requests, summary.duration, latency:percentile(50),"
        " latency:percentile(99),"
        " e.connect + e.read + e.write + e.status + e.timeout))\n"
        "end\n")
    return path


# ---------------------------------------------------------------- the bench
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.pin = Pinning(args.gw_cpu, args.load_cpu)
        self.python = sys.executable
        exe = Path(sys.executable).parent / "gateway"
        self.gateway_exe = str(exe if exe.exists() else ROOT / ".venv" / "bin" / "gateway")
        self.admin_key = "bench-admin-" + secrets.token_urlsafe(24)
        self.wrk = None if args.no_wrk else shutil.which("wrk")
        self.upstream: subprocess.Popen | None = None
        self.upstream_port = 0
        self.payloads: dict[str, Path] = {}
        self.config = Path()
        self.gw_spawns = 0
        self.gw_log = Path()

    # ---- upstream
    def start_upstream(self) -> None:
        argv, preexec = self.pin.wrap(self.pin.load_cpu, [
            self.python, str(BENCH / "upstream.py"), "--port", "0",
            "--chunks", str(self.args.chunks)])
        log_path = self.tmp / "upstream.log"
        p = PROCS.start(argv, stdout=subprocess.PIPE, log_path=log_path, preexec=preexec)
        self.upstream = p
        assert p.stdout is not None
        line = p.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"upstream did not start: {line!r}\n{tail(log_path)}")
        self.upstream_port = int(line.split()[1])
        status, _ = http_call(self.upstream_port, "GET", "/health")
        if status != 200:
            raise RuntimeError(f"upstream /health answered {status}")

    # ---- gateway
    def gw_env(self, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update({
            "GATEWAY_CONFIG": str(self.config),
            "GATEWAY_DATABASE_URL": f"sqlite:///{self.tmp / 'gw.db'}",
            "GATEWAY_ADMIN_KEY": self.admin_key,
            "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        })
        for item in self.args.gateway_env:
            name, _, value = item.partition("=")
            env[name] = value
        return env

    def migrate(self) -> None:
        out = subprocess.run([self.gateway_exe, "migrate"], env=self.gw_env(0), cwd=self.tmp,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"gateway migrate failed: {out.stdout}{out.stderr}")

    def start_gateway(self) -> tuple[subprocess.Popen, int, float]:
        """Spawn `gateway serve` pinned to the gateway CPU; return (proc, port, startup s).

        The log of the latest spawn is `self.gw_log`.
        """
        last_error = ""
        for _ in range(3):  # a free port can be taken between our check and the bind
            port = free_port()
            self.gw_spawns += 1
            log_path = self.tmp / f"gateway-{self.gw_spawns}.log"
            self.gw_log = log_path
            argv, preexec = self.pin.wrap(self.pin.gw_cpu, [self.gateway_exe, "serve"])
            t0 = time.perf_counter()
            p = PROCS.start(argv, log_path=log_path, env=self.gw_env(port), cwd=self.tmp,
                            preexec=preexec)
            deadline = t0 + 120
            while time.perf_counter() < deadline:
                if p.poll() is not None:
                    last_error = f"gateway exited with {p.returncode}:\n{tail(log_path)}"
                    break
                try:
                    status, _ = http_call(port, "GET", "/healthz", timeout=2)
                    if status == 200:
                        return p, port, time.perf_counter() - t0
                except OSError:
                    pass
                time.sleep(0.005)
            else:
                last_error = f"gateway did not answer /healthz in 120 s:\n{tail(log_path)}"
            PROCS.stop(p)
        raise RuntimeError(last_error)

    def create_key(self, port: int) -> str:
        status, raw = http_call(port, "POST", "/admin/keys",
                                json.dumps({"name": "bench"}).encode(),
                                {"authorization": f"Bearer {self.admin_key}"})
        if status != 201:
            raise RuntimeError(f"POST /admin/keys answered {status}: {raw[:500]!r}")
        return json.loads(raw)["key"]

    # ---- checks and load
    def smoke(self, port: int, headers: dict[str, str]) -> dict[str, bool | str]:
        """Every endpoint answers as expected (through the gateway or directly)."""
        checks = {
            "chat": ("POST", "/v1/chat/completions", "chat", b'"choices"'),
            "stream": ("POST", "/v1/chat/completions", "stream", b"data: [DONE]"),
            "embeddings": ("POST", "/v1/embeddings", "embed", b'"embedding"'),
            "messages": ("POST", "/v1/messages", "messages", b'"content"'),
            "messages_translated": ("POST", "/v1/messages", "messages_tr", b'"content"'),
            "models": ("GET", "/v1/models", None, CHAT_MODEL.encode()),
            "responses": ("POST", "/v1/responses", "responses", b'"output"'),
        }
        if port == self.upstream_port:  # the upstream speaks Chat only
            del checks["responses"]
        out: dict[str, bool | str] = {}
        for name, (method, path, payload, expect) in checks.items():
            body = self.payloads[payload].read_bytes() if payload else None
            try:
                status, raw = http_call(port, method, path, body, headers)
                out[name] = True if status == 200 and expect in raw else f"HTTP {status}"
            except OSError as exc:
                out[name] = type(exc).__name__
        return out

    def load(self, port: int, payload: str, clients: int, stream: bool,
             headers: dict[str, str], cpu_pid: int = 0) -> dict:
        path, direct, expect, first, done = ROUTES.get(payload, ROUTES["chat"])
        if port == self.upstream_port:  # the same work straight from the upstream
            payload = direct
            path, _, expect, first, done = ROUTES[direct]
        argv = [self.python, str(BENCH / "load.py"), f"http://127.0.0.1:{port}{path}",
                "--body-file", str(self.payloads[payload]), "-c", str(clients),
                "-d", str(self.args.duration), "--warmup", str(self.args.warmup)]
        argv += ["--stream", "--first-marker", first, "--done-marker", done] if stream \
            else ["--expect", expect]
        for k, v in headers.items():
            argv += ["--header", f"{k}: {v}"]
        if cpu_pid:
            argv += ["--cpu-pid", str(cpu_pid)]
            if self.pin.enabled:
                argv += ["--cpu-core", str(self.pin.gw_cpu)]
        argv, preexec = self.pin.wrap(self.pin.load_cpu, argv)
        p = PROCS.start(argv, stdout=subprocess.PIPE, preexec=preexec)
        try:
            out, err = p.communicate(timeout=self.args.warmup + self.args.duration + 120)
        finally:
            PROCS.stop(p)
        if p.returncode != 0:
            raise RuntimeError(f"load.py failed ({p.returncode}): {err.decode()[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])

    def run_wrk(self, port: int, clients: int, headers: dict[str, str]) -> dict:
        assert self.wrk is not None
        script = write_wrk_script(self.tmp, self.payloads["chat"].read_bytes(), headers)
        argv, preexec = self.pin.wrap(self.pin.load_cpu, [
            self.wrk, "-t1", f"-c{clients}", f"-d{max(1, round(self.args.duration))}s",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/v1/chat/completions"])
        p = PROCS.start(argv, stdout=subprocess.PIPE, preexec=preexec)
        try:
            out, err = p.communicate(timeout=self.args.duration + 120)
        finally:
            PROCS.stop(p)
            script.unlink(missing_ok=True)
        for line in out.decode().splitlines():
            if line.startswith("WRKJSON "):
                r = json.loads(line[8:])
                return {"requests": r["requests"], "errors": r["errors"],
                        "rps": round(r["requests"] / (r["duration_us"] / 1e6), 1),
                        "p50_ms": round(r["p50_us"] / 1000, 4),
                        "p99_ms": round(r["p99_us"] / 1000, 4)}
        raise RuntimeError(f"wrk failed: {out.decode()[-800:]} {err.decode()[-800:]}")

    def audit_rows(self) -> int | None:
        try:
            with contextlib.closing(sqlite3.connect(self.tmp / "gw.db")) as db:
                return db.execute("SELECT count(*) FROM audit_events").fetchone()[0]
        except sqlite3.Error:
            return None

    # ---- phases
    def startup_phase(self) -> list[float]:
        times = []
        for i in range(self.args.spawns):
            p, _, took = self.start_gateway()
            PROCS.stop(p)
            times.append(took)
            log(f"start-up {i + 1}/{self.args.spawns}: {took:.3f} s")
        return times

    def repeat(self, rep: int) -> dict:
        res: dict[str, Any] = {"repeat": rep, "direct": {}, "gateway": {}}
        audit_before = self.audit_rows() or 0
        gw, port, startup = self.start_gateway()
        gw_log = self.gw_log
        try:
            res["startup_s"] = round(startup, 4)
            key = self.create_key(port)
            gw_headers = {"authorization": f"Bearer {key}"}
            res["smoke_gateway"] = self.smoke(port, gw_headers)
            res["smoke_direct"] = self.smoke(self.upstream_port, {})
            # audited so far: the key creation, and the chat, stream and embeddings checks
            # (GET /v1/models is a read and is not audited)
            answered = 1 + sum(1 for k, v in res["smoke_gateway"].items()
                               if v is True and k != "models")
            targets = [("direct", self.upstream_port, {}, 0),
                       ("gateway", port, gw_headers, gw.pid)]
            if rep % 2:
                targets.reverse()  # alternate who goes first, against drift
            for step, payload, clients, stream in STEPS:
                for name, tport, headers, pid in targets:
                    r = self.load(tport, payload, clients, stream, headers, pid)
                    res[name][step] = r
                    if name == "gateway":
                        answered += r["answered"]
                    extra = f", TTFC p50 {r['ttfc_p50_ms']:.3f} ms" if stream else ""
                    log(f"repeat {rep + 1} {step:10s} {name:8s}: p50 {r['p50_ms']:.3f} ms, "
                        f"p99 {r['p99_ms']:.3f} ms, {r['rps']:.0f} req/s{extra}, "
                        f"errors {r['errors']}")
            if self.wrk:
                for name, tport, headers, _ in targets:
                    r = self.run_wrk(tport, 64, headers)
                    res[name]["wrk_c64"] = r
                    if name == "gateway":
                        answered += r["requests"]
                    log(f"repeat {rep + 1} wrk_c64    {name:8s}: {r['rps']:.0f} req/s, "
                        f"p50 {r['p50_ms']:.3f} ms, errors {r['errors']}")
            st = proc_status(gw.pid)
            res["peak_rss_mb"] = round(st.get("VmHWM", 0) / 1024, 1)
            res["rss_mb"] = round(st.get("VmRSS", 0) / 1024, 1)
            res["threads"] = st.get("Threads")
        finally:
            t_stop = time.perf_counter()
            PROCS.stop(gw, timeout=60)  # SIGTERM: the audit writer drains before exit
            res["stop_s"] = round(time.perf_counter() - t_stop, 3)
            res["exit_code"] = gw.returncode
        res["log_errors"] = log_errors(gw_log)
        rows = self.audit_rows()
        res["audit_rows"] = None if rows is None else rows - audit_before
        res["gateway_requests"] = answered
        return res


# ---------------------------------------------------------------- aggregation and report
def aggregate(runs: list[dict], startup: list[float]) -> dict:
    def med(target: str, step: str, field: str) -> float | None:
        return median([r[target].get(step, {}).get(field) for r in runs])

    rows: dict[str, dict[str, Any]] = {}
    figures = [
        ("chat c=1 p50 (ms)", "chat_c1", "p50_ms", "lower"),
        ("chat c=1 p99 (ms)", "chat_c1", "p99_ms", "lower"),
        ("chat c=32 p50 (ms)", "chat_c32", "p50_ms", "lower"),
        ("chat c=32 p99 (ms)", "chat_c32", "p99_ms", "lower"),
        ("stream c=1 first chunk p50 (ms)", "stream_c1", "ttfc_p50_ms", "lower"),
        ("stream c=1 first chunk p99 (ms)", "stream_c1", "ttfc_p99_ms", "lower"),
        ("stream c=1 whole stream p50 (ms)", "stream_c1", "p50_ms", "lower"),
        ("throughput c=64 (req/s)", "chat_c64", "rps", "higher"),
        ("chat c=64 p50 (ms)", "chat_c64", "p50_ms", "lower"),
        ("chat c=64 p99 (ms)", "chat_c64", "p99_ms", "lower"),
        ("throughput c=64, wrk (req/s)", "wrk_c64", "rps", "higher"),
        ("responses c=1 p50 (ms)", "responses_c1", "p50_ms", "lower"),
        ("responses c=1 p99 (ms)", "responses_c1", "p99_ms", "lower"),
        ("responses stream c=1 first output_text.delta p50 (ms)", "responses_stream_c1",
         "ttfc_p50_ms", "lower"),
        ("responses stream c=1 whole stream p50 (ms)", "responses_stream_c1", "p50_ms",
         "lower"),
        ("responses throughput c=64 (req/s)", "responses_c64", "rps", "higher"),
        ("messages passthrough c=1 p50 (ms)", "messages_c1", "p50_ms", "lower"),
        ("messages translated c=1 p50 (ms)", "messages_tr_c1", "p50_ms", "lower"),
        ("messages translated stream c=1 first event p50 (ms)", "messages_tr_stream_c1",
         "ttfc_p50_ms", "lower"),
        ("messages translated stream c=1 whole stream p50 (ms)", "messages_tr_stream_c1",
         "p50_ms", "lower"),
        ("messages passthrough throughput c=64 (req/s)", "messages_c64", "rps", "higher"),
        ("messages translated throughput c=64 (req/s)", "messages_tr_c64", "rps", "higher"),
    ]
    for label, step, field, kind in figures:
        d, g = med("direct", step, field), med("gateway", step, field)
        if d is None and g is None:
            continue
        row: dict[str, Any] = {"direct": d, "gateway": g, "kind": kind}
        if d is not None and g is not None:
            row["added"] = g - d if kind == "lower" else None
            row["ratio"] = g / d if d else None
        rows[label] = row
    summary: dict[str, Any] = {"figures": rows, "responses_vs_chat": _versus_chat(rows)}
    summary["peak_rss_mb"] = median([r.get("peak_rss_mb") for r in runs])
    summary["rss_mb"] = median([r.get("rss_mb") for r in runs])
    summary["threads"] = median([r.get("threads") for r in runs])
    summary["startup_s"] = {"median": median(startup), "min": min(startup, default=None),
                            "max": max(startup, default=None), "n": len(startup),
                            "samples": [round(s, 4) for s in startup]}
    summary["gateway_cpu_us_per_req"] = {
        step: median([r["gateway"].get(step, {}).get("cpu_us_per_req") for r in runs])
        for step, *_ in STEPS}
    summary["gateway_cpu_util"] = {
        step: median([r["gateway"].get(step, {}).get("cpu_util") for r in runs])
        for step, *_ in STEPS}
    summary["gateway_core_other"] = {
        step: median([r["gateway"].get(step, {}).get("core_other") for r in runs])
        for step, *_ in STEPS}
    summary["errors"] = {
        t: sum(s.get("errors", 0) for r in runs for s in r[t].values()) for t in
        ("direct", "gateway")}
    summary["audit_rows"] = sum(r.get("audit_rows") or 0 for r in runs)
    summary["gateway_requests"] = sum(r.get("gateway_requests") or 0 for r in runs)
    smoke = runs[-1].get("smoke_gateway", {}) if runs else {}
    summary["endpoints_ok"] = dict(smoke)
    summary["stop_s"] = median([r.get("stop_s") for r in runs])
    summary["exit_codes"] = [r.get("exit_code") for r in runs]
    top: dict[str, int] = {}
    for r in runs:
        for msg, n in r.get("log_errors", {}).get("top", []):
            top[msg] = top.get(msg, 0) + n
    summary["log_errors"] = {
        "total": sum(r.get("log_errors", {}).get("total", 0) for r in runs),
        "top": sorted(top.items(), key=lambda kv: -kv[1])[:5]}
    return summary


# (what, the chat figure, the responses figure, compared by): the Responses API's own cost
# beside chat's in the same run: added latency (gateway - direct) and throughput.
VERSUS = [
    ("added p50 at 1 client", "chat c=1 p50 (ms)", "responses c=1 p50 (ms)", "added"),
    ("added time to the first text", "stream c=1 first chunk p50 (ms)",
     "responses stream c=1 first output_text.delta p50 (ms)", "added"),
    ("req/s at 64 clients", "throughput c=64 (req/s)", "responses throughput c=64 (req/s)",
     "gateway"),
]


def _versus_chat(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    out = {}
    for what, chat, responses, field in VERSUS:
        c = rows.get(chat, {}).get(field)
        r = rows.get(responses, {}).get(field)
        out[what] = {"chat": c, "responses": r, "ratio": r / c if c and r is not None else None}
    return out


def warnings(meta: dict, summary: dict) -> list[str]:
    """Things that make the figures suspect: shown above the tables."""
    out = []
    slack = 64 * meta["repeats"] if meta["versions"].get("wrk") != "not used" else 0
    rows, answered = summary["audit_rows"], summary["gateway_requests"]
    if not answered <= rows <= answered + slack:
        out.append(f"audit rows ({rows:,}) do not match the audited requests answered "
                   f"({answered:,}): the audit trail lost or duplicated events")
    errs = summary["log_errors"]
    if errs["total"]:
        top = "; ".join(f"{n}x {msg[:140]}" for msg, n in errs["top"][:3])
        out.append(f"the gateway logged {errs['total']:,} error line(s): {top}")
    total_errors = summary["errors"]["gateway"] + summary["errors"]["direct"]
    if total_errors:
        out.append(f"{total_errors:,} request(s) failed (see error_kinds in the JSON)")
    # uvicorn re-raises the SIGTERM it handled once shut down: -15 is a clean stop too
    if any(code not in (0, -signal.SIGTERM, None) for code in summary["exit_codes"]):
        out.append(f"gateway exit codes after SIGTERM: {summary['exit_codes']}")
    other = meta.get("other_load", {})
    if other.get("foreign_pct", 0) > FOREIGN_WARN_PCT:
        out.append(f"other work used {other['foreign_pct']:g}% of the machine's CPU during the "
                   f"run ({other['foreign_cpu_s']:g} CPU-s; load average at start "
                   f"{' '.join(meta['loadavg_start'])}): figures are noisy, rerun when idle")
    shared = {k: v for k, v in summary.get("gateway_core_other", {}).items()
              if v is not None and v * 100 > FOREIGN_WARN_PCT}
    if shared:
        out.append("other processes used the gateway's CPU during " + ", ".join(
            f"{k} ({v * 100:.0f}%)" for k, v in shared.items()))
    if meta.get("source_digest_end") != meta.get("source_digest"):
        out.append("the gateway sources changed during the run (digest "
                   f"{meta['source_digest']} -> {meta.get('source_digest_end')}): repeats may "
                   "have measured different code")
    return out


def fmt(v: float | None, nd: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def render(meta: dict, summary: dict) -> str:
    lines = [
        f"# Gateway overhead benchmark ({meta['date']})",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Medians of {meta['repeats']} repeat(s); each step {meta['duration_s']:g} s measured "
        f"after {meta['warmup_s']:g} s warm-up; closed-loop clients on keep-alive connections "
        f"(`bench/load.py`). Non-stream chat body ~{meta['chat_body_bytes']} bytes "
        f"(~200 prompt tokens); streams carry {meta['chunks']} content chunks + finish + usage "
        f"+ [DONE]. Gateway: SQLite, audit on, app virtual key, {meta['deployments']} "
        f"deployment(s) of {CHAT_MODEL}"
        + (f"; extra gateway environment: `{' '.join(meta['gateway_env'])}`."
           if meta["gateway_env"] else "."),
        "",
        *[f"**Warning:** {w}\n" for w in warnings(meta, summary)],
        "| figure | direct | via gateway | added by gateway | gateway / direct |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, row in summary["figures"].items():
        nd = 0 if "req/s" in label else 3
        added = row.get("added")
        added_s = "-" if added is None else f"{added:+,.{nd}f}"
        ratio = row.get("ratio")
        lines.append(f"| {label} | {fmt(row['direct'], nd)} | {fmt(row['gateway'], nd)} | "
                     f"{added_s} | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", "| /v1/responses (translated) beside chat | chat | responses | "
              "responses / chat |", "|---|---:|---:|---:|"]
    for what, row in summary.get("responses_vs_chat", {}).items():
        nd = 0 if "req/s" in what else 3
        ratio = row.get("ratio")
        lines.append(f"| {what} | {fmt(row['chat'], nd)} | {fmt(row['responses'], nd)} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    wrk_note = (" (wrk abandons up to 64 in-flight requests when it stops; the gateway "
                "audits those too)") if meta["versions"].get("wrk") != "not used" else ""
    su = summary["startup_s"]
    cpu = summary["gateway_cpu_us_per_req"]
    util = summary["gateway_cpu_util"]
    other = summary["gateway_core_other"]
    lines += [
        "",
        "| gateway process | value |",
        "|---|---:|",
        f"| peak RSS after the load (VmHWM) | {fmt(summary['peak_rss_mb'], 1)} MB |",
        f"| RSS after the load (VmRSS) | {fmt(summary['rss_mb'], 1)} MB |",
        f"| start-up, spawn to /healthz 200 (median of {su['n']}) | {fmt(su['median'])} s "
        f"(min {fmt(su['min'])}, max {fmt(su['max'])}) |",
    ]
    for step, *_ in STEPS:
        lines.append(f"| gateway CPU per request, {step} | {fmt(cpu.get(step), 0)} us "
                     f"(CPU busy {fmt((util.get(step) or 0) * 100, 0)}%; other processes "
                     f"on its CPU {fmt((other.get(step) or 0) * 100, 0)}%) |")
    lines += [
        f"| audit rows written / requests answered | {summary['audit_rows']:,} / "
        f"{summary['gateway_requests']:,}{wrk_note} |",
        f"| errors (direct / gateway) | {summary['errors']['direct']} / "
        f"{summary['errors']['gateway']} |",
        f"| error lines in the gateway log | {summary['log_errors']['total']:,} |",
        f"| stop: SIGTERM to exit (audit drain), exit code | {fmt(summary['stop_s'])} s, "
        f"{', '.join(str(c) for c in summary['exit_codes'])} |",
        "| endpoints checked through the gateway | "
        + ", ".join(f"{k} {'ok' if v is True else v}" for k, v in
                    summary["endpoints_ok"].items()) + " |",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in meta["machine"].items())
        + f"; CPU used by other work during the run: "
        f"{meta.get('other_load', {}).get('foreign_pct', '?')}%.",
        "",
        f"Pinning: {meta['pinning']}. The upstream and the load generator share one CPU, so "
        "`direct` at 32/64 clients is slowed by that sharing; the c=1 figures are the cleanest "
        "measure of added latency.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f"; git HEAD {meta['git_head']}, gateway source digest {meta['source_digest']}.",
    ]
    return "\n".join(lines) + "\n"


def machine_info(pin: Pinning) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "usable CPUs": len(pin.cpus), "cpu": cpu,
            "python": platform.python_version(), "kernel": platform.release()}


def versions(wrk: str | None) -> dict[str, str]:
    out = {}
    for dist in ("llm-gateway", "uvicorn", "starlette", "httptools", "uvloop", "aiohttp",
                 "orjson", "sqlalchemy", "aiosqlite"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "n/a"
    if wrk:
        r = subprocess.run([wrk, "-v"], capture_output=True, text=True)
        out["wrk"] = ((r.stdout + r.stderr).split() or ["?"])[1]
    else:
        out["wrk"] = "not used"
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per step (10)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; medians reported (3)")
    ap.add_argument("--deployments", type=int, default=1,
                    help=f"deployments of {CHAT_MODEL}, all on the fake upstream (1)")
    ap.add_argument("--quick", action="store_true",
                    help="duration 3, repeats 1, 3 start-up spawns")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="Markdown report; the JSON goes next to it (bench/results/latest.md)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="unrecorded seconds before each step (1, or 0.5 with --quick)")
    ap.add_argument("--spawns", type=int, default=None,
                    help="gateway spawns for the start-up time (5, or 3 with --quick)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream (20)")
    ap.add_argument("--gw-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                    help="extra environment for the gateway (what-if runs), repeatable; "
                         "GATEWAY_* from the caller's environment are not passed on")
    ap.add_argument("--no-wrk", action="store_true", help="skip wrk even when installed")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, db)")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.repeats = 3.0, 1
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if args.spawns is None:
        args.spawns = 3 if args.quick else 5
    bad = [e for e in args.gateway_env if "=" not in e]
    if bad:
        ap.error(f"--gateway-env wants NAME=VALUE, got {bad[0]!r}")
    if args.duration <= 0 or args.repeats < 1 or args.deployments < 1 or args.spawns < 1:
        ap.error("--duration, --repeats, --deployments and --spawns must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    # Ctrl-C must reach us even when started with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    atexit.register(PROCS.stop_all)
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    bench = Bench(args, tmp)
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "duration_s": args.duration, "warmup_s": args.warmup,
        "repeats": args.repeats, "deployments": args.deployments, "chunks": args.chunks,
        "gateway_env": args.gateway_env,
        "machine": machine_info(bench.pin), "pinning": bench.pin.describe(),
        "git_head": git_head(), "source_digest": source_digest(),
    }
    bench.pin.pin_self()
    meta["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    foreign = ForeignCpu()
    keep_tmp = args.keep_tmp
    try:
        bench.payloads = write_payloads(tmp)
        meta["chat_body_bytes"] = bench.payloads["chat"].stat().st_size
        bench.start_upstream()
        log(f"fake upstream on 127.0.0.1:{bench.upstream_port}; pinning: {meta['pinning']}")
        bench.config = write_config(tmp, bench.upstream_port, args.deployments)
        bench.migrate()
        startup = bench.startup_phase()
        runs = []
        for rep in range(args.repeats):
            runs.append(bench.repeat(rep))
        meta["versions"] = versions(bench.wrk)
        meta["source_digest_end"] = source_digest()
        meta["other_load"] = foreign.finish([bench.upstream.pid] if bench.upstream else [])
        summary = aggregate(runs, startup)
        report = render(meta, summary)
        out_md = args.out if args.out.is_absolute() else Path.cwd() / args.out
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_md.write_text(report)
        out_json = out_md.with_suffix(".json")
        out_json.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs},
                                       indent=1))
        print(report, end="")
        log(f"wrote {out_md} and {out_json.name}")
    except KeyboardInterrupt:
        log("interrupted; stopping everything we started")
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"failed: {exc}")
        keep_tmp = True  # the gateway and upstream logs are in there
        return 1
    finally:
        PROCS.stop_all()
        if keep_tmp:
            log(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
