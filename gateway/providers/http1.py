"""A small HTTP/1.1 client for the OpenAI-compatible upstreams: pooled keep-alive connections
on plain asyncio protocols, answers parsed by httptools (llhttp, as uvicorn uses).

Why not aiohttp: on one core, its client was most of what a bare proxy costs. Measured on the
development VM with `bench/floor_app.py`, the same bare proxy on aiohttp's client and on this
one: added p50 at 1 client 0.43 -> 0.25 ms, 4,500 -> 9,800 req/s at 64 clients (235 -> 108 us
of CPU per request).

What it does, and nothing more: `POST` of a bytes body to http or https (TLS with the system
CAs and SNI); answers with Content-Length, chunked, or read-until-close bodies; gzip and
deflate answers (we ask for identity); informational (1xx) answers skipped; keep-alive with
an idle expiry; one retry on a fresh connection when a reused one turns out closed before any
byte of the answer (the server dropped it while idle). No proxies, cookies or redirects.

Bounded in everything an upstream sends (each bound fails the try with UpstreamProtocolError,
retried like any protocol error, and drops the connection): at most `_MAX_HEADERS` header
fields and `_MAX_HEAD_BYTES` of status lines and headers per answer (1xx answers and trailers
included; as common servers allow requests: nginx 4 x 8 KiB, Apache 100 fields); at most
`_MAX_FRAMING_BYTES` in a row that carry no body byte (a chunk-size line or chunk extension
without end); at most `_MAX_BODY` of (inflated) body held; a stream line at most `_MAX_LINE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools

_MAX_BODY = 64 * 1024 * 1024  # a non-stream answer larger than this is refused
_MAX_HEADERS = 100
_MAX_HEAD_BYTES = 64 * 1024
_MAX_FRAMING_BYTES = 64 * 1024
_MAX_LINE = 4 * 1024 * 1024  # one SSE line (one chunk of a stream)
_PAUSE_AT = 1024 * 1024  # a stream's unread bytes: stop reading the socket above this
_RESUME_AT = 256 * 1024


class UpstreamConnectError(Exception):
    """No connection could be made (refused, unreachable, DNS, TLS handshake, time limit)."""


class UpstreamConnectTimeout(UpstreamConnectError):
    """No connection within `connect_timeout_s` (the peer never completed the handshake)."""


class UpstreamClosed(Exception):
    """The connection ended before the answer was complete."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered  # the status line and headers had arrived


class UpstreamProtocolError(Exception):
    """The upstream's bytes are not valid HTTP/1.1 (or the answer is too large)."""


@dataclass(frozen=True, slots=True)
class _Origin:
    key: str
    host: str
    port: int
    tls: bool
    path: str
    host_header: str


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _head_too_large() -> UpstreamProtocolError:
    return UpstreamProtocolError(f"upstream sent more than {_MAX_HEAD_BYTES} bytes of headers")


