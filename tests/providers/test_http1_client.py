"""The HTTP/1.1 client of the OpenAI-compatible provider against real sockets: raw asyncio
servers that answer the way upstreams (and the things in front of them) do, including badly."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.providers.http1 import (
    Http1Client,
    UpstreamClosed,
    UpstreamConnectError,
    UpstreamProtocolError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]
JSON = {"content-type": "application/json"}


class Server:
    """A loopback server running `handler` for each connection; counts connections."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def on_connection(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer, self)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1/chat/completions"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         server: Server) -> None:
    while True:
        body = await server.read_request(reader)
        writer.write(answer(b'{"echo": %d}' % len(body)))
        await writer.drain()


async def test_keep_alive_reuses_one_connection() -> None:
    client = Http1Client()
    async with Server(keep_answering) as server:
        for n in (3, 5, 7):
            got = await client.post(server.url, b"x" * n, JSON, timeout_s=5,
                                    connect_timeout_s=5)
            assert (got.status, got.body) == (200, b'{"echo": %d}' % n)
        assert server.connections == 1
        head = server.requests[0].split(b"\r\n\r\n")[0].decode()
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.url.split(':')[2].split('/')[0]}" in head
        assert "content-type: application/json" in head and "Content-Length: 3" in head
    await client.aclose()


async def test_chunked_gzip_and_read_until_close_bodies() -> None:
    payload = b'{"choices": []}' * 50

    async def odd_framing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          server: Server) -> None:
        await server.read_request(reader)
        packed = gzip.compress(payload)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                     b"content-encoding: gzip\r\n\r\n")
        for i in range(0, len(packed), 7):  # many small chunks, sent apart
            part = packed[i:i + 7]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await server.read_request(reader)  # then a body without length: read to the close
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + payload)
        await writer.drain()

    client = Http1Client()
    async with Server(odd_framing) as server:
        first = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        second = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert first.body == payload and second.body == payload
        assert first.header("Content-Encoding") == "gzip"
        assert server.connections == 1
    await client.aclose()


async def test_a_connection_the_server_dropped_while_idle_is_replaced_once() -> None:
    async def one_answer_per_connection(reader: asyncio.StreamReader,
                                        writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer(b"{}"))  # says nothing of closing, then closes (idle timeout)
        await writer.drain()

    async def close_on_the_second_request(reader: asyncio.StreamReader,
                                          writer: asyncio.StreamWriter, server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await server.read_request(reader)  # the idle close crossed this request on the wire

    client = Http1Client()
    async with Server(one_answer_per_connection) as server:
        for _ in range(3):
            got = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
            assert got.status == 200
            await asyncio.sleep(0.05)  # the close reaches us while the connection is idle
        assert server.connections == 3 and len(server.requests) == 3
    async with Server(close_on_the_second_request) as server:
        for _ in range(2):
            got = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
            assert got.status == 200
        # the second request went out on the reused connection, was dropped unanswered, and
        # was sent once more on a fresh one
        assert server.connections == 2 and len(server.requests) == 3
    await client.aclose()


async def test_a_drop_before_or_during_the_answer_is_an_error_and_never_resent() -> None:
    async def drop_unanswered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              server: Server) -> None:
        await server.read_request(reader)

    async def drop_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial\":")
        await writer.drain()

    client = Http1Client()
    async with Server(drop_unanswered) as server:
        with pytest.raises(UpstreamClosed) as unanswered:
            await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert not unanswered.value.answered and len(server.requests) == 1
    async with Server(drop_mid_body) as server:
        with pytest.raises(UpstreamClosed) as mid_body:
            await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert mid_body.value.answered and len(server.requests) == 1
    await client.aclose()


