"""Bounds on the request line and headers, which uvicorn's httptools protocol does not have.

Without them one connection could send a header of any size (it is held in memory whole
until it ends) or any number of headers, and be served. Here a request head may have at most
`MAX_HEADERS` header fields and `MAX_HEAD_BYTES` of request target and headers together
(common servers allow about as much: nginx 4 x 8 KiB, Apache 100 fields); beyond either the
connection gets a 431 with an OpenAI-shaped error and is closed (after reading and dropping
what the client still sends for up to `LINGER_S`, so that it reads the answer rather than a
reset). A head that never ends is cut off the same way once it has passed `MAX_HEAD_BYTES`
(give or take one read). Such a request
never reaches the application, so like any request uvicorn cannot parse (its 400) it has no
audit event; it is logged, without any of its content.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import GatewayError

MAX_HEADERS = 100
MAX_HEAD_BYTES = 64 * 1024
LINGER_S = 2.0

log = logging.getLogger("gateway.http")


class HeadTooLarge(GatewayError):
    status_code, type, code = 431, "invalid_request_error", "request_header_fields_too_large"


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a head over its bounds."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `MAX_HEADERS` and `MAX_HEAD_BYTES` enforced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0  # parsed: target and header fields of the current request
        self._unparsed = 0  # fed while the current head stayed incomplete (httptools holds it)
        self._refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = self._unparsed = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._count(len(name) + len(value) + 4)
        if len(self.headers) > MAX_HEADERS:
            self._refused = True
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refused = True
            raise _Refused

    def data_received(self, data: bytes) -> None:
        if self._refused:  # answered 431: what still comes is dropped until the close
            return
        was_in_head = self._in_head
        super().data_received(data)
        if was_in_head and self._in_head and not self._refused:
            self._unparsed += len(data)
            if self._unparsed > MAX_HEAD_BYTES:
                self._refused = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a head it could not parse; ours to one over the bounds."""
        if not self._refused:
            super().send_400_response(msg)
            return
        if self.transport.is_closing():
            return
        log.warning("request head over its bounds: refused with 431",
                    extra={"max_headers": MAX_HEADERS, "max_head_bytes": MAX_HEAD_BYTES})
        body = HeadTooLarge(f"the request line and headers are over their bounds: at most "
                            f"{MAX_HEADERS} header fields and {MAX_HEAD_BYTES} bytes").to_json()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
