"""A real HTTP server that impersonates an LLM provider, for gateway tests and benchmarks.

It speaks enough of the OpenAI protocol (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``, and ``/v1/responses`` in ``tests/fakes/responses_api.py``)
and of Anthropic's Messages protocol (``/v1/messages``, also reachable as ``/messages``) for
SDKs and litellm to talk to it, answers deterministically (``"fake: " + <last user text>``),
records every request, and can inject faults.

Faults (request header ``x-fake-fault``, else the server's default fault), comma-separated:

* ``status:CODE`` / ``status:CODE:retry=SECS`` -- error response (429 gets ``Retry-After: 1``
  unless ``retry=`` says otherwise; ``retry=`` adds ``Retry-After`` to any status).
* ``delay:MS`` -- wait before the response headers.
* ``stall`` -- never answer (until the client gives up or the server stops).
* ``drop-after:N`` -- streams: send N SSE events then abort the TCP connection;
  non-streams: abort the connection without any response.
* ``chunk-delay:MS`` -- sleep between SSE events.
* ``no-usage`` -- streams: ignore ``stream_options.include_usage`` (send no usage chunk), as
  some OpenAI-compatible servers do.
* ``tool-on-auto`` -- call the first function tool even when ``tool_choice`` is ``auto``
  (chat and responses), as a model that decides to use it would.
* ``none`` (or empty) -- no fault; as a header it overrides the server's default fault.

Agent models (a model name containing ``agent``, either protocol) answer like a coding
agent's model, so a Claude-Code-shaped session can be played through both: a thinking block
first (Anthropic: only when ``thinking`` is enabled or adaptive, signed with ``sig-`` + a
digest of its text; OpenAI: always, as ``reasoning_content``), then, when tools are offered
and the last turn is not a tool result, a call of the first tool with ``{"query": <last user
text>}``, else the text ``"fake: " + <the tool result's text>``. Usage reports cache reads
for a ``system`` prompt seen before (Anthropic: ``cache_read_input_tokens``, else
``cache_creation_input_tokens`` when it carries ``cache_control``; OpenAI:
``prompt_tokens_details.cached_tokens``). The Anthropic side refuses what the real API
refuses: a thinking block whose signature does not match its text, ``cache_control`` on a
thinking block, and ``anthropic-beta`` flags starting with ``unknown-``. It also serves
``/v1/messages/count_tokens``.

Control endpoints (never faulted, never recorded): ``GET/DELETE /_fake/requests``,
``GET/PUT /_fake/fault``.

Usage in-process::

    up = FakeUpstream(name="a").start()
    ...  # point the gateway at up.url + "/v1"
    up.stop()

or as a process: ``python -m tests.fakes.upstream --port 9001 [--fault status:500] [--name x]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import hashlib
import re
import signal
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.responses_api import FakeResponsesApi

__all__ = ["FakeUpstream", "Fault", "parse_fault"]

FAULT_HEADER = "x-fake-fault"
NAME_HEADER = "x-fake-name"
DEFAULT_EMBEDDING_DIM = 8
DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "claude-3-5-haiku-20241022",
)

_JSON = "application/json"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
}
_WORD_RE = re.compile(r"\s*\S+")


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True, slots=True)
class Fault:
    status: int | None = None
    retry_after: str | None = None
    delay_ms: int = 0
    stall: bool = False
    drop_after: int | None = None
    chunk_delay_ms: int = 0
    no_usage: bool = False
    tools_on_auto: bool = False

    @property
    def active(self) -> bool:
        return bool(
            self.status is not None
            or self.delay_ms
            or self.stall
            or self.drop_after is not None
            or self.chunk_delay_ms
            or self.no_usage
            or self.tools_on_auto
        )


NO_FAULT = Fault()


def _nonneg_int(text: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"bad fault {spec!r}: {text!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"bad fault {spec!r}: negative value")
    return value


@functools.lru_cache(maxsize=256)
def parse_fault(spec: str | None) -> Fault:
    """Parse a fault spec such as ``"status:429:retry=2"`` or ``"delay:50,chunk-delay:10"``."""
    if spec is None:
        return NO_FAULT
    fields: dict[str, Any] = {}
    for raw in spec.split(","):
        part = raw.strip()
        if not part or part.lower() == "none":
            continue
        kind, _, arg = part.partition(":")
        kind = kind.strip().lower()
        if kind == "status":
            code_s, _, rest = arg.partition(":")
            code = _nonneg_int(code_s, part)
            if not 100 <= code <= 599:
                raise ValueError(f"bad fault {part!r}: status out of range")
            fields["status"] = code
            if rest:
                key, _, val = rest.partition("=")
                if key.strip().lower() != "retry" or not val.strip():
                    raise ValueError(f"bad fault {part!r}: expected status:CODE:retry=N")
                fields["retry_after"] = val.strip()
            elif code == 429:
                fields["retry_after"] = "1"
        elif kind == "delay":
            fields["delay_ms"] = _nonneg_int(arg, part)
        elif kind == "stall":
            fields["stall"] = True
        elif kind == "no-usage":
            fields["no_usage"] = True
        elif kind == "tool-on-auto":
            fields["tools_on_auto"] = True
        elif kind == "drop-after":
            fields["drop_after"] = _nonneg_int(arg, part)
        elif kind == "chunk-delay":
            fields["chunk_delay_ms"] = _nonneg_int(arg, part)
        else:
            raise ValueError(f"unknown fault {part!r}")
    return Fault(**fields) if fields else NO_FAULT


# --------------------------------------------------------------------------- helpers


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.Response(body=_dumps(obj), status=status, content_type=_JSON, headers=headers)


def _content_text(content: Any) -> str:
    """Text of an OpenAI/Anthropic message content (string or list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return ""


def _words(text: str) -> int:
    return len(text.split())


def _split_words(text: str) -> list[str]:
    """Split into word pieces, keeping whitespace, so that ``"".join(result) == text``."""
    parts = _WORD_RE.findall(text)
    tail = text[sum(map(len, parts)) :]
    if tail:
        if parts:
            parts[-1] += tail
        else:
            parts.append(tail)
    return parts or [""]


def _last_user_text(messages: list[Any]) -> str:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def _prompt_tokens(messages: list[Any], system: Any = None) -> int:
    total = 0
    if system:
        total += _words(_content_text(system)) + 1
    for msg in messages:
        if isinstance(msg, dict):
            total += _words(_content_text(msg.get("content"))) + 1
    return total


def _tool_arguments(tools: Any, name: str) -> str:
    """Arguments for a call of tool `name` that its schema accepts: each required property
    gets a stand-in value of its type (``"fake"``, 1, true, [], {})."""
    for tool in tools if isinstance(tools, list) else ():
        fn = (tool.get("function") or tool) if isinstance(tool, dict) else {}
        if fn.get("name") != name:
            continue
        params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {}
        props = params.get("properties") if isinstance(params.get("properties"), dict) else {}
        stand_in = {"string": "fake", "integer": 1, "number": 1, "boolean": True,
                    "array": [], "object": {}}
        args = {key: stand_in.get(str((props.get(key) or {}).get("type")), "fake")
                for key in params.get("required") or () if isinstance(key, str)}
        return _dumps(args).decode()
    return "{}"


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def _embedding(item: Any, dim: int) -> list[float]:
    """Deterministic unit vector derived from sha256 of the input."""
    seed = item.encode() if isinstance(item, str) else _dumps(item)
    raw = bytearray()
    counter = 0
    while len(raw) < 4 * dim:
        raw += hashlib.sha256(seed + counter.to_bytes(4, "little")).digest()
        counter += 1
    ints = struct.unpack(f"<{dim}I", bytes(raw[: 4 * dim]))
    vec = [i / 2147483647.5 - 1.0 for i in ints]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    # round-trip through float32 so that float and base64 encodings agree exactly
    return list(struct.unpack(f"<{dim}f", struct.pack(f"<{dim}f", *(v / norm for v in vec))))


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------- agents


def signature(thinking: str) -> str:
    """The fake's signature of a thinking text (the real one is opaque, and checked)."""
    return "sig-" + hashlib.sha256(thinking.encode()).hexdigest()[:32]


def _agent_turn(messages: list[Any]) -> tuple[str, str]:
    """("tool", the last tool result's text) or ("user", the last user text)."""
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") == "tool":
        return "tool", _content_text(last.get("content"))
    content = last.get("content")
    if isinstance(content, list):
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return "tool", " ".join(_content_text(b.get("content")) for b in results)
    return "user", _last_user_text(messages)


def _agent_plan(messages: list[Any], tools: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(the thinking text, the tool to call or None, its input / the answer text)."""
    kind, text = _agent_turn(messages)
    thinking = f"fake thinking about: {text}"
    if kind == "user" and isinstance(tools, list) and tools and isinstance(tools[0], dict):
        first = tools[0]
        name = (first.get("function") or {}).get("name") or first.get("name") or "tool"
        return thinking, str(name), {"query": text}
    return thinking, None, {"text": f"fake: {text}"}


class _AgentMixin:
    """The agent models' answers (see the module docstring)."""

    _seen_prompts: set[str]

    def _cache_split(self, system: Any, cacheable: bool) -> tuple[int, int]:
        """(tokens read from cache, tokens written to it) for a system prompt."""
        text = _content_text(system)
        if not text:
            return 0, 0
        tokens = _words(text) + 1
        if text in self._seen_prompts:
            return tokens, 0
        self._seen_prompts.add(text)
        return 0, tokens if cacheable else 0

    @staticmethod
    def _check_thinking(messages: list[Any], headers: dict[str, str]) -> None:
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            for block in content if isinstance(content, list) else ():
                if not isinstance(block, dict) or block.get("type") != "thinking":
                    continue
                if "cache_control" in block:
                    raise _BadRequest("thinking.cache_control: Extra inputs are not permitted")
                if block.get("signature") != signature(str(block.get("thinking"))):
                    raise _BadRequest("Invalid `signature` in `thinking` block")
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()]
        unknown = [b for b in betas if b.startswith("unknown-")]
        if unknown:
            raise _BadRequest(f"Unexpected value(s) `{','.join(unknown)}` for the "
                              "`anthropic-beta` header")

    async def _agent_messages(self, request: web.Request, body: dict[str, Any], fault: Fault):
        messages = body["messages"]
        self._check_thinking(messages, {k.lower(): v for k, v in request.headers.items()})
        system = body.get("system")
        cacheable = isinstance(system, list) and any(
            isinstance(b, dict) and b.get("cache_control") for b in system)
        read, written = self._cache_split(system, cacheable)
        thinking, tool, value = _agent_plan(messages, body.get("tools"))
        enabled = isinstance(body.get("thinking"), dict) and \
            body["thinking"].get("type") in ("enabled", "adaptive")
        blocks: list[dict[str, Any]] = []
        if enabled:
            blocks.append({"type": "thinking", "thinking": thinking,
                           "signature": signature(thinking)})
        if tool:
            blocks.append({"type": "tool_use", "id": _new_id("toolu_"), "name": tool,
                           "input": value})
        else:
            blocks.append({"type": "text", "text": value["text"]})
        usage = {"input_tokens": max(1, _prompt_tokens(messages, system) - read - written),
                 "cache_read_input_tokens": read, "cache_creation_input_tokens": written,
                 "output_tokens": sum(_words(_dumps(b).decode()) for b in blocks)}
        stop = "tool_use" if tool else "end_turn"
        mid = _new_id("msg_")
        if not body.get("stream"):
            return self._non_stream(request, fault, {
                "id": mid, "type": "message", "role": "assistant", "model": body["model"],
                "content": blocks, "stop_reason": stop, "stop_sequence": None,
                "usage": usage})
        ev = FakeUpstream._sse_event
        start_usage = {**usage, "output_tokens": 1}
        events = [ev("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": body["model"],
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": start_usage}})]
        for i, block in enumerate(blocks):
            kind = block["type"]
            empty = {"thinking": {"type": "thinking", "thinking": "", "signature": ""},
                     "text": {"type": "text", "text": ""},
                     "tool_use": {**block, "input": {}}}[kind]
            events.append(ev("content_block_start", {"type": "content_block_start",
                                                     "index": i, "content_block": empty}))
            if kind == "thinking":
                deltas = [{"type": "thinking_delta", "thinking": w}
                          for w in _split_words(block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "text":
                deltas = [{"type": "text_delta", "text": w} for w in _split_words(block["text"])]
            else:
                raw = _dumps(block["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": raw[j:j + 7]}
                          for j in range(0, len(raw), 7)]
            for delta in deltas:
                events.append(ev("content_block_delta", {"type": "content_block_delta",
                                                         "index": i, "delta": delta}))
            if i == 0:
                events.append(ev("ping", {"type": "ping"}))
            events.append(ev("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(ev("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]}}))
        events.append(ev("message_stop", {"type": "message_stop"}))
        return await self._stream(request, fault, events)  # type: ignore[attr-defined]

    async def _agent_chat(self, request: web.Request, body: dict[str, Any], fault: Fault):
        messages = body["messages"]
        system = " ".join(_content_text(m.get("content")) for m in messages
                          if isinstance(m, dict) and m.get("role") == "system")
        read, _ = self._cache_split(system, False)
        thinking, tool, value = _agent_plan(messages, body.get("tools"))
        prompt = _prompt_tokens(messages)
        call = {"id": _new_id("call_"), "type": "function",
                "function": {"name": tool, "arguments": _dumps(value).decode()}} if tool else None
        completion = _words(thinking) + (_words(_dumps(value).decode()) if tool
                                          else _words(value["text"]))
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": min(read, prompt)}}
        finish = "tool_calls" if tool else "stop"
        cid, created = _new_id("chatcmpl-"), int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "reasoning_content": thinking,
                                       "content": None if tool else value["text"]}
            if call:
                message["tool_calls"] = [call]
            return self._non_stream(request, fault, {  # type: ignore[attr-defined]
                "id": cid, "object": "chat.completion", "created": created,
                "model": body["model"], "usage": usage, "choices": [
                    {"index": 0, "message": message, "finish_reason": finish,
                     "logprobs": None}]})

        def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None,
                  **extra: Any) -> bytes:
            choices = [] if delta is None else [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
            return FakeUpstream._sse({"id": cid, "object": "chat.completion.chunk",
                                      "created": created, "model": body["model"],
                                      "choices": choices, **extra})

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"reasoning_content": w}) for w in _split_words(thinking)]
        if call:
            args = call["function"]["arguments"]
            events.append(chunk({"tool_calls": [{"index": 0, "id": call["id"],
                                                 "type": "function", "function": {
                                                     "name": tool, "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": 0, "function": {
                "arguments": args[j:j + 7]}}]}) for j in range(0, len(args), 7)]
        else:
            events += [chunk({"content": w}) for w in _split_words(value["text"])]
        events.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage") and not fault.no_usage:
            events.append(chunk(None, usage=usage))
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, fault, events)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- server


