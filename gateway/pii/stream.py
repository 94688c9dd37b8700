"""Output rules and `restore` over a stream of OpenAI chunk dicts.

Each choice's `delta.content`, `delta.refusal`, each `delta.tool_calls[k].function.
arguments` and each completions `choices[].text` is its own text stream, with its own
`StreamScanner` (output rules) followed by its own `StreamRestorer` (when `restore` is on):
scanning first, so the placeholders the model echoes are not rescanned, and PII the model
writes itself is redacted by the output rules even with `restore: true`.

    chunks = ChunkFilter("chat", policy.output, redactor, restore=policy.restore)
    for chunk in upstream:            # dicts
        out = chunks.feed(chunk)      # a new dict (texts may be shorter), or None
        if out is not None:
            send(out)
    for chunk in chunks.flush():      # only if the stream ended without finish_reason
        send(chunk)

`feed` returns None when everything the chunk said is held back for now: its texts became
"" and it carries nothing else (no role, tool call id or name, finish_reason, logprobs or
usage). A choice whose texts all became "" and that carries nothing else is left out of
`choices`, so no client ever gets an empty delta that the upstream did not send. Nothing is
held, and chunks pass through as they are, when there are no output rules and nothing to
restore. When a choice's `finish_reason` arrives, whatever that choice still holds is
flushed into that chunk. Input chunks are never mutated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.pii.actions import Redactor
from gateway.pii.policy import copy_json
from gateway.pii.restore import StreamRestorer, StreamScanner

_Key = tuple[int, str, int]  # (choice index, field, tool call index)


class _TextStream:
    def __init__(self, rules: Mapping[str, str], redactor: Redactor, restore: bool) -> None:
        self.scanner = StreamScanner(rules, redactor) if rules else None
        self.restorer = StreamRestorer(redactor) if restore else None

    def feed(self, text: str) -> str:
        if self.scanner is not None:
            text = self.scanner.feed(text)
        return self.restorer.feed(text) if self.restorer is not None else text

    def flush(self) -> str:
        text = self.scanner.flush() if self.scanner is not None else ""
        if self.restorer is not None:
            text = self.restorer.feed(text) + self.restorer.flush()
        return text


class ChunkFilter:
    """Applies output rules and restore to streamed chunks (`chat` or `completions`)."""

    def __init__(self, endpoint: str, rules: Mapping[str, str], redactor: Redactor, *,
                 restore: bool = False) -> None:
        self.endpoint = endpoint
        self.rules = dict(rules)
        self.redactor = redactor
        self.restore = restore and redactor.restorable
        self._streams: dict[_Key, _TextStream] = {}
        self._last: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.restore

    @property
    def findings(self) -> list:
        return [f for s in self._streams.values() if s.scanner for f in s.scanner.findings]

    def _stream(self, key: _Key) -> _TextStream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _TextStream(self.rules, self.redactor, self.restore)
        return stream

    def feed(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        """The chunk as the client gets it, or None when it has nothing to send yet."""
        if not self.active:
            return chunk
        out = copy_json(chunk)
        self._last = {k: v for k, v in out.items() if k != "choices" and k != "usage"}
        choices = out.get("choices")
        if not isinstance(choices, list):
            return out
        emptied = []
        for pos, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", pos)
            held = False
            for key, holder, field in self._fields(index, choice):
                text = holder[field]
                holder[field] = self._stream(key).feed(text)
                held = held or (text != "" and holder[field] == "")
            if choice.get("finish_reason") is not None:
                self._flush_into(index, choice)
            elif held and _says_nothing(choice):
                emptied.append(pos)
        if emptied:
            out["choices"] = [c for pos, c in enumerate(choices) if pos not in emptied]
            if not out["choices"] and not out.get("usage"):
                return None
        return out

    def flush(self) -> list[dict[str, Any]]:
        """Chunks carrying what is still held, for a stream that ended without a
        finish_reason for every choice."""
        out = []
        for index in sorted({key[0] for key in self._streams}):
            choice: dict[str, Any] = {"index": index, "finish_reason": None}
            if self.endpoint == "chat":
                choice["delta"] = {}
            if self._flush_into(index, choice):
                out.append({**self._last, "choices": [choice]})
        return out

    def _fields(self, index: int, choice: dict[str, Any]):
        if self.endpoint == "completions":
            if isinstance(choice.get("text"), str):
                yield (index, "text", 0), choice, "text"
            return
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        for field in ("content", "refusal"):
            if isinstance(delta.get(field), str):
                yield (index, field, 0), delta, field
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for pos, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    yield (index, "tool_calls", call.get("index", pos)), fn, "arguments"

    def _flush_into(self, index: int, choice: dict[str, Any]) -> bool:
        """Append what choice `index` still holds to `choice`; True if there was any."""
        added = False
        for key in [k for k in self._streams if k[0] == index]:
            rest = self._streams.pop(key).flush()
            if not rest:
                continue
            added = True
            _, field, call = key
            if field == "text":
                choice["text"] = (choice.get("text") or "") + rest
                continue
            delta = _member(choice, "delta", dict)
            if field in ("content", "refusal"):
                delta[field] = (delta.get(field) or "") + rest
                continue
            calls = _member(delta, "tool_calls", list)
            for c in calls:
                if isinstance(c, dict) and c.get("index") == call:
                    fn = _member(c, "function", dict)
                    fn["arguments"] = (fn.get("arguments") or "") + rest
                    break
            else:
                calls.append({"index": call, "function": {"arguments": rest}})
        return added


def _member(holder: dict[str, Any], key: str, kind: type) -> Any:
    """`holder[key]`, made an empty `kind` when absent or null (litellm sends
    `"tool_calls": null` in a finishing chunk)."""
    value = holder.get(key)
    if not isinstance(value, kind):
        value = holder[key] = kind()
    return value


_QUIET: tuple[Any, ...] = (None, "", [], {})  # values that say nothing to a client


def _says_nothing(choice: dict[str, Any]) -> bool:
    """Whether a choice is only empty texts: no role, tool call id or name, finish_reason,
    logprobs, or any other field with a value."""
    for key, value in choice.items():
        if key == "delta" and isinstance(value, dict):
            for field, inner in value.items():
                if field == "tool_calls" and isinstance(inner, list):
                    if not all(_bare_call(call) for call in inner):
                        return False
                elif inner not in _QUIET:
                    return False
        elif key != "index" and value not in _QUIET:
            return False
    return True


def _bare_call(call: Any) -> bool:
    """A streamed tool call that is only its index and (now empty) arguments."""
    if not isinstance(call, dict):
        return False
    for key, value in call.items():
        if key == "function" and isinstance(value, dict):
            if any(v not in _QUIET for v in value.values()):
                return False
        elif key != "index" and value not in _QUIET:
            return False
    return True
