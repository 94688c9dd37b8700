"""What every fuzzed answer must satisfy, whatever was sent.

- never a 5xx (the fuzzed gateway's upstreams are healthy: a 5xx is our bug), never a hang
  (every call has a timeout: `TIMEOUT_S`);
- every error is the envelope of its route: OpenAI's `{"error": {"message", "type",
  "param", "code"}}`, or Anthropic's `{"type": "error", "error": {"type", "message"}}` on
  the Anthropic routes (`ERROR_SHAPES`: adding `/v1/messages` is its line there);
- a 200 stream is well-formed SSE: JSON chunks, ending in `data: [DONE]` or an error event;
  on `/v1/responses`, `event:` + `data:` frames numbered 1, 2, … with one response id,
  ending in exactly one terminal event (`STREAM_SHAPES`); on `/v1/messages`, Anthropic's:
  `event:` lines naming each event's `type`, ending in `message_stop` or an `error` event;
- no stack trace or upstream secret in any body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from tests.conftest import UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY

TIMEOUT_S = 30
_SECRETS = (UPSTREAM_OPENAI_KEY, UPSTREAM_ANTHROPIC_KEY, "Traceback (most recent call last)")


def openai_error(body: Any) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err


def anthropic_error(body: Any) -> None:
    assert isinstance(body, dict) and body.get("type") == "error", body
    err = body.get("error")
    assert isinstance(err, dict) and isinstance(err.get("type"), str), body
    assert isinstance(err.get("message"), str) and err["message"], body


# Longest prefix first; the first that matches a path names its error envelope.
ERROR_SHAPES: list[tuple[str, Callable[[Any], None]]] = [
    ("/v1/messages", anthropic_error),
    ("/", openai_error),
]


def error_shape(path: str) -> Callable[[Any], None]:
    return next(check for prefix, check in ERROR_SHAPES if path.startswith(prefix))


def check_answer(path: str, status: int, headers: Mapping[str, Any], content: bytes) -> None:
    """The promises every answer keeps, by route (see the module docstring). `headers` may
    hold lists of values (Schemathesis) or values (httpx)."""
    shown = content[:300]
    assert status < 500, f"{status} on {path}: {shown!r}"
    for secret in _SECRETS:
        assert secret.encode() not in content, f"{secret[:12]}... in the answer on {path}"
    ctype = _header(headers, "content-type")
    if status >= 400:
        assert ctype.startswith("application/json"), f"{status} on {path} as {ctype!r}"
        error_shape(path)(orjson.loads(content))
    elif ctype.startswith("text/event-stream"):
        (check_anthropic_sse if path.startswith("/v1/messages") else stream_shape(path))(
            content)


def check_sse(content: bytes) -> None:
    """`data:` events of JSON chunks, each with `choices`, ending in [DONE] or one error."""
    events = [e for e in content.split(b"\n\n") if e.strip()]
    assert events, "an empty stream"
    for event in events[:-1]:
        assert event.startswith(b"data: "), event[:100]
        chunk = orjson.loads(event[6:])
        assert isinstance(chunk, dict) and "error" not in chunk, chunk
        assert isinstance(chunk.get("choices"), list), chunk
    last = events[-1]
    assert last.startswith(b"data: "), last[:100]
    if last != b"data: [DONE]":
        openai_error(orjson.loads(last[6:]))


def check_anthropic_sse(content: bytes) -> None:
    """`event: T` + `data: {"type": T, ...}` pairs: `message_start` first, `message_stop` or
    one `error` last, every content block started before its deltas and stopped after."""
    events = [e for e in content.split(b"\n\n") if e.strip()]
    assert events, "an empty stream"
    names, open_blocks = [], set()
    for event in events:
        name_line, _, data_line = event.partition(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: "), event[:100]
        data = orjson.loads(data_line[6:])
        name = name_line[7:].decode()
        assert isinstance(data, dict) and data.get("type") == name, event[:100]
        names.append(name)
        if name == "content_block_start":
            open_blocks.add(data["index"])
        elif name == "content_block_delta":
            assert data["index"] in open_blocks, event[:100]
        elif name == "content_block_stop":
            open_blocks.remove(data["index"])
    assert names[0] in ("message_start", "error"), names
    if names[-1] == "error":
        anthropic_error(orjson.loads(events[-1].partition(b"\n")[2][6:]))
    else:
        assert names[-2:] == ["message_delta", "message_stop"] and not open_blocks, names


def _header(headers: Mapping[str, Any], name: str) -> str:
    value = next((v for k, v in headers.items() if k.lower() == name), "")
    return value[0] if isinstance(value, list) else value


RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete",
                                "response.failed"})


def check_responses_sse(content: bytes) -> None:
    """`event: X` / `data: {"type": X, "sequence_number": n, …}` frames, n = 1, 2, …; every
    response object has the one id; exactly one terminal event, the last; no [DONE]."""
    frames = [f for f in content.split(b"\n\n") if f.strip()]
    assert frames, "an empty stream"
    ids = set()
    for n, frame in enumerate(frames, start=1):
        head, _, data = frame.partition(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: "), frame[:100]
        event = orjson.loads(data[6:])
        assert event["type"] == head[7:].decode() and event["sequence_number"] == n, event
        if isinstance(event.get("response"), dict):
            ids.add(event["response"]["id"])
        assert (event["type"] in RESPONSES_TERMINAL) == (n == len(frames)), event["type"]
    assert len(ids) == 1, ids


# Longest prefix first, as ERROR_SHAPES: how each route frames its streams.
STREAM_SHAPES: list[tuple[str, Callable[[bytes], None]]] = [
    ("/v1/responses", check_responses_sse),
    ("/", check_sse),
]


def stream_shape(path: str) -> Callable[[bytes], None]:
    return next(check for prefix, check in STREAM_SHAPES if path.startswith(prefix))
