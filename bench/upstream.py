"""A very fast fake OpenAI-compatible upstream for the gateway benchmark.

Raw asyncio `Protocol` HTTP/1.1 server (keep-alive, pipelining-safe) on uvloop when available:
no framework, so it is never the bottleneck in front of the gateway.

Endpoints (with or without the `/v1` prefix):
  POST /v1/chat/completions   JSON, or SSE when `"stream": true`: N content chunks, a finish
                              chunk, a usage chunk when `stream_options.include_usage`, [DONE]
  POST /v1/completions        the same for legacy completions
  POST /v1/embeddings         one vector per input
  POST /v1/messages           Anthropic Messages: JSON, or its SSE events when `"stream": true`
                              (message_start, one text block of N deltas, message_delta,
                              message_stop)
  GET  /v1/models, /v1/models/{id}, /health, /healthz

Path prefixes for the soak (`bench/soak.py`): `/fail/v1/...` answers 500 to every POST;
`/slow/v1/...` streams with 20 ms between chunks (so a client can leave mid-stream).

Knobs: `--chunks N` (content chunks per stream, default 20; header `x-bench-chunks` overrides),
`--chunk-delay-ms` (gap between chunks, default 0), `--embed-dim` (default 16).

Prints `listening <port>` on stdout once bound (port 0 picks a free one) and serves until
SIGTERM/SIGINT. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time
from typing import Any

import orjson

WORDS = [
    "Hello", " from", " the", " fake", " upstream", ",", " this", " is", " a", " canned",
    " answer", " for", " gateway", " benchmarks", ".", " OK",
]
COMPLETION_TOKENS = 16
ANSWER = "".join(WORDS[i % len(WORDS)] for i in range(COMPLETION_TOKENS))
MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "gpt-3.5-turbo-instruct"]
SLOW_CHUNK_DELAY_S = 0.02
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
           500: b"Internal Server Error"}
MAX_HEAD = 64 * 1024


class Settings:
    chunks = 20
    chunk_delay_s = 0.0
    embedding: list[float] = []


_ids = itertools.count(1)


def head(status: int, ctype: bytes, length: int | None, close: bool) -> bytes:
    parts = [b"HTTP/1.1 %d %s\r\ncontent-type: " % (status, REASONS.get(status, b"OK")), ctype,
             b"\r\n"]
    if length is None:
        parts.append(b"transfer-encoding: chunked\r\n")
    else:
        parts.append(b"content-length: %d\r\n" % length)
    parts.append(b"connection: close\r\n\r\n" if close else b"connection: keep-alive\r\n\r\n")
    return b"".join(parts)


def json_response(status: int, obj: Any, close: bool) -> bytes:
    body = orjson.dumps(obj)
    return head(status, b"application/json", len(body), close) + body


def error(status: int, message: str, close: bool) -> bytes:
    return json_response(status, {"error": {"message": message, "type": "invalid_request_error",
                                            "param": None, "code": None}}, close)


def usage(raw_len: int, completion: int) -> dict[str, int]:
    prompt = max(1, raw_len // 4)  # ~4 bytes of request body per token
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_body(req: dict, raw_len: int, chat: bool) -> dict:
    n = next(_ids)
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER,
                                          "refusal": None},
                  "logprobs": None, "finish_reason": "stop"}
        return {"id": f"chatcmpl-bench{n}", "object": "chat.completion",
                "created": int(time.time()), "model": req.get("model", "gpt-4o-mini"),
                "system_fingerprint": "fp_bench", "choices": [choice],
                "usage": usage(raw_len, COMPLETION_TOKENS)}
    choice = {"index": 0, "text": ANSWER, "logprobs": None, "finish_reason": "stop"}
    return {"id": f"cmpl-bench{n}", "object": "text_completion", "created": int(time.time()),
            "model": req.get("model", "gpt-3.5-turbo-instruct"), "choices": [choice],
            "usage": usage(raw_len, COMPLETION_TOKENS)}


def embed_body(req: dict, raw_len: int) -> dict:
    inp = req.get("input", "")
    count = len(inp) if isinstance(inp, list) and inp and not isinstance(inp[0], int) else 1
    data = [{"object": "embedding", "index": i, "embedding": Settings.embedding}
            for i in range(count)]
    u = usage(raw_len, 0)
    return {"object": "list", "model": req.get("model", "text-embedding-3-small"), "data": data,
            "usage": {"prompt_tokens": u["prompt_tokens"], "total_tokens": u["prompt_tokens"]}}


def anthropic_body(req: dict, raw_len: int) -> dict:
    return {"id": f"msg_bench{next(_ids)}", "type": "message", "role": "assistant",
            "model": req.get("model", "claude"), "content": [{"type": "text", "text": ANSWER}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": max(1, raw_len // 4), "output_tokens": COMPLETION_TOKENS}}


def anthropic_events(req: dict, raw_len: int, nchunks: int) -> list[bytes]:
    """Anthropic's SSE, each event one HTTP chunk."""
    message = {**anthropic_body(req, raw_len), "content": [], "stop_reason": None}
    message["usage"] = {**message["usage"], "output_tokens": 1}
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}})]
    for i in range(nchunks):
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta",
                                                          "text": WORDS[i % len(WORDS)]}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": nchunks}}),
               ("message_stop", {"type": "message_stop"})]
    out = []
    for name, obj in events:
        frame = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"
        out.append(b"%x\r\n%s\r\n" % (len(frame), frame))
    return out


