"""The floor: a bare Starlette proxy that only reads, forwards and answers.

Nothing of the gateway runs here (no auth, audit, limits, routing). What it adds over a direct
call is what any Python gateway on this stack pays before doing anything; run it pinned to
one core beside `bench/upstream.py` (commands in `bench/README.md`, "What costs what").

`FLOOR_CLIENT` picks the upstream client: `aiohttp` (the default: the floor the issues quote)
or `http1`, the gateway's own client (`gateway/providers/http1.py`).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001")
CLIENT = os.environ.get("FLOOR_CLIENT", "aiohttp")
URL = f"{UPSTREAM}/v1/chat/completions"
HEADERS = {"content-type": "application/json"}
_client: object | None = None


async def via_aiohttp(body: bytes) -> bytes:
    import aiohttp

    global _client
    if _client is None:
        _client = aiohttp.ClientSession()
    async with _client.post(URL, data=body, headers=HEADERS) as upstream:  # type: ignore[attr-defined]
        return await upstream.read()


async def via_http1(body: bytes) -> bytes:
    from gateway.providers.http1 import Http1Client

    global _client
    if _client is None:
        _client = Http1Client()
    answer = await _client.post(URL, body, HEADERS, timeout_s=30,  # type: ignore[attr-defined]
                                connect_timeout_s=5)
    return answer.body


_FORWARD = {"aiohttp": via_aiohttp, "http1": via_http1}[CLIENT]


async def chat(request: Request) -> Response:
    return Response(await _FORWARD(await request.body()), media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
