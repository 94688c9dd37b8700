"""The floor: a bare Starlette proxy on aiohttp that only reads, forwards and answers.

Nothing of the gateway runs here (no auth, audit, limits, routing). What it adds over a direct
call is what any Python gateway on this stack pays before doing anything; run it pinned to
one core beside `bench/upstream.py` (commands in `bench/README.md`, "What costs what").
"""

from __future__ import annotations

import os

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001")
_session: aiohttp.ClientSession | None = None


async def chat(request: Request) -> Response:
    global _session
    if _session is None:
        _session = aiohttp.ClientSession()
    body = await request.body()
    async with _session.post(f"{UPSTREAM}/v1/chat/completions", data=body,
                             headers={"content-type": "application/json"}) as upstream:
        answer = await upstream.read()
    return Response(answer, media_type="application/json")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
