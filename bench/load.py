"""Closed-loop HTTP/1.1 load generator for the gateway benchmark (raw asyncio protocol, uvloop).

Each of `--concurrency` clients holds one keep-alive connection and sends the same POST again
as soon as the previous answer is complete, for `--warmup` + `--duration` seconds. Only
requests started after the warm-up are recorded. For each: total latency and, with `--stream`,
the time to the first SSE `data:` chunk (TTFC). A response counts as an error when its status
is not 200, when a stream has no `data: [DONE]`, or when a body lacks `--expect`.

Prints one JSON object on stdout (latencies in ms). Only 127.0.0.1 targets are allowed.

    python bench/load.py http://127.0.0.1:8000/v1/chat/completions --body-file b.json \\
        -c 32 -d 10 --header "authorization: Bearer sk-..."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from urllib.parse import urlsplit

HEAD, LENGTH, CHUNKED, CLOSE_DELIMITED = range(4)
GRACE_S = 30.0  # how long in-flight requests may run past the end before they count as errors


def pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class Run:
    """What every connection shares: the request, the clock and the results."""

    def __init__(self, request: bytes, stream: bool, expect: bytes | None, measure_from: float,
                 end: float, first: bytes = b"data:", done: bytes = b"[DONE]") -> None:
        self.request = request
        self.stream = stream
        self.first = first  # the event that counts as the first chunk (TTFC)
        self.done = done  # the event a complete stream ends with
        self.expect = expect
        self.measure_from = measure_from
        self.end = end
        self.lat: list[float] = []
        self.ttfc: list[float] = []
        self.events = 0
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.last_done = measure_from
        self.answered = 0  # every complete response, warm-up included
        self.conns: set[Conn] = set()

    def error(self, kind: str, t0: float) -> None:
        if t0 >= self.measure_from:
            self.errors[kind] = self.errors.get(kind, 0) + 1


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, done: asyncio.Future) -> None:
        self.run = run
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.t0 = 0.0
        self.in_flight = False

    # ---- connection
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.conns.add(self)
        self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.conns.discard(self)
        if self.in_flight:
            if self.state == CLOSE_DELIMITED:
                self.complete(time.perf_counter(), keep_alive=False)
            else:
                self.in_flight = False
                self.run.error("connection_lost", self.t0)
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # ---- one request
    def send(self) -> None:
        self.buf.clear()
        self.state = HEAD
        self.status = 0
        self.keep_alive = True
        self.t_first: float | None = None
        self.events = 0
        self.saw_done = False
        self.saw_expect = self.run.expect is None
        self.in_flight = True
        self.t0 = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self.buf
        buf += data
        if self.state == HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                self.status = int(lines[0].split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.status = -1
            self.length = -1
            chunked = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    self.keep_alive = value.strip().lower() != b"close"
            del buf[:end + 4]
            if chunked:
                self.state = CHUNKED
            elif self.length >= 0:
                self.state = LENGTH
            else:
                self.state = CLOSE_DELIMITED
                self.keep_alive = False
        if self.state == LENGTH:
            if len(buf) < self.length:
                return
            self.inspect(bytes(buf[:self.length]), now)
            del buf[:self.length]
            self.complete(now, self.keep_alive)
        elif self.state == CHUNKED:
            while True:
                le = buf.find(b"\r\n")
                if le < 0:
                    return
                size = int(bytes(buf[:le]).split(b";")[0], 16)
                if size == 0:
                    # last chunk: no trailers expected, just the closing CRLF
                    if len(buf) < le + 4:
                        return
                    del buf[:le + 4]
                    self.complete(now, self.keep_alive)
                    return
                if len(buf) < le + 2 + size + 2:
                    return
                self.inspect(bytes(buf[le + 2:le + 2 + size]), now)
                del buf[:le + 2 + size + 2]
        elif self.state == CLOSE_DELIMITED:
            self.inspect(bytes(buf), now)
            buf.clear()

    def inspect(self, piece: bytes, now: float) -> None:
        if not self.saw_expect and self.run.expect in piece:
            self.saw_expect = True
        if self.run.stream:
            n = piece.count(b"data:")
            if n:
                if self.t_first is None and self.run.first in piece:
                    self.t_first = now
                self.events += n
                if self.run.done in piece:
                    self.saw_done = True

    def complete(self, now: float, keep_alive: bool) -> None:
        run = self.run
        self.in_flight = False
        run.answered += 1
        t0 = self.t0
        if self.status != 200:
            run.error(f"status_{self.status}", t0)
        elif run.stream and not self.saw_done:
            run.error("no_done", t0)
        elif not self.saw_expect:
            run.error("unexpected_body", t0)
        elif t0 >= run.measure_from:
            run.ok += 1
            run.lat.append(now - t0)
            run.last_done = now
            if run.stream:
                run.ttfc.append((self.t_first or now) - t0)
                run.events += self.events
        if keep_alive and now < run.end:
            self.send()
        else:
            self.close()


async def client(host: str, port: int, run: Run) -> None:
    loop = asyncio.get_running_loop()
    while time.perf_counter() < run.end:
        done = loop.create_future()
        try:
            await loop.create_connection(lambda d=done: Conn(run, d), host, port)
        except OSError as exc:
            run.error(f"connect_{type(exc).__name__}", time.perf_counter())
            await asyncio.sleep(0.05)
            continue
        await done


def cpu_seconds(pid: int, core: int | None) -> tuple[float, float] | None:
    """(utime + stime of a process, all threads; busy time of CPU `core`, all processes)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    tck = os.sysconf("SC_CLK_TCK")
    core_busy = 0.0
    if core is not None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"cpu%d " % core):
                    v = [int(x) for x in line.split()[1:]]
                    # user nice system steal; irq/softirq (loopback traffic) are not charged
                    # to processes, so they are left out on both sides
                    core_busy = (v[0] + v[1] + v[2] + (v[7] if len(v) > 7 else 0)) / tck
                    break
    return (int(fields[11]) + int(fields[12])) / tck, core_busy


