"""Reading a request body within the size limit (413 beyond it), from ASGI or Starlette."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.types import Receive, Scope

from gateway.errors import InvalidRequest, PayloadTooLarge


def _check_declared(declared: bytes | str | None, max_bytes: int) -> None:
    if declared is None:
        return
    try:
        size = int(declared)
    except ValueError:
        raise InvalidRequest("invalid Content-Length header") from None
    if size > max_bytes:
        raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")


async def _collect(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"the request body is larger than {max_bytes} bytes")
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_body(request: Request, max_bytes: int) -> bytes:
    _check_declared(request.headers.get("content-length"), max_bytes)
    return await _collect(request.stream(), max_bytes)


async def read_asgi_body(scope: Scope, receive: Receive, max_bytes: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            _check_declared(value, max_bytes)
            break

    async def messages() -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return

    return await _collect(messages(), max_bytes)