def sse_events(req: dict, raw_len: int, chat: bool, nchunks: int) -> list[bytes]:
    """Every HTTP chunk of one SSE stream, already framed (`size\\r\\ndata: ...\\n\\n\\r\\n`)."""
    model = req.get("model", "gpt-4o-mini")
    created = int(time.time())
    n = next(_ids)
    cid = f"chatcmpl-bench{n}" if chat else f"cmpl-bench{n}"
    obj = "chat.completion.chunk" if chat else "text_completion"
    payloads = []
    for i in range(nchunks):
        tok = WORDS[i % len(WORDS)]
        if chat:
            delta = {"role": "assistant", "content": tok} if i == 0 else {"content": tok}
            choice: dict = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        else:
            choice = {"index": 0, "text": tok, "logprobs": None, "finish_reason": None}
        payloads.append({"id": cid, "object": obj, "created": created, "model": model,
                         "choices": [choice]})
    last = ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"} if chat
            else {"index": 0, "text": "", "logprobs": None, "finish_reason": "stop"})
    payloads.append({"id": cid, "object": obj, "created": created, "model": model,
                     "choices": [last]})
    options = req.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        payloads.append({"id": cid, "object": obj, "created": created, "model": model,
                         "choices": [], "usage": usage(raw_len, nchunks)})
    frames = [orjson.dumps(p) for p in payloads]
    frames.append(b"[DONE]")
    out = []
    for f in frames:
        data = b"data: " + f + b"\n\n"
        out.append(b"%x\r\n%s\r\n" % (len(data), data))
    return out


