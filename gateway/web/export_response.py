"""A streamed export whose failure after the first byte can be told from a complete file.

The status line (200) is sent before the rows, so a failure while rows are read (the
database went away, a row cannot be read) cannot change it. Instead the body ends in two
ways a client sees:

- a last line saying the file is incomplete: in JSONL an object `{"error": {"message",
  "type", "param", "code": "export_incomplete"}}` (an event never has an `error` field); in
  CSV a row whose first field is `#error` (never an event id) and whose second is that JSON;
- and the HTTP/1.1 chunked body is left without its terminating chunk: the server closes
  the connection, so curl exits with an error (18, "transfer closed with outstanding read
  data") and HTTP client libraries raise instead of returning a short file.

A failure before the first chunk is read is an ordinary error answer: the first chunk is
read before the status line is sent.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Mapping

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Send

log = logging.getLogger("gateway.audit.export")

INCOMPLETE = {"error": {"message": "the export failed before its end: this file is incomplete",
                        "type": "api_error", "param": None, "code": "export_incomplete"}}


def failure_line(fmt: str) -> bytes:
    """The last line of an export that failed after its first byte."""
    text = orjson.dumps(INCOMPLETE)
    if fmt != "csv":
        return text + b"\n"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["#error", text.decode()])
    return buf.getvalue().encode()


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


async def export_response(chunks: AsyncIterator[bytes], fmt: str, *, media_type: str,
                          headers: Mapping[str, str]) -> StreamingResponse:
    """Read the first chunk (its failure is the caller's error answer), then stream the rest."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    return ExportResponse(_chain(first, chunks), fmt, media_type=media_type, headers=headers)


class ExportResponse(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], fmt: str, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self.fmt = fmt

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        iterator = aiter(self.body_iterator)
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as exc:  # reading rows failed: say so, and leave the body unended
                log.error("audit export failed after its first byte",
                          extra={"reason": type(exc).__name__})
                await send({"type": "http.response.body", "body": failure_line(self.fmt),
                            "more_body": True})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
