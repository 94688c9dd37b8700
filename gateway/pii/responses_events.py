"""Output rules and `restore` over `/v1/responses` answers: whole, and as a stream of events.

The model's texts are the output items' texts: message `output_text` and `refusal` parts,
function call `arguments`, reasoning summaries and reasoning text. Output rules apply to
those; `restore` also to the request fields a response object echoes (`instructions`,
`tools`, …: the caller's own text, as it went upstream).

In a stream each text is its own stream of deltas (keyed by output index, part index and
field), filtered as it passes like a chat delta (`pii.stream._TextStream`: scanner, then
restorer). Everything that repeats a text in full takes exactly what the deltas sent: the
`*.done` events (after a last delta carrying what was held back), `content_part.done`,
`reasoning_summary_part.done`, `output_item.done` and the terminal event's `output`. A text
that never came as deltas is filtered whole. So a client that reads only the terminal events
sees the same redacted and restored text as one that joins the deltas, and each finding is
counted once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.core.request import ChunkSink
from gateway.pii.actions import Redactor
from gateway.pii.output import AnswerFilter, fail_closed
from gateway.pii.policy import copy_json, redact_response, restore_response
from gateway.pii.stream import _TextStream

log = logging.getLogger("gateway.pii")

Key = tuple[int, int, str]  # (output_index, content / summary index, field)
# delta event -> (index field, text stream field)
_DELTAS = {
    "response.output_text.delta": ("content_index", "text"),
    "response.refusal.delta": ("content_index", "refusal"),
    "response.function_call_arguments.delta": (None, "arguments"),
    "response.reasoning_summary_text.delta": ("summary_index", "summary"),
    "response.reasoning_text.delta": ("content_index", "reasoning"),
}
# done event -> (index field, text stream field, the event's field holding the full text)
_DONES = {
    "response.output_text.done": ("content_index", "text", "text"),
    "response.refusal.done": ("content_index", "refusal", "refusal"),
    "response.function_call_arguments.done": (None, "arguments", "arguments"),
    "response.reasoning_summary_text.done": ("summary_index", "summary", "text"),
    "response.reasoning_text.done": ("content_index", "reasoning", "text"),
}
_DELTA_OF = {"text": "response.output_text.delta", "refusal": "response.refusal.delta",
             "arguments": "response.function_call_arguments.delta",
             "summary": "response.reasoning_summary_text.delta",
             "reasoning": "response.reasoning_text.delta"}
_RESPONSE_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued",
                              "response.completed", "response.incomplete", "response.failed"})
_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def filter_answer(response: dict[str, Any], rules: Mapping[str, str], restore: bool,
                  redactor: Redactor) -> dict[str, Any]:
    """A whole response object: output rules over its output items, then restore."""
    out = dict(response)
    if rules and isinstance(out.get("output"), list):
        redacted, _ = redact_response({"output": out["output"]}, "responses", rules, redactor)
        out["output"] = redacted["output"]
    if restore:
        out = restore_response(out, "responses", redactor)
    return out


class ResponsesAnswerFilter(AnswerFilter):
    """`AnswerFilter` for a whole response object (`filter_answer`), failing closed alike."""

    def response(self, result: dict[str, Any]) -> dict[str, Any]:
        with fail_closed():
            return filter_answer(result, self.rules, self.restore, self.redactor)


class ResponsesEventFilter:
    def __init__(self, rules: Mapping[str, str], redactor: Redactor, restore: bool) -> None:
        self.rules = dict(rules)
        self.redactor = redactor
        self.restore = restore and redactor.restorable
        self._streams: dict[Key, _TextStream] = {}
        self._sent: dict[Key, str] = {}  # what the client got of each text, joined
        self._ids: dict[int, str] = {}  # output_index -> item id (for flushed deltas)

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.restore

    def _stream(self, key: Key) -> _TextStream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _TextStream(self.rules, self.redactor, self.restore)
        return stream

    def _emit(self, key: Key, text: str) -> None:
        if text:
            self._sent[key] = self._sent.get(key, "") + text

    def _whole(self, key: Key, text: str) -> str:
        """A text that came in full (no deltas): filtered at once, remembered."""
        if key in self._sent or key in self._streams:
            return self._flushed_text(key)
        stream = _TextStream(self.rules, self.redactor, self.restore)
        out = stream.feed(text) + stream.flush()
        self._sent[key] = out
        return out

    def _flushed_text(self, key: Key) -> str:
        stream = self._streams.pop(key, None)
        if stream is not None:
            self._emit(key, stream.flush())
        return self._sent.get(key, "")

    # --- events ---------------------------------------------------------------------------
    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.active:
            return [event]
        kind = event.get("type")
        index = event.get("output_index")
        if isinstance(index, int) and isinstance(event.get("item_id"), str):
            self._ids[index] = event["item_id"]
        if kind in _DELTAS:
            at, field = _DELTAS[kind]
            key = (_int(index), _int(event.get(at)) if at else 0, field)
            text = self._stream(key).feed(str(event.get("delta") or ""))
            self._emit(key, text)
            return [{**event, "delta": text}] if text else []
        if kind in _DONES:
            at, field, full = _DONES[kind]
            key = (_int(index), _int(event.get(at)) if at else 0, field)
            out = self._flush(key, event)
            text = self._whole(key, str(event.get(full) or ""))
            return [*out, {**event, full: text}]
        if kind == "response.content_part.done" or kind == "response.content_part.added":
            part = event.get("part")
            out = self._flush_all(_int(index)) if kind.endswith("done") else []
            if isinstance(part, dict):
                event = {**event, "part": self._part(_int(index), _int(
                    event.get("content_index")), part, kind.endswith("done"))}
            return [*out, event]
        if kind == "response.reasoning_summary_part.done":
            part = event.get("part")
            out = self._flush_all(_int(index))
            if isinstance(part, dict):
                key = (_int(index), _int(event.get("summary_index")), "summary")
                event = {**event, "part": {**part, "text": self._whole(
                    key, str(part.get("text") or ""))}}
            return [*out, event]
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = event.get("item")
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                self._ids[_int(index)] = item["id"]
            out = self._flush_all(_int(index)) if kind.endswith("done") else []
            if isinstance(item, dict):
                event = {**event, "item": self._item(_int(index), item,
                                                     kind.endswith("done"))}
            return [*out, event]
        if kind in _RESPONSE_EVENTS:
            out = self._flush_all() if kind in _TERMINAL else []
            response = event.get("response")
            if isinstance(response, dict):
                event = {**event, "response": self._response(response)}
            return [*out, event]
        return [event]

    def _flush(self, key: Key, like: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A last delta with what the text stream still holds, before its done event."""
        stream = self._streams.pop(key, None)
        rest = stream.flush() if stream is not None else ""
        if not rest:
            return []
        self._emit(key, rest)
        return [self._delta(key, rest, like)]

    def _delta(self, key: Key, text: str, like: Mapping[str, Any]) -> dict[str, Any]:
        index, at, field = key
        event: dict[str, Any] = {"type": _DELTA_OF[field], "sequence_number": 0,
                                 "item_id": like.get("item_id") or self._ids.get(index, ""),
                                 "output_index": index, "delta": text}
        if field in ("text", "refusal", "reasoning"):
            event["content_index"] = at
        elif field == "summary":
            event["summary_index"] = at
        if field == "text":
            event["logprobs"] = []
        return event

    def _flush_all(self, index: int | None = None) -> list[dict[str, Any]]:
        """Before an event that repeats texts in full: deltas with what the text streams (of
        one output item, or all) still hold, for an upstream that skipped a done event."""
        out = []
        for key in sorted(k for k in self._streams if index is None or k[0] == index):
            out += self._flush(key, {})
        return out

    def _part(self, index: int, at: int, part: dict[str, Any], done: bool) -> dict[str, Any]:
        kind = part.get("type")
        field, name = ("refusal", "refusal") if kind == "refusal" else \
            ("reasoning", "text") if kind == "reasoning_text" else ("text", "text")
        if not isinstance(part.get(name), str) or (not done and not part[name]):
            return part
        return {**part, name: self._whole((index, at, field), part[name])}

    def _item(self, index: int, item: dict[str, Any], done: bool) -> dict[str, Any]:
        kind = item.get("type")
        if kind == "function_call" and isinstance(item.get("arguments"), str) and (
                done or item["arguments"]):
            return {**item, "arguments": self._whole((index, 0, "arguments"),
                                                     item["arguments"])}
        out = dict(item)
        for name in ("content", "summary"):
            parts = item.get(name)
            if isinstance(parts, list):
                out[name] = [self._item_part(index, j, p, name, done) for j, p in
                             enumerate(parts)]
        if kind not in ("message", "reasoning", "function_call"):
            # another item kind (a hosted tool's call): its texts filtered whole
            return filter_answer({"output": [out]}, self.rules, self.restore,
                                 self.redactor)["output"][0]
        return out

    def _item_part(self, index: int, at: int, part: Any, name: str, done: bool) -> Any:
        if not isinstance(part, dict):
            return part
        if name == "summary":
            if not isinstance(part.get("text"), str) or (not done and not part["text"]):
                return part
            return {**part, "text": self._whole((index, at, "summary"), part["text"])}
        return self._part(index, at, part, done)

    def _response(self, response: dict[str, Any]) -> dict[str, Any]:
        echo = {k: v for k, v in response.items() if k != "output"}
        out = restore_response(echo, "responses", self.redactor) if self.restore else \
            copy_json(echo)
        output = response.get("output")
        if isinstance(output, list):
            out["output"] = [self._item(i, item, True) if isinstance(item, dict) else item
                             for i, item in enumerate(output)]
        return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class ResponsesPiiSink:
    """`/v1/responses` events through the output rules and restore, on their way to `inner`
    (the counterpart of `PiiChunkSink`)."""

    def __init__(self, inner: ChunkSink, rules: Mapping[str, str], restore: bool,
                 redactor: Redactor) -> None:
        self.inner = inner
        self.filter = ResponsesEventFilter(rules, redactor, restore)

    async def send(self, event: dict[str, Any]) -> None:
        with fail_closed():
            out = self.filter.feed(event)
        for item in out:
            await self.inner.send(item)

    async def close(self, last: dict[str, Any]) -> None:
        await self.inner.close(last)

    async def fail(self, error: Any) -> None:
        await self.inner.fail(error)