async def test_time_limit_garbage_and_refused_connections() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           server: Server) -> None:
        await server.read_request(reader)
        await asyncio.sleep(30)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    client = Http1Client()
    async with Server(never_answer) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await client.post(server.url, b"{}", JSON, timeout_s=0.3, connect_timeout_s=5)
        assert asyncio.get_running_loop().time() - started < 2
    async with Server(garbage) as server:
        with pytest.raises(UpstreamProtocolError):
            await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        url = server.url
    with pytest.raises(UpstreamConnectError):  # nobody listens there any more
        await client.post(url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
    with pytest.raises(UpstreamConnectError):
        await client.post(url, b"{}", {"authorization": "Bearer a\r\nx-evil: 1"},
                          timeout_s=5, connect_timeout_s=5)
    assert not client._open  # nothing left open behind the failures
    await client.aclose()


async def test_a_stream_is_read_line_by_line_and_its_connection_reused() -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  server: Server) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            data = b"".join(events)
            for i in range(0, len(data), 5):  # lines split across chunks and packets
                part = data[i:i + 5]
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    client = Http1Client()
    async with Server(sse) as server:
        for _ in range(2):
            stream = await client.open_stream(server.url, b"{}", JSON, connect_timeout_s=5)
            assert stream.status == 200
            assert stream.header("content-type") == "text/event-stream"
            lines = []
            while line := await stream.readline():
                lines.append(line)
            assert b"".join(lines) == b"".join(events)
            assert stream.at_eof
            stream.close()
        assert server.connections == 1
    await client.aclose()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is missing")
async def test_https_checks_the_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with Server(keep_answering, tls=tls) as server:
        trusting = Http1Client(ssl_context=ssl.create_default_context(cafile=str(cert)))
        got = await trusting.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert (got.status, got.body) == (200, b'{"echo": 2}')
        await trusting.aclose()
        default = Http1Client()  # the system CAs do not know this certificate
        with pytest.raises(UpstreamConnectError):
            await default.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        await default.aclose()


async def test_a_stalled_stream_times_out_at_the_deadline() -> None:
    async def two_lines_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                   server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        writer.write(b"12\r\ndata: 1\n\ndata: 2\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    client = Http1Client()
    async with Server(two_lines_then_stall) as server:
        stream = await client.open_stream(server.url, b"{}", JSON, connect_timeout_s=5)
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.1)  # both lines are in: reading them needs no time at all
        assert await stream.readline(loop.time()) == b"data: 1\n"
        assert await stream.readline(loop.time()) == b"\n"
        assert await stream.readline(loop.time()) == b"data: 2\n"
        assert await stream.readline(loop.time()) == b"\n"
        started = loop.time()
        with pytest.raises(TimeoutError):
            await stream.readline(started + 0.2)
        assert 0.15 < loop.time() - started < 2
        stream.close()
        await asyncio.sleep(0.05)  # connection_lost comes on the next loop turns
    assert not client._open
    await client.aclose()


async def test_an_informational_answer_is_skipped() -> None:
    async def early_hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer(b'{"ok": true}'))
        await writer.drain()
        await asyncio.sleep(1)

    client = Http1Client()
    async with Server(early_hints) as server:
        got = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert (got.status, got.body) == (200, b'{"ok": true}')
        assert got.header("link") is None
    await client.aclose()


async def test_a_stream_left_at_its_done_line_gives_its_connection_back() -> None:
    async def sse_in_one_write(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               server: Server) -> None:
        while True:
            await server.read_request(reader)
            data = b'data: {"n": 1}\n\ndata: [DONE]\n\n'
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                         % (len(data), data))
            await writer.drain()

    client = Http1Client()
    async with Server(sse_in_one_write) as server:
        for _ in range(3):
            stream = await client.open_stream(server.url, b"{}", JSON, connect_timeout_s=5)
            while await stream.readline() != b"data: [DONE]\n":  # as the provider reads
                pass
            stream.close()  # the blank line after [DONE] is still unread
        assert server.connections == 1
    await client.aclose()


# --- bounds on what an upstream may send -------------------------------------------------

