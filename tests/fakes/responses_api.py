"""The fake upstream's OpenAI Responses API (`POST /v1/responses`), as a native upstream speaks
it: the full stream event sequence with `event:` lines and no `[DONE]`, usage in the terminal
event, responses kept in memory so `previous_response_id` works (an unknown one is 404
`previous_response_not_found`), function calls when a tool is forced (or on `auto` with the
`tool-on-auto` fault), and the fake's faults (`drop-after`, `chunk-delay`, `no-usage`).

The answer is `"fake: " + <the last user text>`, plus ` (after N turns)` when the request
continues a stored response, so a test sees that the upstream replayed its own history.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from tests.fakes.upstream import FakeUpstream, Fault


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text")) for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _items(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return [i for i in value or () if isinstance(i, dict)]


def _last_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type", "message") == "message" and item.get("role") == "user":
            return _text(item.get("content"))
    return ""


def _forced_tool(body: dict[str, Any], on_auto: bool) -> str | None:
    tools = [t for t in body.get("tools") or () if isinstance(t, dict)
             and t.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("name"):
        return str(choice["name"])
    if choice == "required" or on_auto:
        return str(tools[0].get("name") or "tool")
    return None


class FakeResponsesApi:
    def __init__(self, upstream: FakeUpstream) -> None:
        self.up = upstream
        self.stored: dict[str, dict[str, Any]] = {}

    async def handle(self, request: web.Request, body: dict[str, Any], fault: Fault
                     ) -> web.StreamResponse:
        from tests.fakes.upstream import _BadRequest, _json_response, _tool_arguments

        items = _items(body.get("input"))
        turns = 0
        previous = body.get("previous_response_id")
        if previous is not None:
            found = self.stored.get(previous)
            if found is None:
                return _json_response({"error": {
                    "message": f"Previous response with id '{previous}' not found.",
                    "type": "invalid_request_error", "param": "previous_response_id",
                    "code": "previous_response_not_found"}}, 404)
            turns = found["turns"] + 1
        if not isinstance(body.get("input"), str | list):
            raise _BadRequest("'input' must be a string or a list")
        model = str(body.get("model") or "fake-model")
        reply = "fake: " + _last_user_text(items) + (f" (after {turns} turns)" if turns else "")
        last = items[-1] if items else {}
        # on `auto`, a tool only for a user's question (not again after its output)
        tool = _forced_tool(body, fault.tools_on_auto and last.get("type", "message")
                            == "message" and last.get("role") == "user")
        rid = _id("resp")
        created = int(time.time())
        if tool:
            item: dict[str, Any] = {"id": _id("fc"), "type": "function_call",
                                    "status": "completed", "call_id": _id("call"),
                                    "name": tool,
                                    "arguments": _tool_arguments(body.get("tools"), tool)}
        else:
            item = {"id": _id("msg"), "type": "message", "status": "completed",
                    "role": "assistant", "content": [{"type": "output_text", "text": reply,
                                                      "annotations": [], "logprobs": []}]}
        in_tokens = sum(len(_text(i.get("content")).split()) + 1 for i in items)
        out_tokens = 1 if tool else len(reply.split())
        usage = None if fault.no_usage else {
            "input_tokens": in_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tokens + out_tokens}
        base = {"id": rid, "object": "response", "created_at": created, "model": model,
                "status": "in_progress", "output": [], "usage": None, "error": None,
                "incomplete_details": None, "instructions": body.get("instructions"),
                "previous_response_id": previous, "store": body.get("store", True),
                "tools": [{"description": None, "parameters": None, "strict": True, **t}
                          if t.get("type") == "function" else t
                          for t in body.get("tools") or () if isinstance(t, dict)],
                "tool_choice": body.get("tool_choice", "auto"),
                "parallel_tool_calls": True, "text": {"format": {"type": "text"}},
                "temperature": 1.0, "top_p": 1.0, "truncation": "disabled", "metadata": {},
                "background": False, "completed_at": None, "max_output_tokens": None,
                "reasoning": {"effort": None, "summary": None}, "user": None,
                "service_tier": "default", "top_logprobs": 0, "max_tool_calls": None,
                "presence_penalty": 0.0, "frequency_penalty": 0.0,
                "safety_identifier": None, "prompt_cache_key": None}
        final = {**base, "status": "completed", "output": [item], "usage": usage,
                 "completed_at": int(time.time())}
        if body.get("store", True) is not False:
            self.stored[rid] = {"turns": turns, "response": final}
        if not body.get("stream"):
            return self.up._non_stream(request, fault, final)
        return await self.up._stream(request, fault, self._events(base, final, item, tool))

    def _events(self, base: dict[str, Any], final: dict[str, Any], item: dict[str, Any],
                tool: str | None) -> list[bytes]:
        from tests.fakes.upstream import _split_words

        seq = 0
        out: list[bytes] = []

        def ev(kind: str, **fields: Any) -> None:
            nonlocal seq
            seq += 1
            out.append(self.up._sse_event(kind, {"type": kind, "sequence_number": seq,
                                                 **fields}))

        ev("response.created", response=base)
        ev("response.in_progress", response=base)
        common = {"item_id": item["id"], "output_index": 0}
        if tool:
            ev("response.output_item.added", output_index=0,
               item={**item, "status": "in_progress", "arguments": ""})
            ev("response.function_call_arguments.delta", **common, delta=item["arguments"])
            ev("response.function_call_arguments.done", **common, name=tool,
               arguments=item["arguments"])
        else:
            text = item["content"][0]["text"]
            ev("response.output_item.added", output_index=0,
               item={**item, "status": "in_progress", "content": []})
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            ev("response.content_part.added", **common, content_index=0, part=empty)
            for word in _split_words(text):
                ev("response.output_text.delta", **common, content_index=0, delta=word,
                   logprobs=[])
            ev("response.output_text.done", **common, content_index=0, text=text,
               logprobs=[])
            ev("response.content_part.done", **common, content_index=0,
               part=item["content"][0])
        ev("response.output_item.done", output_index=0, item=item)
        ev("response.completed", response=final)
        return out
