"""One stored answer for streamed and whole callers of OpenAI's chat and completions.

`Assembler` watches a stream's chunks on their way to the client (a stream filter) and
builds the whole answer they add up to (text, tool calls, finish reasons), or None when the
stream did not reach its end or carried something it cannot rebuild exactly (log
probabilities, audio). `replay_chunks` does the reverse: a whole answer as the chunks of a
stream, in the order OpenAI sends them (role and text, tool calls, the finish reason, then
the usage chunk when the client asked for one), for the protocol's own stream encoder.
"""

from __future__ import annotations

from typing import Any

from gateway.core.request import ChunkSink

_CHAT_DELTA = frozenset({"role", "content", "tool_calls", "refusal"})
_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs", "text"})
_IDS = ("id", "created", "model", "system_fingerprint")


class Assembler:
    """A stream filter (outermost: it sees the chunks as the upstream sent them)."""

    __slots__ = ("choices", "complete", "endpoint", "exact", "head")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.complete = False
        self.exact = True
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}

    def wrap(self, inner: ChunkSink) -> ChunkSink:
        return Watching(self, inner)

    def closed(self) -> None:
        self.complete = True

    def failed(self) -> None:
        return None

    def feed(self, chunk: dict[str, Any]) -> None:
        if not self.exact:
            return
        if not self.head:
            self.head = {k: chunk[k] for k in _IDS if chunk.get(k) is not None}
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or not isinstance(choice.get("index", 0), int):
                self.exact = False
                return
            if choice.get("logprobs") is not None or not _CHOICE_KEYS.issuperset(choice):
                self.exact = False
                return
            mine = self.choices.setdefault(choice.get("index", 0), {
                "role": None, "text": [], "refusal": [], "tools": {}, "finish": None})
            if choice.get("finish_reason") is not None:
                mine["finish"] = choice["finish_reason"]
            if self.endpoint == "completions":
                if isinstance(choice.get("text"), str):
                    mine["text"].append(choice["text"])
                continue
            self._delta(mine, choice.get("delta") or {})

    def _delta(self, mine: dict[str, Any], delta: dict[str, Any]) -> None:
        if any(v is not None for k, v in delta.items() if k not in _CHAT_DELTA):
            self.exact = False
            return
        if delta.get("role"):
            mine["role"] = delta["role"]
        if isinstance(delta.get("content"), str):
            mine["text"].append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            mine["refusal"].append(delta["refusal"])
        for call in delta.get("tool_calls") or ():
            slot = mine["tools"].setdefault(call.get("index", 0), {
                "id": None, "type": "function", "name": [], "arguments": []})
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            if isinstance(function.get("name"), str):
                slot["name"].append(function["name"])
            if isinstance(function.get("arguments"), str):
                slot["arguments"].append(function["arguments"])

    def answer(self, usage: dict[str, Any] | None) -> dict[str, Any] | None:
        """The whole answer the stream added up to, or None (cut, or not rebuildable)."""
        if not (self.complete and self.exact and self.choices):
            return None
        if any(c["finish"] is None for c in self.choices.values()):
            return None
        if self.endpoint == "completions":
            choices = [{"text": "".join(c["text"]), "index": i, "logprobs": None,
                        "finish_reason": c["finish"]} for i, c in sorted(self.choices.items())]
            out = {"object": "text_completion", **self.head, "choices": choices}
        else:
            out = {"object": "chat.completion", **self.head,
                   "choices": [_chat_choice(i, c) for i, c in sorted(self.choices.items())]}
        if usage is not None:
            out["usage"] = usage
        return out


def _chat_choice(index: int, c: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": c["role"] or "assistant",
                               "content": "".join(c["text"]) if c["text"] or not c["tools"]
                               else None}
    if c["refusal"]:
        message["refusal"] = "".join(c["refusal"])
    if c["tools"]:
        message["tool_calls"] = [
            {"id": t["id"], "type": t["type"],
             "function": {"name": "".join(t["name"]), "arguments": "".join(t["arguments"])}}
            for _, t in sorted(c["tools"].items())]
    return {"index": index, "message": message, "logprobs": None, "finish_reason": c["finish"]}


class Watching:
    """A stream filter that shows an assembler every chunk (or event) on its way out, and
    tells it when the stream ended complete (`closed`) or failed (`failed`)."""

    __slots__ = ("assembler", "inner")

    def __init__(self, assembler: Any, inner: ChunkSink) -> None:
        self.assembler = assembler
        self.inner = inner

    async def send(self, chunk: dict[str, Any]) -> None:
        self.assembler.feed(chunk)
        await self.inner.send(chunk)

    async def close(self, last: dict[str, Any]) -> None:
        await self.inner.close(last)
        self.assembler.closed()

    async def fail(self, error: Any) -> None:
        self.assembler.failed()
        await self.inner.fail(error)


def replay_chunks(endpoint: str, answer: dict[str, Any], usage: dict[str, Any] | None
                  ) -> list[dict[str, Any]]:
    """A whole chat or completions answer as its stream's chunks (usage chunk last, when
    `usage` is given)."""
    if endpoint == "completions":
        head = {"id": answer.get("id"), "object": "text_completion",
                **{k: answer[k] for k in _IDS[1:] if k in answer}}
        chunks = []
        for choice in answer.get("choices") or ():
            index = choice.get("index", 0)
            chunks.append({**head, "choices": [{"text": choice.get("text") or "", "index": index,
                                                "logprobs": None, "finish_reason": None}]})
            chunks.append({**head, "choices": [{"text": "", "index": index, "logprobs": None,
                                                "finish_reason": choice.get("finish_reason")}]})
    else:
        head = {"id": answer.get("id"), "object": "chat.completion.chunk",
                **{k: answer[k] for k in _IDS[1:] if k in answer}}
        chunks = []
        for choice in answer.get("choices") or ():
            chunks.extend(_chat_chunks(head, choice))
    if usage is not None:
        chunks.append({**head, "choices": [], "usage": usage})
    return chunks


def _chat_chunks(head: dict[str, Any], choice: dict[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    message = choice.get("message") or {}

    def chunk(delta: dict[str, Any], finish: Any = None) -> dict[str, Any]:
        return {**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    first: dict[str, Any] = {"role": message.get("role") or "assistant"}
    content = message.get("content")
    if isinstance(content, str):
        first["content"] = content
    if message.get("refusal"):
        first["refusal"] = message["refusal"]
    out = [chunk(first)]
    calls = message.get("tool_calls") or ()
    if calls:
        out.append(chunk({"tool_calls": [
            {"index": k, "id": call.get("id"), "type": call.get("type", "function"),
             "function": dict(call.get("function") or {})}
            for k, call in enumerate(calls)]}))
    out.append(chunk({}, choice.get("finish_reason") or "stop"))
    return out