class UpstreamAnswer:
    """A whole (non-stream) answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def header(self, name: str) -> str | None:
        return _header(self.headers, name.lower().encode())


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; one exchange at a time (`busy`)."""

    def __init__(self, registry: set[_Connection]) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = True
        self.idle_since = 0.0
        self._registry = registry
        registry.add(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.buffer = bytearray()
        self.answered = False  # status line and headers parsed
        self.complete = False
        self.keep_alive = False
        self.got_bytes = False
        self.error: BaseException | None = None
        self._head_bytes = 0  # of the answer's head, as parsed (1xx heads, trailers too)
        self._unparsed_head = 0  # fed while a head stayed incomplete (httptools holds them)
        self._body_bytes = 0  # as received, before inflating
        self._framing = 0  # bytes in a row that carried no body byte
        self._until_close = False
        self._inflate: Any = None
        self._paused = False
        self.whole = False  # the caller waits for the whole answer: reading never pauses
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        self.got_bytes = True
        in_head = not self.answered
        body_before = self._body_bytes
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback raised: a bound it enforces
            self.fail(cause if isinstance(cause, UpstreamProtocolError)
                      else UpstreamProtocolError("upstream sent invalid HTTP"))
            return
        if in_head and not self.answered:
            self._unparsed_head += len(data)
            if self._unparsed_head > _MAX_HEAD_BYTES:
                self.fail(_head_too_large())
                return
        elif self.answered and not self.complete:
            self._framing = 0 if self._body_bytes > body_before else self._framing + len(data)
            if self._framing > _MAX_FRAMING_BYTES:
                self.fail(UpstreamProtocolError(f"upstream sent over {_MAX_FRAMING_BYTES} "
                                                "bytes of framing without a body byte"))
                return
        if not (self.complete or self.whole) and len(self.buffer) > _PAUSE_AT \
                and not self._paused:
            self._paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._registry.discard(self)
        if self.complete or self.error is not None:
            return
        if self.answered and self._until_close:
            self._finish_body()
            self.complete = True
            self._wake()
            return
        self.error = UpstreamClosed(
            "upstream connection dropped mid-answer" if self.answered
            else "upstream closed the connection without an answer", answered=self.answered)
        self._wake()

    # --- httptools callbacks -------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        self.headers.append((name, value))
        if len(self.headers) > _MAX_HEADERS:
            raise UpstreamProtocolError(f"upstream sent more than {_MAX_HEADERS} headers")
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise _head_too_large()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if 100 <= self.status < 200:  # e.g. 103 Early Hints: the answer follows it
            return
        self.keep_alive = self.parser.should_keep_alive()
        sized = False
        for name, value in self.headers:
            lower = name.lower()
            if lower in (b"content-length", b"transfer-encoding"):
                sized = True
            elif lower == b"content-encoding":
                coding = value.strip().lower()
                if coding in (b"gzip", b"x-gzip", b"deflate"):
                    self._inflate = zlib.decompressobj(47)  # gzip or zlib, by its header
        self._until_close = not sized and self.status not in (204, 304) and self.status >= 200
        self.answered = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._inflate is not None:
            try:  # never more than the body may hold (a small gzip can inflate a thousandfold)
                body = self._inflate.decompress(body, _MAX_BODY + 1 - len(self.buffer))
            except zlib.error:
                self.fail(UpstreamProtocolError("upstream sent a body that does not inflate"))
                return
            if self._inflate.unconsumed_tail:
                self.fail(UpstreamProtocolError("upstream answer is too large"))
                return
        self.buffer += body
        if len(self.buffer) > _MAX_BODY:
            self.fail(UpstreamProtocolError("upstream answer is too large"))
            return
        self._wake()

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            self.status = 0
            self.headers = []
            return
        self._finish_body()
        self.complete = True
        self._wake()

    # --- the exchange --------------------------------------------------------------------
    def _finish_body(self) -> None:
        if self._inflate is not None:
            with contextlib.suppress(zlib.error):
                self.buffer += self._inflate.flush()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        """End the exchange with `error` and drop the connection."""
        if self.error is None and not self.complete:
            self.error = error
        self._wake()
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait(self) -> None:
        """Until something new happened (headers, body bytes, the end, an error)."""
        if self.error is not None:
            raise self.error
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter
        if self.error is not None:
            raise self.error

    def read_on(self) -> None:
        """Read the socket again if it was paused (a line longer than the pause mark)."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def take(self, size: int | None = None) -> bytes:
        buffer = self.buffer
        if size is None or size >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        if self._paused and len(buffer) < _RESUME_AT and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data


class UpstreamStream:
    """A streamed answer: `status`, `header()`, then `readline()` until it returns b""."""

    def __init__(self, client: Http1Client, origin: _Origin, conn: _Connection) -> None:
        self._client = client
        self._origin = origin
        self._conn = conn
        self.status = conn.status
        self._scan = 0  # bytes of the buffer already searched for a newline

    def header(self, name: str) -> str | None:
        return _header(self._conn.headers, name.lower().encode())

    async def readline(self, deadline: float | None = None) -> bytes:
        """The next line with its b"\\n" (the rest at the end of the body; b"" after it).

        TimeoutError (and the connection dropped) when it has to wait past `deadline` (loop
        time); a line already received is returned without setting any timer."""
        conn = self._conn
        while True:
            at = conn.buffer.find(b"\n", self._scan)
            if at >= 0:
                self._scan = 0
                return conn.take(at + 1)
            if conn.complete:
                return conn.take()
            if len(conn.buffer) > _MAX_LINE:
                error = UpstreamProtocolError(f"upstream sent a stream line longer than "
                                              f"{_MAX_LINE} bytes")
                conn.fail(error)
                raise error
            conn.read_on()
            self._scan = len(conn.buffer)
            if deadline is None:
                await conn.wait()
                continue
            timer = asyncio.get_running_loop().call_at(deadline, conn.fail, TimeoutError())
            try:
                await conn.wait()
            finally:
                timer.cancel()

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes: what arrives until then or the end of the body."""
        conn = self._conn
        while len(conn.buffer) < limit and not conn.complete:
            await conn.wait()
        self._scan = 0
        return conn.take(limit)

    @property
    def at_eof(self) -> bool:
        return self._conn.complete and not self._conn.buffer

    def close(self) -> None:
        """Done with it: the connection goes back to the pool if the answer ended cleanly
        (what is left unread of a complete answer, such as the blank line after `[DONE]`,
        belongs to that answer and is dropped with it)."""
        conn = self._conn
        if conn.complete and conn.keep_alive and conn.error is None:
            self._client._release(self._origin, conn)
        else:
            conn.abort()


class Http1Client:
    def __init__(self, keepalive_s: float = 30.0, max_idle_per_origin: int = 256,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.keepalive_s = keepalive_s
        self.max_idle_per_origin = max_idle_per_origin
        self._idle: dict[str, list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._heads: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
        self._ssl = ssl_context  # None: the system CAs, made at the first https connection
        self._open: set[_Connection] = set()  # every connection not yet lost

    # --- public ---------------------------------------------------------------------------
    async def post(self, url: str, body: bytes, headers: dict[str, str], *,
                   timeout_s: float, connect_timeout_s: float) -> UpstreamAnswer:
        """Send, and read the whole answer within `timeout_s` (TimeoutError after it)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        origin, conn = await self._exchange(url, body, headers, connect_timeout_s, deadline,
                                            whole=True)
        answer = UpstreamAnswer(conn.status, conn.take(), conn.headers)
        if conn.keep_alive:
            self._release(origin, conn)
        else:
            conn.abort()
        return answer

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str], *,
                          connect_timeout_s: float) -> UpstreamStream:
        """Send, and return once the status line and headers are in (time limits: the
        caller's, around this and each read). Close the stream when done with it."""
        origin, conn = await self._exchange(url, body, headers, connect_timeout_s, None,
                                            whole=False)
        return UpstreamStream(self, origin, conn)

    async def _exchange(self, url: str, body: bytes, headers: dict[str, str],
                        connect_timeout_s: float, deadline: float | None, *, whole: bool
                        ) -> tuple[_Origin, _Connection]:
        """Send the request; return when the whole answer is in, or (not `whole`) its head.
        Sent once more, on a fresh connection, only when a reused one turns out closed
        before any byte of the answer."""
        loop = asyncio.get_running_loop()
        origin = self._origin(url)
        request = self._head(origin, headers) + b"%d\r\n\r\n" % len(body) + body
        for fresh in (False, True):
            conn, reused = await self._acquire(origin, fresh, connect_timeout_s, deadline)
            conn.whole = whole
            timer = None if deadline is None else loop.call_at(deadline, conn.fail,
                                                               TimeoutError())
            try:
                conn.transport.write(request)  # type: ignore[union-attr]
                while not (conn.complete if whole else conn.answered):
                    await conn.wait()
            except UpstreamClosed:
                if reused and not conn.got_bytes and not fresh:
                    continue  # the server had closed it while idle: once more, fresh
                raise
            except BaseException:
                conn.abort()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            return origin, conn
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()

    # --- connections ----------------------------------------------------------------------
    async def _acquire(self, origin: _Origin, fresh: bool, connect_timeout_s: float,
                       deadline: float | None) -> tuple[_Connection, bool]:
        if not fresh:
            idle = self._idle.get(origin.key)
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_s:
                    conn._reset()
                    conn.busy = True
                    return conn, True
                conn.abort()
        loop = asyncio.get_running_loop()
        limit = connect_timeout_s
        if deadline is not None:
            limit = min(limit, deadline - loop.time())
        try:
            async with asyncio.timeout(max(0.0, limit)):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self._open), origin.host, origin.port,
                    ssl=self._tls() if origin.tls else None,
                    server_hostname=origin.host if origin.tls else None)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise
            raise UpstreamConnectTimeout("cannot connect to upstream (time limit)") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to upstream ({type(exc).__name__})"
                                       ) from None
        return conn, False

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.busy = False
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(origin.key, [])
        idle.append(conn)
        if len(idle) > self.max_idle_per_origin:
            idle.pop(0).abort()

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    # --- requests -------------------------------------------------------------------------
    def _origin(self, url: str) -> _Origin:
        origin = self._origins.get(url)
        if origin is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamConnectError("upstream URL is not http(s)")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            default = port == (443 if tls else 80)
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            origin = _Origin(key=f"{parts.scheme}://{shown}:{port}", host=host, port=port,
                             tls=tls, path=path,
                             host_header=shown if default else f"{shown}:{port}")
            if len(self._origins) < 1024:
                self._origins[url] = origin
        return origin

    def _head(self, origin: _Origin, headers: dict[str, str]) -> bytes:
        """The request line and headers, up to the Content-Length value (cached)."""
        key = (origin.key + origin.path, tuple(headers.items()))
        head = self._heads.get(key)
        if head is None:
            lines = [f"POST {origin.path} HTTP/1.1", f"Host: {origin.host_header}",
                     "Accept-Encoding: identity"]
            for name, value in headers.items():
                if any(c in name or c in value for c in "\r\n\0"):
                    raise UpstreamConnectError("upstream request header has a line break")
                lines.append(f"{name}: {value}")
            head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
            if len(self._heads) < 1024:
                self._heads[key] = head
        return head
