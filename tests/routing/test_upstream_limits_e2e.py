"""An upstream that floods the gateway with headers fails the request (502 after its retry)
instead of being answered as a 200, and the gateway's memory does not grow by what it sent:
a real `gateway serve` against a raw asyncio upstream."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.gateway_proc import GatewayProcess

ANSWER = (b'{"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m", '
          b'"choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, '
          b'"finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, '
          b'"total_tokens": 2}}')
SIZED = b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER),
                                                                           ANSWER)
_EVENTS = (b'data: {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", '
           b'"choices": [{"index": 0, "delta": {"role": "assistant", "content": "fine"}, '
           b'"finish_reason": "stop"}]}\n\ndata: [DONE]\n\n')
SSE = b"content-type: text/event-stream\r\ncontent-length: %d\r\n\r\n%s" % (len(_EVENTS),
                                                                           _EVENTS)
# What each upstream path answers: (head, endless filler after it)
HEADS = {
    "ok": (b"HTTP/1.1 200 OK\r\n" + SIZED, b""),
    "many": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(10_000))
             + SIZED, b""),
    "big": (b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-big%d: %s\r\n" % (i, b"a" * 65536)
                                              for i in range(16)) + SIZED, b""),
    # one header of up to 96 MiB (sent until the gateway hangs up)
    "endless": (b"HTTP/1.1 200 OK\r\nx-endless: ", b"a" * (1 << 20)),
}
ENDLESS_MIB = 96


class RawUpstream:
    """An HTTP/1.1 server on plain asyncio streams, in its own thread; counts requests."""

    def __init__(self) -> None:
        self.tries: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                kind = head.split(b" ")[1].split(b"/")[1].decode()
                self.tries[kind] += 1
                first, filler = HEADS[kind]
                if b'"stream":true' in body:  # the same head, then an SSE body
                    first = first.replace(SIZED, SSE)
                writer.write(first)
                await writer.drain()
                for _ in range(ENDLESS_MIB if filler else 0):
                    writer.write(filler)
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: RawUpstream
       ) -> Iterator[GatewayProcess]:
    models = "\n".join(f"""  - name: {kind}
    deployments:
      - model: openai/m
        api_base: http://127.0.0.1:{upstream.port}/{kind}/v1
        timeout_s: 20
        first_token_timeout_s: 20""" for kind in HEADS)
    config = f"""
models:
{models}
router: {{strategy: weighted, retries: 1, total_timeout_s: 60, cooldown_s: 1,
          failures_to_cooldown: 100}}
"""
    g = GatewayProcess(Path(tmp_path_factory.mktemp("upstream-limits")), config).start()
    yield g
    g.stop()


def peak_rss_mib(gw: GatewayProcess) -> float:
    assert gw.proc is not None
    for line in Path(f"/proc/{gw.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("kind", ["many", "big"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_flood_of_headers_fails_the_request_after_its_retry(
        gw: GatewayProcess, upstream: RawUpstream, kind: str, stream: bool) -> None:
    key = gw.create_key(name=f"flood-{kind}-{stream}")["key"]
    sdk = openai.OpenAI(api_key=key, base_url=gw.base_url, max_retries=0, timeout=30)
    before = upstream.tries[kind]
    with pytest.raises(openai.APIStatusError) as caught:
        got = sdk.chat.completions.create(model=kind, stream=stream,
                                          messages=[{"role": "user", "content": "hi"}])
        if stream:
            list(got)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"  # type: ignore[index]
    assert upstream.tries[kind] - before == 2  # a protocol error: tried again, then 502
    ok = sdk.chat.completions.create(model="ok", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == "fine"


def test_an_endless_header_costs_no_memory_and_fails_fast(
        gw: GatewayProcess, upstream: RawUpstream) -> None:
    key = gw.create_key(name="endless")["key"]
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "endless", "messages": [{"role": "user", "content": "hi"}]}
    warm = httpx.post(gw.base_url + "/chat/completions", json={**body, "model": "ok"},
                      headers=headers, timeout=60)
    assert warm.status_code == 200
    peak = peak_rss_mib(gw)
    started = time.monotonic()
    r = httpx.post(gw.base_url + "/chat/completions", json=body, headers=headers, timeout=60)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    assert time.monotonic() - started < 5
    r = httpx.post(gw.base_url + "/chat/completions", json={**body, "stream": True},
                   headers=headers, timeout=60)
    assert r.status_code == 502
    # the upstream offered 96 MiB of one header per try (2 tries per request)
    assert peak_rss_mib(gw) - peak < 16