class Upstream(asyncio.Protocol):
    __slots__ = ("buf", "busy", "closed", "task", "transport")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""
        self.busy = False
        self.closed = False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self.send(error(400, "request head too large", True), True)
                return
            lines = buf[:end].split(b"\r\n")
            try:
                method, target, version = lines[0].split(b" ", 2)
            except ValueError:
                self.send(error(400, "bad request line", True), True)
                return
            clen = 0
            chunked = False
            close = version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    clen = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            if chunked:
                pos = end + 4
                parts = []
                while True:
                    le = buf.find(b"\r\n", pos)
                    if le < 0:
                        return
                    size = int(buf[pos:le].split(b";")[0], 16)
                    if len(buf) < le + 2 + size + 2:
                        return
                    parts.append(buf[le + 2:le + 2 + size])
                    pos = le + 2 + size + 2
                    if size == 0:
                        break
                body = b"".join(parts)
                consumed = pos
            else:
                if len(buf) < end + 4 + clen:
                    return
                body = buf[end + 4:end + 4 + clen]
                consumed = end + 4 + clen
            self.buf = buf[consumed:]
            headers = lines[1:]
            self.handle(method, target.split(b"?", 1)[0], headers, body, close)

    def handle(self, method: bytes, path: bytes, headers: list[bytes], body: bytes,
               close: bool) -> None:
        delay = Settings.chunk_delay_s
        if path.startswith(b"/fail/") and method == b"POST":
            self.send(json_response(500, {"error": {"message": "upstream failure (bench)",
                                                    "type": "server_error", "param": None,
                                                    "code": None}}, close), close)
            return
        if path.startswith(b"/slow/"):
            path, delay = path[5:], SLOW_CHUNK_DELAY_S
        if path.startswith(b"/v1/"):
            path = path[3:]
        if method == b"POST":
            try:
                req = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                self.send(error(400, "invalid JSON body", close), close)
                return
            if not isinstance(req, dict):
                req = {}
            if path in (b"/chat/completions", b"/completions"):
                chat = path == b"/chat/completions"
                if req.get("stream"):
                    nchunks = Settings.chunks
                    for h in headers:
                        if h[:15].lower() == b"x-bench-chunks:":
                            nchunks = int(h[15:])
                    frames = sse_events(req, len(body), chat, nchunks)
                    self.stream(frames, close, delay)
                    return
                self.send(json_response(200, chat_body(req, len(body), chat), close), close)
            elif path == b"/embeddings":
                self.send(json_response(200, embed_body(req, len(body)), close), close)
            elif path == b"/messages":
                if req.get("stream"):
                    self.stream(anthropic_events(req, len(body), Settings.chunks), close)
                    return
                self.send(json_response(200, anthropic_body(req, len(body)), close), close)
            else:
                self.send(error(404, f"unknown path {path.decode('latin-1')}", close), close)
        elif method == b"GET":
            if path == b"/models":
                data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "bench"}
                        for m in MODELS]
                self.send(json_response(200, {"object": "list", "data": data}, close), close)
            elif path.startswith(b"/models/"):
                mid = path[8:].decode("latin-1")
                self.send(json_response(200, {"id": mid, "object": "model",
                                              "created": 1700000000, "owned_by": "bench"},
                                        close), close)
            elif path in (b"/health", b"/healthz", b"/"):
                self.send(json_response(200, {"status": "ok"}, close), close)
            else:
                self.send(error(404, "not found", close), close)
        else:
            self.send(error(405, "method not allowed", close), close)

    def send(self, data: bytes, close: bool) -> None:
        if self.closed:
            return
        self.transport.write(data)
        if close:
            self.closed = True
            self.transport.close()

    def stream(self, frames: list[bytes], close: bool, delay: float = 0.0) -> None:
        if delay > 0:
            self.busy = True
            self.task = asyncio.ensure_future(self.stream_slowly(frames, close, delay))
            return
        # One write per SSE event so the client sees them as separate arrivals.
        w = self.transport.write
        w(head(200, b"text/event-stream", None, close))
        for frame in frames:
            w(frame)
        self.send(b"0\r\n\r\n", close)

    async def stream_slowly(self, frames: list[bytes], close: bool, delay: float) -> None:
        try:
            if self.closed:
                return
            self.transport.write(head(200, b"text/event-stream", None, close))
            for i, frame in enumerate(frames):
                if self.closed:
                    return
                if i:
                    await asyncio.sleep(delay)
                self.transport.write(frame)
            self.send(b"0\r\n\r\n", close)
        finally:
            self.busy = False
            if not self.closed and self.buf:
                self.process()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0)
    ap.add_argument("--embed-dim", type=int, default=16)
    args = ap.parse_args()
    Settings.chunks = args.chunks
    Settings.chunk_delay_s = args.chunk_delay_ms / 1000.0
    Settings.embedding = [round(0.001 * (i + 1), 6) for i in range(args.embed_dim)]
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a gateway dependency
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(Upstream, "127.0.0.1", args.port, backlog=4096, reuse_address=True))
    port = server.sockets[0].getsockname()[1]
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(f"listening {port}", flush=True)
    try:
        loop.run_until_complete(stop)
    finally:
        server.close()
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
