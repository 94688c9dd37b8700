"""The UI's in-process client: a page calls this app's JSON API as the signed-in key (an
ASGI call into the same app), so the API's role checks, team scoping, validation and change
audit apply to what the UI does, unchanged."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.types import Message

from gateway.ui.sessions import Session, sessions


class ApiError(Exception):
    def __init__(self, status: int, payload: Any) -> None:
        err = payload.get("error") if isinstance(payload, dict) else None
        self.status = status
        message = err.get("message") if isinstance(err, dict) else None
        self.message: str = str(message) if message else f"request failed ({status})"
        super().__init__(self.message)


def session_key_header(session: Session) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {session.key}".encode())


async def api(request: Request, method: str, path: str, *, query: Any = None,
              body: Any = None) -> Any:
    """Call this app's JSON API as the signed-in key; return the JSON or raise ApiError."""
    session: Session = request.scope["ui_session"]
    data = orjson.dumps(body) if body is not None else b""
    qs = urlencode(query or [], doseq=True)
    headers = [session_key_header(session),
               (b"host", request.headers.get("host", "localhost").encode()),
               (b"x-request-id", str(request.state.request_id).encode())]
    if body is not None:
        headers += [(b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode())]
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": request.url.scheme, "path": path, "raw_path": path.encode(),
        "query_string": qs.encode(), "root_path": "", "headers": headers,
        "client": request.scope.get("client"), "server": request.scope.get("server"),
        "state": dict(request.scope.get("state") or {}),
    }
    sent = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    status = 500
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await request.app(scope, receive, send)
    raw = b"".join(chunks)
    payload = orjson.loads(raw) if raw else None
    if status == 401:
        sessions.drop(session.sid)  # the key was revoked or expired: the session ends
    if status >= 400:
        raise ApiError(status, payload)
    return payload
