"""Chat chunks -> the Responses stream: the full event state machine.

    response.created, response.in_progress                    on the first chunk
    reasoning (reasoning_content):  output_item.added, reasoning_summary_part.added,
                                    reasoning_summary_text.delta x N, ...text.done,
                                    reasoning_summary_part.done, output_item.done
    text:       output_item.added (message), content_part.added (output_text),
                output_text.delta x N, output_text.done, content_part.done, output_item.done
    refusal:    a refusal part in the same message: content_part.added, refusal.delta x N,
                refusal.done, content_part.done
    tool calls: output_item.added (function_call, name, empty arguments),
                function_call_arguments.delta x N, ...arguments.done (with `name`),
                output_item.done
    then        response.completed | response.incomplete (finish_reason length or
                content_filter), carrying every output item in full and the usage

Every event has `sequence_number` (1, 2, …) and the same response id. An item is closed when
the next kind of output starts, on `finish_reason`, or when the stream ends without one (some
upstreams never send it). Only the first choice is read (Responses has no `n`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gateway import tokens
from gateway.protocols.responses_shapes import (
    ESTIMATED,
    function_call_item,
    message_item,
    new_id,
    reasoning_item,
    skeleton,
    text_part,
    usage_from_chat,
)

Event = dict[str, Any]
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class _Text:
    """An open reasoning item or message."""

    __slots__ = ("index", "item_id", "kind", "parts", "texts")

    def __init__(self, kind: str, index: int) -> None:
        self.kind = kind  # reasoning | message
        self.index = index
        self.item_id = new_id("rs" if kind == "reasoning" else "msg")
        self.parts: list[str] = []  # message: part kinds in order (output_text, refusal)
        self.texts: list[list[str]] = []


class _Call:
    __slots__ = ("arguments", "call_id", "index", "item_id", "name")

    def __init__(self, index: int, call_id: str, name: str) -> None:
        self.index = index
        self.item_id = new_id("fc")
        self.call_id = call_id
        self.name = name
        self.arguments: list[str] = []


class ChatToResponsesStream:
    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.response: dict[str, Any] | None = None
        self.seq = 0
        self.output: list[dict[str, Any] | None] = []  # by output_index; None while open
        self.text: _Text | None = None
        self.calls: dict[int, _Call] = {}  # by Chat tool-call index
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.done = False

    # --- events -----------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> Event:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq, **fields}

    def _snapshot(self) -> dict[str, Any]:
        assert self.response is not None
        return dict(self.response)

    # --- input ------------------------------------------------------------------------------
    def _start(self, chunk: Mapping[str, Any], out: list[Event]) -> None:
        created = chunk.get("created")
        self.response = skeleton(
            self.body, response_id=new_id("resp"), model=str(chunk.get("model") or ""),
            created_at=created if isinstance(created, int) else int(time.time()))
        out.append(self._event("response.created", response=self._snapshot()))
        out.append(self._event("response.in_progress", response=self._snapshot()))

    def feed(self, chunk: Mapping[str, Any]) -> list[Event]:
        out: list[Event] = []
        if self.response is None:
            self._start(chunk, out)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        if not choices or not isinstance(choices[0], Mapping):
            return out
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            thought = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(thought, str) and thought:
                self._text_delta(out, "reasoning", "summary_text", thought)
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._text_delta(out, "message", "output_text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                self._text_delta(out, "message", "refusal", delta["refusal"])
            for pos, call in enumerate(delta.get("tool_calls") or ()):
                if isinstance(call, Mapping):
                    self._call_delta(out, call, pos)
        if choice.get("finish_reason") is not None:
            self.finish_reason = str(choice["finish_reason"])
            self._close_all(out)
        return out

    def finish(self) -> list[Event]:
        """The end of the upstream stream: close what is open, then the terminal event."""
        if self.done:
            return []
        self.done = True
        out: list[Event] = []
        if self.response is None:  # an upstream that sent no chunk before [DONE]
            self._start({}, out)
        self._close_all(out)
        response = self._snapshot()
        response["output"] = [item for item in self.output if item is not None]
        response["usage"] = self._usage(response)
        response["completed_at"] = int(time.time())
        reason = INCOMPLETE.get(self.finish_reason or "")
        if reason:
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": reason}
            out.append(self._event("response.incomplete", response=response))
        else:
            response["status"] = "completed"
            out.append(self._event("response.completed", response=response))
        return out

    def _usage(self, response: Mapping[str, Any]) -> dict[str, Any]:
        usage = usage_from_chat(self.usage)
        if usage is not None:
            return usage
        # The upstream ignored stream_options.include_usage: an estimate, marked as one
        # (the relay reports it as estimated; the mark never reaches the client).
        model = str(response.get("model") or "")
        prompt = tokens.count_text(_prompt_text(self.body), model)
        answer = "".join(_item_text(i) for i in response.get("output") or ())
        out = tokens.count_text(answer, model)
        return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": out, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + out, ESTIMATED: True}

    # --- text items -------------------------------------------------------------------------
    def _text_delta(self, out: list[Event], kind: str, part: str, delta: str) -> None:
        text = self.text
        if text is None or text.kind != kind:
            self._close_text(out)
            text = self.text = self._open_text(out, kind)
        if not text.parts or text.parts[-1] != part:
            self._open_part(out, text, part)
        text.texts[-1].append(delta)
        index = len(text.parts) - 1
        if kind == "reasoning":
            out.append(self._event("response.reasoning_summary_text.delta",
                                   item_id=text.item_id, output_index=text.index,
                                   summary_index=index, delta=delta))
        elif part == "refusal":
            out.append(self._event("response.refusal.delta", item_id=text.item_id,
                                   output_index=text.index, content_index=index, delta=delta))
        else:
            out.append(self._event("response.output_text.delta", item_id=text.item_id,
                                   output_index=text.index, content_index=index, delta=delta,
                                   logprobs=[]))

    def _open_text(self, out: list[Event], kind: str) -> _Text:
        text = _Text(kind, len(self.output))
        self.output.append(None)
        item = reasoning_item(text.item_id, None) if kind == "reasoning" \
            else message_item(text.item_id, [], "in_progress")
        out.append(self._event("response.output_item.added", output_index=text.index,
                               item=item))
        return text

    def _open_part(self, out: list[Event], text: _Text, part: str) -> None:
        if text.parts:
            self._close_part(out, text)
        text.parts.append(part)
        text.texts.append([])
        index = len(text.parts) - 1
        if text.kind == "reasoning":
            out.append(self._event("response.reasoning_summary_part.added",
                                   item_id=text.item_id, output_index=text.index,
                                   summary_index=index,
                                   part={"type": "summary_text", "text": ""}))
        else:
            out.append(self._event("response.content_part.added", item_id=text.item_id,
                                   output_index=text.index, content_index=index,
                                   part=_part(part, "")))

    def _close_part(self, out: list[Event], text: _Text) -> dict[str, Any]:
        index = len(text.parts) - 1
        full = "".join(text.texts[index])
        kind = text.parts[index]
        common = {"item_id": text.item_id, "output_index": text.index}
        if text.kind == "reasoning":
            out.append(self._event("response.reasoning_summary_text.done", **common,
                                   summary_index=index, text=full))
            part = {"type": "summary_text", "text": full}
            out.append(self._event("response.reasoning_summary_part.done", **common,
                                   summary_index=index, part=part))
            return part
        if kind == "refusal":
            out.append(self._event("response.refusal.done", **common, content_index=index,
                                   refusal=full))
        else:
            out.append(self._event("response.output_text.done", **common,
                                   content_index=index, text=full, logprobs=[]))
        part = _part(kind, full)
        out.append(self._event("response.content_part.done", **common, content_index=index,
                               part=part))
        return part

    def _close_text(self, out: list[Event]) -> None:
        text = self.text
        if text is None:
            return
        self.text = None
        done = [_part(k, "".join(t)) for k, t in zip(text.parts[:-1], text.texts[:-1],
                                                     strict=True)]
        if text.parts:
            done.append(self._close_part(out, text))
        if text.kind == "reasoning":
            item = {"id": text.item_id, "type": "reasoning", "summary": done}
        else:
            status = "incomplete" if self.finish_reason in INCOMPLETE else "completed"
            item = message_item(text.item_id, done, status)
        self.output[text.index] = item
        out.append(self._event("response.output_item.done", output_index=text.index,
                               item=item))

    # --- tool calls -------------------------------------------------------------------------
    def _call_delta(self, out: list[Event], call: Mapping[str, Any], pos: int) -> None:
        index = call.get("index", pos)
        fn = call.get("function") or {}
        state = self.calls.get(index)
        if state is None:
            self._close_text(out)
            state = _Call(len(self.output), str(call.get("id") or new_id("call")),
                          str(fn.get("name") or ""))
            self.calls[index] = state
            self.output.append(None)
            out.append(self._event(
                "response.output_item.added", output_index=state.index,
                item=function_call_item(state.item_id, state.call_id, state.name, "",
                                        "in_progress")))
        elif fn.get("name") and not state.name:
            state.name = str(fn["name"])
        piece = fn.get("arguments")
        if isinstance(piece, str) and piece:
            state.arguments.append(piece)
            out.append(self._event("response.function_call_arguments.delta",
                                   item_id=state.item_id, output_index=state.index,
                                   delta=piece))

    def _close_all(self, out: list[Event]) -> None:
        self._close_text(out)
        for state in sorted(self.calls.values(), key=lambda c: c.index):
            if self.output[state.index] is not None:
                continue
            arguments = "".join(state.arguments)
            out.append(self._event("response.function_call_arguments.done",
                                   item_id=state.item_id, output_index=state.index,
                                   name=state.name, arguments=arguments))
            item = function_call_item(state.item_id, state.call_id, state.name, arguments,
                                      "completed")
            self.output[state.index] = item
            out.append(self._event("response.output_item.done", output_index=state.index,
                                   item=item))


def _part(kind: str, text: str) -> dict[str, Any]:
    return {"type": "refusal", "refusal": text} if kind == "refusal" else text_part(text)


def _item_text(item: Mapping[str, Any]) -> str:
    if item.get("type") == "function_call":
        return str(item.get("name") or "") + str(item.get("arguments") or "")
    parts = item.get("content") or item.get("summary") or ()
    return "".join(str(p.get("text") or p.get("refusal") or "") for p in parts
                   if isinstance(p, Mapping))


def _prompt_text(body: Mapping[str, Any]) -> str:
    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    raw = body.get("input")
    if isinstance(raw, str):
        texts.append(raw)
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping):
                texts.append(_item_text(item) or str(item.get("output") or ""))
    return "\n".join(texts)