class FakeUpstream(_AgentMixin):
    """Fake OpenAI + Anthropic provider running in a background thread (or as a process)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        fault: str | None = None,
        name: str = "fake",
        models: list[str] | None = None,
        record: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.models = list(models) if models else list(DEFAULT_MODELS)
        self._fault_spec: str | None = None
        self._fault: Fault = NO_FAULT
        self.set_fault(fault)
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self.record = record  # False: keep nothing (long benchmarks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._created = int(time.time())
        self._responses_api = FakeResponsesApi(self)
        self._seen_prompts: set[str] = set()

    # ------------------------------------------------------------------ public API

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("FakeUpstream is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def fault(self) -> str | None:
        return self._fault_spec

    def set_fault(self, fault: str | None) -> None:
        parsed = parse_fault(fault)  # validates; raises ValueError
        # single reference assignments: safe to read from the server thread without a lock
        self._fault_spec = fault if parsed.active else None
        self._fault = parsed

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._astop())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"FakeUpstream-{self.name}", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            self._thread.join()
            self._thread = None
            raise error[0]
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ lifecycle

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.on_response_prepare.append(self._add_name_header)
        r = app.router
        r.add_get("/_fake/requests", self._get_requests)
        r.add_delete("/_fake/requests", self._delete_requests)
        r.add_get("/_fake/fault", self._get_fault)
        r.add_put("/_fake/fault", self._put_fault)
        r.add_post("/v1/chat/completions", self._wrap(self._chat))
        r.add_post("/chat/completions", self._wrap(self._chat))
        r.add_post("/v1/completions", self._wrap(self._completions))
        r.add_post("/completions", self._wrap(self._completions))
        r.add_post("/v1/embeddings", self._wrap(self._embeddings))
        r.add_post("/embeddings", self._wrap(self._embeddings))
        r.add_get("/v1/models", self._wrap(self._list_models))
        r.add_get("/v1/models/{model:.+}", self._wrap(self._get_model))
        r.add_post("/v1/responses", self._wrap(self._responses_api.handle))
        r.add_post("/responses", self._wrap(self._responses_api.handle))
        r.add_post("/v1/messages", self._wrap(self._messages))
        r.add_post("/messages", self._wrap(self._messages))
        r.add_post("/v1/messages/count_tokens", self._wrap(self._count_tokens))
        r.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _astart(self) -> None:
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.1,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        for addr in self._runner.addresses:
            if isinstance(addr, tuple):
                self.port = addr[1]
                break

    async def _astop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _add_name_header(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[NAME_HEADER] = self.name

    # ------------------------------------------------------------------ control endpoints

    async def _get_requests(self, request: web.Request) -> web.Response:
        return _json_response({"data": self.requests})

    async def _delete_requests(self, request: web.Request) -> web.Response:
        self.clear()
        return _json_response({"deleted": True})

    async def _get_fault(self, request: web.Request) -> web.Response:
        return _json_response({"fault": self._fault_spec})

    async def _put_fault(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            spec = body.get("fault") if isinstance(body, dict) else None
            if spec is not None and not isinstance(spec, str):
                raise ValueError("'fault' must be a string or null")
            self.set_fault(spec)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return _json_response(self._error_body(400, str(exc), anthropic=False), 400)
        return _json_response({"fault": self._fault_spec})

    # ------------------------------------------------------------------ request pipeline

    def _wrap(
        self, handler: Callable[[web.Request, Any, Fault], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        anthropic = handler in (self._messages, self._count_tokens)

        async def wrapped(request: web.Request) -> web.StreamResponse:
            headers, body, bad_json = await self._record(request)
            spec = headers.get(FAULT_HEADER)
            try:
                fault = self._fault if spec is None else parse_fault(spec)
            except ValueError as exc:
                return self._error(400, f"fake upstream: {exc}", anthropic)

            if fault.delay_ms:
                await asyncio.sleep(fault.delay_ms / 1000)
            if fault.stall:
                await self._stall(request)
            if fault.status is not None:
                return self._error(fault.status, None, anthropic, fault.retry_after)
            if bad_json:
                return self._error(400, "request body is not valid JSON", anthropic)
            if request.method == "POST" and not isinstance(body, dict):
                return self._error(400, "request body must be a JSON object", anthropic)
            try:
                return await handler(request, body, fault)
            except _BadRequest as exc:
                return self._error(400, str(exc), anthropic)

        return wrapped

    async def _record(self, request: web.Request) -> tuple[dict[str, str], Any, bool]:
        raw = await request.read() if request.can_read_body else b""
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                bad_json = True
                body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not self.record:
            return headers, body, bad_json
        record = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "headers": headers,
            "body": body,
            "time": time.time(),
        }
        with self._lock:
            self._requests.append(record)
        return headers, body, bad_json

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        anthropic = request.path.rstrip("/").endswith("/messages")
        msg = f"fake upstream: no route for {request.method} {request.path}"
        return self._error(404, msg, anthropic)

    async def _stall(self, request: web.Request) -> None:
        # Hold the connection until the client disconnects (handler gets cancelled) or the
        # server stops; then drop it without an answer.
        assert self._stopping is not None
        await self._stopping.wait()
        self._abort(request)
        raise asyncio.CancelledError

    @staticmethod
    def _abort(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    # ------------------------------------------------------------------ errors

    _OPENAI_ERROR_TYPES = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("permission_error", None),
        404: ("invalid_request_error", "model_not_found"),
        408: ("timeout", None),
        429: ("rate_limit_error", "rate_limit_exceeded"),
    }
    _ANTHROPIC_ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def _error_body(self, status: int, message: str | None, anthropic: bool) -> dict[str, Any]:
        message = message or f"fake upstream {self.name!r}: injected HTTP {status}"
        if anthropic:
            etype = self._ANTHROPIC_ERROR_TYPES.get(status, "api_error")
            return {"type": "error", "error": {"type": etype, "message": message}}
        etype, code = self._OPENAI_ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def _error(
        self,
        status: int,
        message: str | None,
        anthropic: bool,
        retry_after: str | None = None,
    ) -> web.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return _json_response(self._error_body(status, message, anthropic), status, headers)

    # ------------------------------------------------------------------ streaming

    async def _stream(
        self, request: web.Request, fault: Fault, events: list[bytes]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers=_SSE_HEADERS)
        await resp.prepare(request)
        drop_after = fault.drop_after
        delay = fault.chunk_delay_ms / 1000
        if drop_after is None and not delay:
            # fast path: one write for the whole stream
            await resp.write(b"".join(events))
            await resp.write_eof()
            return resp
        for i, event in enumerate(events):
            if drop_after is not None and i >= drop_after:
                break
            if delay and i:
                await asyncio.sleep(delay)
            await resp.write(event)
        if drop_after is not None:
            # let the bytes leave the socket buffer, then cut the connection mid-stream
            await asyncio.sleep(0.02)
            self._abort(request)
            raise asyncio.CancelledError
        await resp.write_eof()
        return resp

    @staticmethod
    def _sse(obj: Any) -> bytes:
        return b"data: " + _dumps(obj) + b"\n\n"

    @staticmethod
    def _sse_event(name: str, obj: Any) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(obj) + b"\n\n"

    def _non_stream(self, request: web.Request, fault: Fault, obj: Any) -> web.StreamResponse:
        if fault.drop_after is not None:
            self._abort(request)
            raise asyncio.CancelledError
        return _json_response(obj)

    # ------------------------------------------------------------------ OpenAI: chat

    @staticmethod
    def _forced_tool(body: dict[str, Any], on_auto: bool = False) -> str | None:
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not tools or not isinstance(tools, list):
            return None
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name") or choice.get("name")
            if name:
                return str(name)
        elif choice != "required" and not (on_auto and choice in (None, "auto")):
            return None
        first = tools[0] if isinstance(tools[0], dict) else {}
        return str((first.get("function") or {}).get("name") or first.get("name") or "tool")

    async def _chat(self, request: web.Request, body: dict[str, Any], fault: Fault):
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("'messages' must be a list")
        if "agent" in str(body.get("model")):
            return await self._agent_chat(request, body, fault)
        model = body.get("model") or "fake-model"
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise _BadRequest("'n' must be a positive integer")
        reply = "fake: " + _last_user_text(messages)
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        # on `auto`, a tool only for a user's question (not again after its result)
        tool = self._forced_tool(body, fault.tools_on_auto and last.get("role") == "user")
        arguments = _tool_arguments(body.get("tools"), tool) if tool else "{}"
        prompt_tokens = _prompt_tokens(messages)
        per_choice = 1 if tool else _words(reply)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": per_choice * n,
            "total_tokens": prompt_tokens + per_choice * n,
        }
        cid = _new_id("chatcmpl-")
        created = int(time.time())
        finish = "tool_calls" if tool else "stop"
        call_ids = [_new_id("call_") for _ in range(n)] if tool else []

        if not body.get("stream"):
            choices = []
            for i in range(n):
                if tool:
                    message: dict[str, Any] = {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": call_ids[i],
                                "type": "function",
                                "function": {"name": tool, "arguments": arguments},
                            }
                        ],
                    }
                else:
                    message = {"role": "assistant", "content": reply, "refusal": None}
                choices.append(
                    {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                )
            obj = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
                "usage": usage,
            }
            return self._non_stream(request, fault, obj)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            obj.update(extra)
            return self._sse(obj)

        def ch(i: int, delta: dict[str, Any], finish_reason: str | None = None):
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

        events = [chunk([ch(i, {"role": "assistant", "content": ""}) for i in range(n)])]
        if tool:
            for i in range(n):
                call = {
                    "index": 0,
                    "id": call_ids[i],
                    "type": "function",
                    "function": {"name": tool, "arguments": ""},
                }
                events.append(chunk([ch(i, {"tool_calls": [call]})]))
                args = {"index": 0, "function": {"arguments": arguments}}
                events.append(chunk([ch(i, {"tool_calls": [args]})]))
        else:
            for word in _split_words(reply):
                events.append(chunk([ch(i, {"content": word}) for i in range(n)]))
        events.append(chunk([ch(i, {}, finish) for i in range(n)]))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage and not fault.no_usage:
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, fault, events)

    # ------------------------------------------------------------------ OpenAI: completions

    async def _completions(self, request: web.Request, body: dict[str, Any], fault: Fault):
        prompt = body.get("prompt", "")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and all(isinstance(p, int) for p in prompt):
            prompts = [" ".join(map(str, prompt))]
        elif isinstance(prompt, list):
            prompts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompt]
        else:
            raise _BadRequest("'prompt' must be a string or a list")
        prompts = prompts or [""]
        model = body.get("model") or "fake-model"
        n = body.get("n") or 1
        if not isinstance(n, int) or n < 1:
            raise _BadRequest("'n' must be a positive integer")
        replies = ["fake: " + p for p in prompts for _ in range(n)]
        prompt_tokens = sum(_words(p) for p in prompts)
        completion_tokens = sum(_words(r) for r in replies)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid = _new_id("cmpl-")
        created = int(time.time())

        if not body.get("stream"):
            obj = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": i, "text": r, "logprobs": None, "finish_reason": "stop"}
                    for i, r in enumerate(replies)
                ],
                "usage": usage,
            }
            return self._non_stream(request, fault, obj)

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj = {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": choices,
            }
            obj.update(extra)
            return self._sse(obj)

        events = []
        for i, r in enumerate(replies):
            for word in _split_words(r):
                events.append(
                    chunk([{"index": i, "text": word, "logprobs": None, "finish_reason": None}])
                )
        events.append(
            chunk(
                [
                    {"index": i, "text": "", "logprobs": None, "finish_reason": "stop"}
                    for i in range(len(replies))
                ]
            )
        )
        if (body.get("stream_options") or {}).get("include_usage") and not fault.no_usage:
            events.append(chunk([], usage=usage))
        events.append(b"data: [DONE]\n\n")
        return await self._stream(request, fault, events)

    # ------------------------------------------------------------------ OpenAI: embeddings

    async def _embeddings(self, request: web.Request, body: dict[str, Any], fault: Fault):
        inp = body.get("input")
        if isinstance(inp, str):
            items: list[Any] = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            items = [inp]  # a single token array
        elif isinstance(inp, list) and inp:
            items = inp
        else:
            raise _BadRequest("'input' must be a non-empty string or list")
        dim = body.get("dimensions") or DEFAULT_EMBEDDING_DIM
        if not isinstance(dim, int) or dim < 1:
            raise _BadRequest("'dimensions' must be a positive integer")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _BadRequest("'encoding_format' must be 'float' or 'base64'")
        data = []
        tokens = 0
        for i, item in enumerate(items):
            vec = _embedding(item, dim)
            tokens += len(item) if isinstance(item, list) else _words(str(item))
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode("ascii")
            data.append({"object": "embedding", "index": i, "embedding": emb})
        obj = {
            "object": "list",
            "data": data,
            "model": body.get("model") or "fake-embedding",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return self._non_stream(request, fault, obj)

    # ------------------------------------------------------------------ OpenAI: models

    def _model_obj(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": self._created, "owned_by": self.name}

    async def _list_models(self, request: web.Request, body: Any, fault: Fault):
        obj = {"object": "list", "data": [self._model_obj(m) for m in self.models]}
        return self._non_stream(request, fault, obj)

    async def _get_model(self, request: web.Request, body: Any, fault: Fault):
        model = request.match_info["model"]
        if model not in self.models:
            return self._error(404, f"The model '{model}' does not exist", anthropic=False)
        return self._non_stream(request, fault, self._model_obj(model))

    # ------------------------------------------------------------------ Anthropic: messages

    @staticmethod
    def _anthropic_forced_tool(body: dict[str, Any]) -> str | None:
        tools = body.get("tools")
        choice = body.get("tool_choice")
        if not tools or not isinstance(tools, list) or not isinstance(choice, dict):
            return None
        if choice.get("type") == "tool" and choice.get("name"):
            return str(choice["name"])
        if choice.get("type") == "any":
            first = tools[0] if isinstance(tools[0], dict) else {}
            return str(first.get("name") or "tool")
        return None

    async def _count_tokens(self, request: web.Request, body: dict[str, Any], fault: Fault):
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("messages: Field required")
        return self._non_stream(request, fault,
                                {"input_tokens": _prompt_tokens(messages, body.get("system"))})

    async def _messages(self, request: web.Request, body: dict[str, Any], fault: Fault):
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise _BadRequest("messages: Field required")
        if "agent" in str(body.get("model")):
            return await self._agent_messages(request, body, fault)
        model = body.get("model") or "fake-model"
        reply = "fake: " + _last_user_text(messages)
        tool = self._anthropic_forced_tool(body)
        input_tokens = _prompt_tokens(messages, body.get("system"))
        output_tokens = 1 if tool else _words(reply)
        stop_reason = "tool_use" if tool else "end_turn"
        mid = _new_id("msg_")
        tool_id = _new_id("toolu_") if tool else ""

        if not body.get("stream"):
            if tool:
                content = [{"type": "tool_use", "id": tool_id, "name": tool, "input": {}}]
            else:
                content = [{"type": "text", "text": reply}]
            obj = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            }
            return self._non_stream(request, fault, obj)

        ev = self._sse_event
        events = [
            ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                    },
                },
            ),
        ]
        if tool:
            block = {"type": "tool_use", "id": tool_id, "name": tool, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": "{}"}
            events.append(
                ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
            )
            events.append(ev("ping", {"type": "ping"}))
            events.append(
                ev(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            )
        else:
            block = {"type": "text", "text": ""}
            events.append(
                ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": block},
                )
            )
            events.append(ev("ping", {"type": "ping"}))
            for word in _split_words(reply):
                delta = {"type": "text_delta", "text": word}
                events.append(
                    ev(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                    )
                )
        events.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events.append(
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": output_tokens},
                },
            )
        )
        events.append(ev("message_stop", {"type": "message_stop"}))
        return await self._stream(request, fault, events)


# --------------------------------------------------------------------------- CLI


async def _serve_forever(up: FakeUpstream) -> None:
    await up._astart()
    print(f"listening on {up.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await up._astop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", default=None, help="default fault, e.g. status:500")
    parser.add_argument("--name", default="fake", help="value of the x-fake-name header")
    parser.add_argument("--no-record", action="store_true", help="do not record requests")
    args = parser.parse_args(argv)
    up = FakeUpstream(
        host=args.host,
        port=args.port,
        fault=args.fault,
        name=args.name,
        record=not args.no_record,
    )
    asyncio.run(_serve_forever(up))


if __name__ == "__main__":
    main()