def _head_of(status: bytes, headers: list[bytes], tail: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + tail


async def _send_endless(writer: asyncio.StreamWriter, first: bytes, piece: bytes = b"",
                        most: int = 64 << 20) -> None:
    """`first`, then `piece` again and again (`most` bytes in all) or until the client hangs
    up; then nothing more."""
    writer.write(first)
    await writer.drain()
    sent = len(first)
    while piece and sent < most:
        writer.write(piece)
        sent += len(piece)
        await writer.drain()


def _bounded(name: str, send: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      server: Server) -> None:
        await server.read_request(reader)
        await send(writer)
        await asyncio.sleep(5)
    handler.__name__ = name
    return handler


_BODY = b'{"ok": true}'
_SIZED = b"content-length: %d\r\n\r\n%s" % (len(_BODY), _BODY)
_CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
_HOSTILE_ANSWERS = {
    # 10,000 small headers, then a good body
    "too many headers": lambda w: _send_endless(
        w, _head_of(b"200 OK", [b"x-h%d: v" % i for i in range(10_000)], _SIZED)),
    # one header of 1 MiB, then a good body
    "one huge header": lambda w: _send_endless(
        w, _head_of(b"200 OK", [b"x-big: " + b"a" * (1 << 20)], _SIZED)),
    # a header value that never ends
    "endless header": lambda w: _send_endless(
        w, b"HTTP/1.1 200 OK\r\nx-big: ", b"a" * 65536),
    # a status line that never ends
    "endless status line": lambda w: _send_endless(w, b"HTTP/1.1 200 ", b"O" * 65536),
    # informational answers without end, each one small
    "endless 1xx answers": lambda w: _send_endless(
        w, b"", b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" * 256),
    # a chunk extension that never ends
    "endless chunk extension": lambda w: _send_endless(w, _CHUNKED + b"5;ext=", b"e" * 65536),
    # a chunk-size line of leading zeros that never ends
    "endless chunk size": lambda w: _send_endless(w, _CHUNKED, b"0" * 65536),
    # chunked trailers without end, after a complete body
    "endless trailers": lambda w: _send_endless(
        w, _CHUNKED + b"%x\r\n%s\r\n0\r\n" % (len(_BODY), _BODY),
        b"".join(b"x-t%d: v\r\n" % i for i in range(2_000))),
    # one trailer value that never ends
    "endless trailer": lambda w: _send_endless(
        w, _CHUNKED + b"%x\r\n%s\r\n0\r\nx-t: " % (len(_BODY), _BODY), b"v" * 65536),
    # 200 MiB of zeros, gzipped to about 900 KiB
    "gzip bomb": lambda w: _send_endless(
        w, b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
        % (len(bomb := gzip.compress(b"\0" * (200 << 20), 1)), bomb)),
}


@pytest.mark.parametrize("case", list(_HOSTILE_ANSWERS))
async def test_a_hostile_answer_fails_the_try_as_a_protocol_error(case: str) -> None:
    client = Http1Client()
    async with Server(_bounded(case, _HOSTILE_ANSWERS[case])) as server:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamProtocolError) as caught:
            await client.post(server.url, b"{}", JSON, timeout_s=20, connect_timeout_s=5)
        assert loop.time() - started < 5
        with pytest.raises(UpstreamProtocolError):
            stream = await client.open_stream(server.url, b"{}", JSON, connect_timeout_s=5)
            while await stream.readline():
                pass
    assert "upstream" in str(caught.value)
    await asyncio.sleep(0.05)
    assert not client._open  # the connection was dropped, never pooled
    await client.aclose()


async def test_the_bounds_leave_room_for_ordinary_answers() -> None:
    headers = [b"x-h%d: %s" % (i, b"v" * 500) for i in range(90)]  # 90 fields, 45 KB

    async def generous(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       server: Server) -> None:
        while True:
            await server.read_request(reader)
            writer.write(_head_of(b"200 OK", headers, _SIZED))
            await writer.drain()

    client = Http1Client()
    async with Server(generous) as server:
        got = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert got.body == _BODY and got.header("x-h89") == "v" * 500
    await client.aclose()


@pytest.mark.parametrize("line_mib,fails", [(3, False), (5, True)])
async def test_a_stream_line_is_read_up_to_its_bound(line_mib: int, fails: bool) -> None:
    line = b"data: " + b"x" * (line_mib << 20) + b"\n\n"

    async def long_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        server: Server) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        for i in range(0, len(line), 65536):
            part = line[i:i + 65536]
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    client = Http1Client()
    async with Server(long_line) as server:
        stream = await client.open_stream(server.url, b"{}", JSON, connect_timeout_s=5)
        deadline = asyncio.get_running_loop().time() + 5
        if fails:
            with pytest.raises(UpstreamProtocolError, match="line longer"):
                await stream.readline(deadline)
        else:
            assert await stream.readline(deadline) == line[:-1]
        stream.close()
    await client.aclose()


async def test_a_whole_answer_larger_than_the_stream_pause_mark_is_read() -> None:
    body = b'{"data": "%s"}' % (b"x" * (3 << 20))  # e.g. the embeddings of a large batch

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  server: Server) -> None:
        await server.read_request(reader)
        writer.write(answer(body))
        await writer.drain()
        await asyncio.sleep(5)

    client = Http1Client()
    async with Server(big) as server:
        got = await client.post(server.url, b"{}", JSON, timeout_s=5, connect_timeout_s=5)
        assert got.body == body
    await client.aclose()
