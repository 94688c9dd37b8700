"""Maximal OpenAI bodies: every field of each endpoint's request (and answer), with a given
text `v` in every place that carries text, for the walker's completeness test and the
end-to-end bypass table. URLs carry `v` the way a client would put it there: percent-encoded
in a query, base64 in a `data:` URL."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote


def data_url(v: str, media_type: str = "text/plain") -> str:
    return f"data:{media_type};base64,{base64.b64encode(v.encode()).decode()}"


def _schema(v: str) -> dict[str, Any]:
    return {"type": "object", "description": v, "title": v,
            "properties": {"q": {"type": "string", "description": v, "enum": [v],
                                 "examples": [v], "default": v, "pattern": v}},
            "required": ["q"], "additionalProperties": False}


def chat_request(v: str, *, model: str = "echo", template: bool = False) -> dict[str, Any]:
    args = json.dumps({"q": v}, ensure_ascii=False)
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "developer", "content": v, "name": v},
            {"role": "system", "content": [{"type": "text", "text": v}]},
            {"role": "user", "name": v, "content": [
                {"type": "text", "text": v},
                {"type": "image_url", "image_url": {
                    "url": f"https://img.example.com/a.png?who={quote(v)}", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": data_url(v)}},
                {"type": "image_url", "image_url": {"url": data_url("\x89PNG", "image/png")}},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                {"type": "file", "file": {"file_data": data_url(v), "filename": v,
                                          "file_id": "file-abc123"}},
            ]},
            {"role": "assistant", "content": v, "refusal": v, "name": v,
             "audio": {"id": "audio_abc123"},
             "tool_calls": [{"id": "call_abc123", "type": "function",
                             "function": {"name": "lookup", "arguments": args}}],
             "function_call": {"name": "lookup", "arguments": args}},
            {"role": "assistant", "content": [{"type": "text", "text": v},
                                              {"type": "refusal", "refusal": v}]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": v},
            {"role": "function", "name": v, "content": v},
            {"role": "user", "content": v},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": v,
                                                    "parameters": _schema(v), "strict": True}}],
        "functions": [{"name": "lookup", "description": v, "parameters": _schema(v)}],
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "function_call": "auto",
        "parallel_tool_calls": True,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "description": v, "schema": _schema(v), "strict": True}},
        "prediction": {"type": "content", "content": v},
        "metadata": {"ticket": v},
        "user": v,
        "safety_identifier": v,
        "prompt_cache_key": v,
        "stop": [v],
        "logit_bias": {"50256": -100},
        "seed": 7, "temperature": 0.5, "top_p": 1, "n": 1, "max_tokens": 64,
        "max_completion_tokens": 64, "presence_penalty": 0, "frequency_penalty": 0,
        "logprobs": True, "top_logprobs": 2, "store": False,
        "reasoning_effort": "low", "service_tier": "auto", "verbosity": "low",
        "modalities": ["text"], "audio": {"voice": "alloy", "format": "wav"},
        "web_search_options": {"search_context_size": "low", "user_location": {
            "type": "approximate", "approximate": {"city": v, "region": v, "country": v,
                                                   "timezone": v}}},
        "stream": False, "stream_options": {"include_usage": True},
    }
    if template:
        body["template"] = {"name": "support", "label": "production",
                            "variables": {"customer": v, "notes": [v, {"more": v}]}}
    return body


def completion_request(v: str, *, model: str = "echo-text") -> dict[str, Any]:
    return {"model": model, "prompt": [v, v], "suffix": v, "user": v, "stop": v,
            "echo": False, "best_of": 1, "logprobs": 1, "max_tokens": 64, "n": 1, "seed": 7,
            "temperature": 0.5, "logit_bias": {"50256": -100}, "metadata": {"ticket": v}}


def embedding_request(v: str, *, model: str = "embed") -> dict[str, Any]:
    return {"model": model, "input": [v, v], "user": v, "encoding_format": "float",
            "dimensions": 8}


def responses_request(v: str, *, model: str = "echo-responses") -> dict[str, Any]:
    args = json.dumps({"q": v}, ensure_ascii=False)
    return {
        "model": model,
        "instructions": v,
        "input": [
            {"role": "developer", "content": v},
            {"type": "message", "role": "user", "id": "msg_abc123", "status": "completed",
             "content": [
                 {"type": "input_text", "text": v},
                 {"type": "input_image", "detail": "low",
                  "image_url": f"https://img.example.com/a.png?who={quote(v)}"},
                 {"type": "input_image", "image_url": data_url(v)},
                 {"type": "input_image", "file_id": "file-abc123", "detail": "auto"},
                 {"type": "input_file", "file_data": data_url(v), "filename": v},
                 {"type": "input_file",
                  "file_url": f"https://files.example.com/d.pdf?who={quote(v)}"}]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": v, "annotations": []},
                         {"type": "refusal", "refusal": v}]},
            {"type": "function_call", "id": "fc_abc123", "call_id": "call_abc123",
             "name": "lookup", "arguments": args, "status": "completed"},
            {"type": "function_call_output", "call_id": "call_abc123", "output": v},
            {"type": "function_call_output", "call_id": "call_abc124",
             "output": [{"type": "input_text", "text": v}]},
            {"type": "reasoning", "id": "rs_abc123", "encrypted_content": "gAAAAB0123",
             "summary": [{"type": "summary_text", "text": v}]},
        ],
        "tools": [{"type": "function", "name": "lookup", "description": v,
                   "parameters": _schema(v), "strict": True}],
        "tool_choice": {"type": "function", "name": "lookup"},
        "text": {"format": {"type": "json_schema", "name": "answer", "description": v,
                            "schema": _schema(v), "strict": True}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"},
        "metadata": {"ticket": v}, "user": v, "safety_identifier": v, "prompt_cache_key": v,
        "previous_response_id": "resp_abc123", "include": ["reasoning.encrypted_content"],
        "truncation": "disabled", "max_output_tokens": 64, "temperature": 0.5, "top_p": 1,
        "store": False, "parallel_tool_calls": True, "stream": False,
    }


def messages_request(v: str, *, model: str = "claude") -> dict[str, Any]:
    """Anthropic Messages: every block type the walker knows, text `v` in each text place;
    thinking carries `v` too (signed: listed as not text, so never rewritten)."""
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    cache = {"type": "ephemeral", "ttl": "5m"}
    return {
        "model": model, "max_tokens": 64,
        "system": [{"type": "text", "text": v, "cache_control": cache}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": v, "cache_control": cache},
                {"type": "image", "source": image},
                {"type": "image", "source": {"type": "url",
                                             "url": f"https://img.example.com/a.png?w={quote(v)}"}},
                {"type": "document", "source": {"type": "base64", "media_type":
                                                "application/pdf", "data": "JVBERi0="},
                 "title": v, "context": v, "citations": {"enabled": True}},
                {"type": "document", "source": {"type": "file", "file_id": "file_01A"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": v, "signature": "EqQBCkYIAx"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"},
                {"type": "text", "text": v, "citations": [
                    {"type": "char_location", "cited_text": v, "document_index": 0,
                     "document_title": v, "start_char_index": 0, "end_char_index": 3}]},
                {"type": "tool_use", "id": "toolu_01A", "name": "lookup", "input": {"q": v}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "is_error": False,
                 "content": [{"type": "text", "text": v, "cache_control": cache},
                             {"type": "image", "source": image},
                             {"type": "image", "source": {
                                 "type": "url", "url": f"https://x.example.com/?q={quote(v)}"}}]},
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": v}]},
            {"role": "user", "content": v},
        ],
        "tools": [{"name": "lookup", "description": v, "input_schema": _schema(v),
                   "cache_control": cache},
                  {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],
        "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "metadata": {"user_id": v}, "stop_sequences": [v], "service_tier": "auto",
        "temperature": 0.5, "top_p": 1, "top_k": 5, "stream": False,
    }


REQUESTS = {"chat": chat_request, "completions": completion_request,
            "embeddings": embedding_request, "responses": responses_request,
            "messages": messages_request}


def chat_response(v: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc123", "object": "chat.completion", "created": 1700000000,
        "model": "echo", "system_fingerprint": "fp_abc123", "service_tier": "default",
        "choices": [{
            "index": 0, "finish_reason": "tool_calls",
            "message": {
                "role": "assistant", "content": v, "refusal": v,
                "tool_calls": [{"id": "call_abc123", "type": "function",
                                "function": {"name": "lookup",
                                             "arguments": json.dumps({"q": v})}}],
                "function_call": {"name": "lookup", "arguments": json.dumps({"q": v})},
                "audio": {"id": "audio_abc123", "data": "UklGRg==", "transcript": v,
                          "expires_at": 1700000000},
                "annotations": [{"type": "url_citation", "url_citation": {
                    "url": f"https://example.com/?q={quote(v)}", "title": v,
                    "start_index": 0, "end_index": 3}}]},
            "logprobs": {"content": [{"token": v, "logprob": -0.1, "bytes": [98],
                                      "top_logprobs": [{"token": v, "logprob": -0.1,
                                                        "bytes": [98]}]}]},
        }],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7,
                  "completion_tokens_details": {"reasoning_tokens": 0}},
    }


def completion_response(v: str) -> dict[str, Any]:
    return {"id": "cmpl-abc123", "object": "text_completion", "created": 1700000000,
            "model": "echo-text", "system_fingerprint": "fp_abc123",
            "choices": [{"index": 0, "text": v, "finish_reason": "stop",
                         "logprobs": {"tokens": [v], "token_logprobs": [-0.1],
                                      "top_logprobs": [{v: -0.1}], "text_offset": [0]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def embedding_response(v: str) -> dict[str, Any]:
    return {"object": "list", "model": "embed",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                     {"object": "embedding", "index": 1, "embedding": "AAAAAA=="}],
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}


def responses_response(v: str) -> dict[str, Any]:
    return {
        "id": "resp_abc123", "object": "response", "created_at": 1700000000,
        "completed_at": 1700000001, "status": "incomplete", "model": "echo-responses",
        "incomplete_details": {"reason": "max_output_tokens"},
        "error": {"code": "server_error", "message": v},
        "output": [
            {"id": "rs_abc123", "type": "reasoning", "encrypted_content": "gAAAAB0123",
             "summary": [{"type": "summary_text", "text": v}]},
            {"id": "msg_abc123", "type": "message", "status": "incomplete", "role": "assistant",
             "content": [{"type": "output_text", "text": v, "logprobs": [], "annotations": [
                 {"type": "url_citation", "url": f"https://example.com/?q={quote(v)}",
                  "title": v, "start_index": 0, "end_index": 3}]},
                 {"type": "refusal", "refusal": v}]},
            {"id": "fc_abc123", "type": "function_call", "status": "completed",
             "call_id": "call_abc123", "name": "lookup", "arguments": json.dumps({"q": v})},
        ],
        "instructions": v, "tools": [{"type": "function", "name": "lookup", "description": v,
                                      "parameters": _schema(v), "strict": True}],
        "tool_choice": "auto", "parallel_tool_calls": True, "truncation": "disabled",
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": _schema(v)},
                 "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": "auto"}, "previous_response_id": "resp_x1",
        "metadata": {"ticket": v}, "user": v, "store": True, "background": False,
        "temperature": 1.0, "top_p": 1.0, "service_tier": "default",
        "usage": {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 1},
                  "total_tokens": 7},
    }



def messages_response(v: str) -> dict[str, Any]:
    return {"id": "msg_01A", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": v, "signature": "EqQBCkYIAx"},
                        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3"},
                        {"type": "text", "text": v, "citations": [
                            {"type": "char_location", "cited_text": v, "document_index": 0,
                             "document_title": v, "start_char_index": 0,
                             "end_char_index": 3}]},
                        {"type": "tool_use", "id": "toolu_01A", "name": "lookup",
                         "input": {"q": v}}],
            "stop_reason": "tool_use", "stop_sequence": v, "container": {"id": "c1"},
            "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 0,
                      "service_tier": "standard"}}


RESPONSES = {"chat": chat_response, "completions": completion_response,
             "embeddings": embedding_response, "responses": responses_response,
             "messages": messages_response}
