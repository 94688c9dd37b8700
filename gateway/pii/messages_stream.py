"""Output rules and `restore` over a Messages stream (Anthropic's SSE events as dicts).

Each content block's text (`text_delta`) and tool input (`input_json_delta`) is its own text
stream, scanned then restored as on chat (`stream._TextStream`): text that could still become
part of a finding is held back, and what a block still holds goes out as one more delta just
before its `content_block_stop`. Thinking (`thinking_delta`, `signature_delta`) passes as it
is: the signature covers it. A delta left with nothing to say is not sent. Input events are
never mutated; every other event passes unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.pii.actions import Redactor
from gateway.pii.output import fail_closed
from gateway.pii.stream import _TextStream

_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json"}


class MessagesEventFilter:
    def __init__(self, rules: Mapping[str, str], redactor: Redactor, restore: bool) -> None:
        self.rules = dict(rules)
        self.redactor = redactor
        self.restore = restore and redactor.restorable
        self._streams: dict[int, tuple[str, _TextStream]] = {}  # block index -> (kind, text)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                return [event]
            field = _FIELDS.get(str(delta.get("type")))
            if field is None or not isinstance(delta.get(field), str):
                return [event]
            index = event.get("index", 0)
            entry = self._streams.get(index)
            if entry is None:
                entry = self._streams[index] = (
                    delta["type"], _TextStream(self.rules, self.redactor, self.restore))
            text = entry[1].feed(delta[field])
            if not text:
                return []
            return [{**event, "delta": {**delta, field: text}}]
        if kind == "content_block_stop":
            return [*self._flush(event.get("index", 0)), event]
        if kind == "message_delta" or kind == "message_stop":
            return [*self.flush(), event]
        return [event]

    def _flush(self, index: Any) -> list[dict[str, Any]]:
        entry = self._streams.pop(index, None)
        if entry is None:
            return []
        rest = entry[1].flush()
        if not rest:
            return []
        delta_type = entry[0]
        return [{"type": "content_block_delta", "index": index,
                 "delta": {"type": delta_type, _FIELDS[delta_type]: rest}}]

    def flush(self) -> list[dict[str, Any]]:
        """Whatever any block still holds (a stream that ended without closing it)."""
        out: list[dict[str, Any]] = []
        for index in sorted(self._streams):
            out += self._flush(index)
        return out


class MessagesPiiSink:
    """`PiiChunkSink` for Messages: events through `MessagesEventFilter` on their way to
    `inner`; a scan failure withholds the answer (503 `redaction_unavailable`)."""

    def __init__(self, inner: Any, rules: Mapping[str, str], restore: bool,
                 redactor: Redactor) -> None:
        self.inner = inner
        self.filter = MessagesEventFilter(rules, redactor, restore)

    async def send(self, chunk: dict[str, Any]) -> None:
        with fail_closed():
            events = self.filter.feed(chunk)
        for event in events:
            await self.inner.send(event)

    async def close(self, last: dict[str, Any]) -> None:
        with fail_closed():
            held = self.filter.flush()
        for event in held:
            await self.inner.send(event)
        await self.inner.close(last)

    async def fail(self, error: Any) -> None:
        await self.inner.fail(error)