async def main_async(args: argparse.Namespace, request: bytes, host: str, port: int) -> dict:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    measure_from = start + args.warmup
    end = measure_from + args.duration
    run = Run(request, args.stream, args.expect.encode() if args.expect else None,
              measure_from, end, args.first_marker.encode(), args.done_marker.encode())
    cpu: list[tuple[float, tuple[float, float] | None]] = []

    def sample() -> None:
        cpu.append((time.perf_counter(), cpu_seconds(args.cpu_pid, args.cpu_core)))

    if args.cpu_pid:
        loop.call_later(args.warmup, sample)
    tasks = [asyncio.ensure_future(client(host, port, run)) for _ in range(args.concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=end - time.perf_counter() + GRACE_S)
    if args.cpu_pid:
        sample()
    for conn in list(run.conns):
        if conn.in_flight:
            conn.in_flight = False
            run.error("timeout", conn.t0)
        conn.close()
    for t in pending:
        t.cancel()
    lat = sorted(run.lat)
    ttfc = sorted(run.ttfc)
    window = max(run.last_done - measure_from, 1e-9)

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 4)

    out = {
        "concurrency": args.concurrency, "duration_s": args.duration, "stream": args.stream,
        "requests": run.ok, "answered": run.answered, "errors": sum(run.errors.values()),
        "error_kinds": run.errors,
        "rps": round(run.ok / window, 1),
        "mean_ms": ms(sum(lat) / len(lat)) if lat else None,
        "p50_ms": ms(pct(lat, 0.5)), "p90_ms": ms(pct(lat, 0.9)), "p99_ms": ms(pct(lat, 0.99)),
        "max_ms": ms(lat[-1] if lat else None),
    }
    if len(cpu) == 2 and cpu[0][1] is not None and cpu[1][1] is not None:
        wall = max(cpu[1][0] - cpu[0][0], 1e-9)
        cpu_s = cpu[1][1][0] - cpu[0][1][0]
        out["cpu_util"] = round(cpu_s / wall, 3)
        if args.cpu_core is not None:
            # what other processes used of the same CPU meanwhile
            core_s = cpu[1][1][1] - cpu[0][1][1]
            out["core_other"] = round(max(0.0, core_s - cpu_s) / wall, 3)
        out["cpu_us_per_req"] = round(cpu_s * 1e6 / run.ok, 1) if run.ok else None
    if args.stream:
        out.update({"ttfc_p50_ms": ms(pct(ttfc, 0.5)), "ttfc_p90_ms": ms(pct(ttfc, 0.9)),
                    "ttfc_p99_ms": ms(pct(ttfc, 0.99)),
                    "events_avg": round(run.events / run.ok, 2) if run.ok else None})
    return out


def build_request(url: str, body: bytes, headers: list[str]) -> tuple[bytes, str, int]:
    u = urlsplit(url)
    if u.scheme != "http" or u.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("load.py only targets http://127.0.0.1")
    host, port = "127.0.0.1", u.port or 80
    path = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", "content-type: application/json",
             f"content-length: {len(body)}"]
    lines += [h.strip() for h in headers if h.strip()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body, host, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--body-file", required=True)
    ap.add_argument("--header", action="append", default=[], help='"name: value", repeatable')
    ap.add_argument("-c", "--concurrency", type=int, default=1)
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first")
    ap.add_argument("--stream", action="store_true", help="time SSE: TTFC and [DONE] check")
    ap.add_argument("--expect", default=None, help="substring every 200 body must contain")
    ap.add_argument("--first-marker", default="data:",
                    help="streams: the text of the event that is the first chunk (data:); "
                         "`response.output_text.delta` times a Responses stream's first text")
    ap.add_argument("--done-marker", default="[DONE]",
                    help="streams: the text a complete stream holds ([DONE]; "
                         "`response.completed` for the Responses API)")
    ap.add_argument("--cpu-pid", type=int, default=0,
                    help="also report this process's CPU use over the measured window")
    ap.add_argument("--cpu-core", type=int, default=None,
                    help="with --cpu-pid: the CPU it is pinned to; report others' use of it")
    args = ap.parse_args()
    with open(args.body_file, "rb") as f:
        body = f.read()
    request, host, port = build_request(args.url, body, args.header)
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        loop = asyncio.new_event_loop()
    try:
        result = loop.run_until_complete(main_async(args, request, host, port))
    finally:
        loop.close()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
