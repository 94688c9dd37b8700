"""One stored answer for streamed and whole callers of `/v1/responses` and `/v1/messages`.

Watching a stream: a Responses stream's answer is the response object of its
`response.completed` event; a Messages stream's is rebuilt from its events (`message_start`,
the content blocks and their deltas, `message_delta`), complete at `message_stop`.

Replaying: the stored answer becomes Chat chunks (text, refusal, tool calls, the finish
reason, the usage) and goes through the same emitter the translators use for a deployment
that speaks Chat (`ChatToResponsesStream`, `stream_from_chat`), so a replayed stream has
every event of a live one, ending in `response.completed` or `message_stop` with its usage.

Only answers a replay gives back exactly are kept: Responses `message` and `function_call`
items, Messages `text` and `tool_use` blocks (reasoning and signed thinking are not).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson

from gateway.protocols.anthropic_translate import STOP_REASONS, stream_from_chat
from gateway.protocols.replay import Watching
from gateway.protocols.responses_stream import ChatToResponsesStream

_RESPONSE_ITEMS = frozenset({"message", "function_call"})
_MESSAGE_BLOCKS = frozenset({"text", "tool_use"})
_FINISH = {v: k for k, v in STOP_REASONS.items() if k != "function_call"}
_FINISH.update({"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop"})


def replayable(endpoint: str, answer: Mapping[str, Any]) -> bool:
    """Whether a replay gives `answer` back as it is."""
    if endpoint == "responses":
        return answer.get("status") == "completed" and all(
            isinstance(i, Mapping) and i.get("type") in _RESPONSE_ITEMS
            and all(isinstance(p, Mapping) and p.get("type") in ("output_text", "refusal")
                    for p in (i.get("content") or ()))
            for i in answer.get("output") or ())
    if endpoint == "messages":
        return all(isinstance(b, Mapping) and b.get("type") in _MESSAGE_BLOCKS
                   for b in answer.get("content") or ())
    return True


class EventAssembler:
    """A Responses or Messages stream filter: the answer the stream adds up to."""

    __slots__ = ("blocks", "complete", "endpoint", "exact", "message")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.complete = False
        self.exact = True
        self.message: dict[str, Any] | None = None  # Responses: the completed response
        self.blocks: dict[int, dict[str, Any]] = {}  # Messages: blocks by index

    def wrap(self, inner: Any) -> Any:
        return Watching(self, inner)

    def closed(self) -> None:
        if self.endpoint == "responses" and self.message is not None:
            self.complete = True

    def failed(self) -> None:
        self.message = None

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.endpoint == "responses":
            if kind == "response.completed" and isinstance(event.get("response"), dict):
                self.message = orjson.loads(orjson.dumps(event["response"]))
            return
        if not self.exact:
            return
        if kind == "message_start" and isinstance(event.get("message"), dict):
            self.message = {k: v for k, v in event["message"].items() if k != "content"}
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            block = dict(event["content_block"])
            if block.get("type") not in _MESSAGE_BLOCKS:
                self.exact = False
            block["_json"] = []
            self.blocks[event.get("index", len(self.blocks))] = block
        elif kind == "content_block_delta":
            self._delta(event.get("index"), event.get("delta") or {})
        elif kind == "message_delta" and self.message is not None:
            self.message.update({k: v for k, v in (event.get("delta") or {}).items()})
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.message["usage"] = {**(self.message.get("usage") or {}), **usage}
        elif kind == "message_stop":
            self.complete = True

    def _delta(self, index: Any, delta: Mapping[str, Any]) -> None:
        block = self.blocks.get(index) if isinstance(index, int) else None
        kind = delta.get("type")
        if block is None:
            self.exact = False
        elif kind == "text_delta" and isinstance(delta.get("text"), str):
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            block["_json"].append(delta["partial_json"])
        else:
            self.exact = False

    def answer(self, usage: Any = None) -> dict[str, Any] | None:
        if self.endpoint == "responses":
            return self.message if self.complete else None
        if not (self.complete and self.exact and self.message is not None):
            return None
        content = []
        for _, block in sorted(self.blocks.items()):
            parts = block.pop("_json")
            if block.get("type") == "tool_use" and parts:
                try:
                    block["input"] = orjson.loads("".join(parts))
                except orjson.JSONDecodeError:
                    return None
            content.append(block)
        return {**self.message, "content": content}


# --- replay ----------------------------------------------------------------------------------

def chat_chunks(endpoint: str, answer: Mapping[str, Any], usage: Mapping[str, Any] | None
                ) -> list[dict[str, Any]]:
    """A stored Responses or Messages answer as the Chat chunks that would have produced it."""
    head = {"id": str(answer.get("id") or ""), "object": "chat.completion.chunk",
            "created": answer.get("created_at") or 0, "model": answer.get("model")}
    deltas: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    if endpoint == "responses":
        for item in answer.get("output") or ():
            if item.get("type") == "function_call":
                calls.append({"id": item.get("call_id"), "name": item.get("name"),
                              "arguments": item.get("arguments") or ""})
                continue
            for part in item.get("content") or ():
                key = "refusal" if part.get("type") == "refusal" else "content"
                text = part.get(key if key == "refusal" else "text")
                if isinstance(text, str) and text:
                    deltas.append({key: text})
        finish = "tool_calls" if calls else "stop"
    else:
        for block in answer.get("content") or ():
            if block.get("type") == "tool_use":
                calls.append({"id": block.get("id"), "name": block.get("name"),
                              "arguments": orjson.dumps(block.get("input") or {}).decode()})
            elif isinstance(block.get("text"), str) and block["text"]:
                deltas.append({"content": block["text"]})
        finish = _FINISH.get(str(answer.get("stop_reason") or "end_turn"), "stop")
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", **d},
                                    "finish_reason": None}]} for d in deltas]
    for k, call in enumerate(calls):
        chunks.append({**head, "choices": [{"index": 0, "finish_reason": None, "delta": {
            "tool_calls": [{"index": k, "id": call["id"], "type": "function", "function": {
                "name": call["name"], "arguments": call["arguments"]}}]}}]})
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage is not None:
        chunks.append({**head, "choices": [], "usage": dict(usage)})
    return chunks


async def replay_events(endpoint: str, answer: Mapping[str, Any],
                        usage: Mapping[str, Any] | None, body: Mapping[str, Any]
                        ) -> AsyncIterator[dict[str, Any]]:
    """A stored answer as its protocol's stream events, through the translator's emitter."""
    chunks = chat_chunks(endpoint, answer, usage)
    if endpoint == "responses":
        machine = ChatToResponsesStream(body)
        for chunk in chunks:
            for event in machine.feed(chunk):
                yield event
        for event in machine.finish():
            yield event
        return
    async for event in stream_from_chat(_aiter(chunks), answer.get("model"), True):
        yield event


async def _aiter(items: Iterable[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item
